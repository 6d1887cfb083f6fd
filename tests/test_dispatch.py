"""Sharded runs merge to exactly the one-shard records; a small multirun through Hydra."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from boe_bench.errors import ConfigError
from boe_bench.merge import merge
from boe_bench.runner import run

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"
JOB = ["model=tiny", "task=gsm8k", "sampler=confidence", "limit=5", "gen_length=16", "steps=8", "block_length=16",
       "progress=false", f"task.data_files.test={FIX / 'gsm8k_test.jsonl'}",
       f"task.data_files.train={FIX / 'gsm8k_train.jsonl'}"]


def run_job(out_dir, *extra):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return run(compose(config_name="config", overrides=[*JOB, f"out_dir={out_dir}", *extra]))


def completions(path):
    return {r["id"]: (r["completion"], r["metrics"]) for r in map(json.loads, path.read_text().splitlines())}


def test_two_shards_merge_to_the_one_shard_records(tmp_path):
    whole = run_job(tmp_path / "whole")
    for index in (0, 1):
        run_job(tmp_path / "sharded", f"shard.index={index}", "shard.count=2")
    assert not (tmp_path / "sharded" / "summary.json").exists()  # written by the merge only
    assert len(list((tmp_path / "sharded").glob("examples.shard*-of-2.jsonl"))) == 2
    merged = merge(tmp_path / "sharded")
    assert completions(tmp_path / "sharded" / "examples.jsonl") == completions(tmp_path / "whole" / "examples.jsonl")
    assert merged["n"] == whole["n"] == 5 and merged["metrics"] == whole["metrics"]


def test_merge_refuses_missing_shards_and_duplicates(tmp_path):
    run_job(tmp_path, "shard.index=0", "shard.count=2")
    with pytest.raises(ConfigError, match="have not finished"):
        merge(tmp_path)
    run_job(tmp_path, "shard.index=1", "shard.count=2")
    shard = tmp_path / "examples.shard1-of-2.jsonl"
    shard.write_text(shard.read_text() + shard.read_text().splitlines()[0] + "\n")
    with pytest.raises(ConfigError, match="1 duplicated"):
        merge(tmp_path)


def test_multirun_sweeps_samplers_through_hydra(tmp_path):
    result = subprocess.run([sys.executable, "-m", "boe_bench", "-m", "sampler=confidence,entropy",
                             *[o for o in JOB if not o.startswith("sampler=")], "limit=2", f"hydra.sweep.dir={tmp_path}",
                             f"out_dir={tmp_path}/${{hydra:runtime.choices.sampler}}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for sampler in ("confidence", "entropy"):
        assert json.loads((tmp_path / sampler / "summary.json").read_text())["n"] == 2


def test_a_bad_cell_fails_alone_and_the_sweep_goes_on(tmp_path):
    """A cell whose config is refused says so in one sentence; the cells after it still run,
    and the sweep exits non-zero naming the failed cell."""
    result = subprocess.run([sys.executable, "-m", "boe_bench", "-m", "block_length=5,16",
                             *[o for o in JOB if not o.startswith("block_length=")], "limit=1",
                             f"hydra.sweep.dir={tmp_path}", f"out_dir={tmp_path}/b${{block_length}}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode != 0
    assert "error: gen_length=16 is not divisible by block_length=5" in result.stderr
    assert "'block_length=5'" in result.stderr  # Hydra names the failed cell's overrides
    assert json.loads((tmp_path / "b16" / "summary.json").read_text())["n"] == 1
    assert not (tmp_path / "b5" / "summary.json").exists()


def test_a_finished_job_is_skipped_without_loading_its_model(tmp_path, monkeypatch):
    first = run_job(tmp_path)
    stamp = (tmp_path / "summary.json").stat().st_mtime_ns
    from boe_bench import runner

    building = runner.instantiate

    def refuse_models(node, what):
        assert what != "model", "a finished job loaded its model again"
        return building(node, what)

    monkeypatch.setattr(runner, "instantiate", refuse_models)
    again = run_job(tmp_path)
    assert again.pop(runner.ALREADY_COMPLETE) is True and again == first
    assert (tmp_path / "summary.json").stat().st_mtime_ns == stamp
    # More documents than the stored summary covers: the job runs (and needs its model).
    with pytest.raises(AssertionError, match="loaded its model"):
        run_job(tmp_path, "limit=6")


GPU_SLOT_CLAIM = ("import sys; from pathlib import Path; from boe_bench.dispatch.gpuslot import claim_gpu_slot; "
                  "import os; slot = claim_gpu_slot(2, Path(sys.argv[1])); assert claim_gpu_slot(2, Path(sys.argv[1])) == slot; "
                  "print(slot, os.environ['CUDA_VISIBLE_DEVICES'], flush=True); sys.stdin.readline()")


def test_gpu_slots_are_exclusive_per_live_process(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    holders = [subprocess.Popen([sys.executable, "-c", GPU_SLOT_CLAIM, str(tmp_path)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    try:
        claimed = sorted(h.stdout.readline().split() for h in holders)
        assert claimed == [["0", "0"], ["1", "1"]]
        third = subprocess.run([sys.executable, "-c", GPU_SLOT_CLAIM, str(tmp_path)], input="\n",
                               capture_output=True, text=True, env=env, timeout=120)
        assert third.returncode != 0 and "all 2 GPU slots" in third.stderr
    finally:
        for holder in holders:
            holder.communicate("\n", timeout=60)
    # Exited workers released their locks.
    again = subprocess.run([sys.executable, "-c", GPU_SLOT_CLAIM, str(tmp_path)], input="\n",
                           capture_output=True, text=True, env=env, timeout=120)
    assert again.stdout.split() == ["0", "0"]


def test_experiment_overlay_runs_every_cell_with_the_tiny_profile_and_reports(tmp_path):
    runs = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "boe_bench", "-m", "experiment=table5", "model=tiny", "+profile=tiny", "limit=1",
         "gen_length=16", "block_length=16", "progress=false", "sampler=confidence,boe_rho025",
         f"hydra.sweep.dir={tmp_path}/multirun",
         f"out_dir={runs}/table5/${{hydra:runtime.choices.task}}/${{hydra:runtime.choices.model}}/"
         f"${{hydra:runtime.choices.sampler}}/${{run_name}}"],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    for sampler in ("confidence", "boe_rho025"):
        # The run's directory ends in its configuration hash.
        [path] = (runs / "table5/gsm8k/tiny" / sampler).glob("L16-s16-b16-seed1234-*/summary.json")
        summary = json.loads(path.read_text())
        assert summary["n"] == 1 and summary["schedule"]["steps"] == 16  # one token per step, from the overlay
        assert summary["config"]["task"]["data_files"]["test"] == "tests/fixtures/gsm8k_test.jsonl"
    from boe_bench.report import report

    markdown = (report("table5", runs, tmp_path / "results") / "table.md").read_text()
    assert "| active fraction rho=0.25 |" in markdown and "(73.7, " in markdown  # beside the paper's number
    assert "| w/o confidence gating | – |" in markdown


@pytest.mark.slow  # starts two loky workers that each import torch
def test_joblib_launcher_gives_each_worker_its_own_gpu_slot(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install hydra-joblib-launcher==1.2.0")
    result = subprocess.run([sys.executable, "-m", "boe_bench", "-m", "hydra/launcher=joblib_gpu",
                             "hydra.launcher.n_jobs=2", "gpu_slots=2", "sampler=confidence,entropy,margin",
                             *[o for o in JOB if not o.startswith("sampler=")], "limit=1", f"hydra.sweep.dir={tmp_path}",
                             f"out_dir={tmp_path}/${{hydra:runtime.choices.sampler}}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env={**__import__("os").environ, "BOE_GPU_LOCK_DIR": str(tmp_path / "locks")})
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = [json.loads((tmp_path / s / "summary.json").read_text()) for s in ("confidence", "entropy", "margin")]
    assert all(s["n"] == 1 for s in summaries)
    assert {s["environment"]["cuda_visible_devices"] for s in summaries} <= {"0", "1"}
    assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == ["gpu0.lock", "gpu1.lock"]


@pytest.mark.slow  # starts a local Ray instance (minutes on two cores)
def test_ray_launcher_runs_each_job_on_its_own_fake_gpu(tmp_path):
    """The ray_gpu preset on a local Ray instance that pretends to have two GPUs: Ray gives
    each concurrent job its own CUDA_VISIBLE_DEVICES, which the job records."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher",
                        reason="pip install 'boe_bench[ray]' (hydra-ray-launcher pins cloudpickle<3: use its own venv)")
    result = subprocess.run([sys.executable, "-m", "boe_bench", "-m", "hydra/launcher=ray_gpu",
                             "+hydra.launcher.ray.init.num_gpus=2", "+hydra.launcher.ray.init.num_cpus=2",
                             "sampler=confidence,entropy", *[o for o in JOB if not o.startswith("sampler=")], "limit=1",
                             f"hydra.sweep.dir={tmp_path}/multirun", f"out_dir={tmp_path}/${{hydra:runtime.choices.sampler}}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=900,
                            env={**__import__("os").environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = [json.loads((tmp_path / s / "summary.json").read_text()) for s in ("confidence", "entropy")]
    assert all(s["n"] == 1 for s in summaries)
    assert sorted(s["environment"]["cuda_visible_devices"] for s in summaries) == ["0", "1"]
