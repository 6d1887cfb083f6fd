"""The runner end to end through the real CLI: records, summary, resume after a kill, errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
GSM8K_DATA = [f"task.data_files.test={FIXTURES / 'gsm8k_test.jsonl'}",
              f"task.data_files.train={FIXTURES / 'gsm8k_train.jsonl'}"]


def cli(*overrides, out_dir=None):
    args = [sys.executable, "-m", "boe_bench", *overrides, "progress=false"]
    if out_dir is not None:
        args.append(f"out_dir={out_dir}")
    return args


def env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_cli(*overrides, out_dir=None, check=True, cwd=ROOT):
    result = subprocess.run(cli(*overrides, out_dir=out_dir), capture_output=True, text=True, cwd=cwd, env=env(),
                            timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def records(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "examples.jsonl").read_text().splitlines()]


JOB = ["model=tiny", "task=gsm8k", "sampler=confidence", "gen_length=32", "steps=32", "block_length=16", *GSM8K_DATA]


def test_run_writes_records_and_summary(tmp_path):
    run_cli(*JOB, "limit=3", "batch_size=2", out_dir=tmp_path)
    rows = records(tmp_path)
    assert [r["id"] for r in rows] == ["gsm8k-0", "gsm8k-1", "gsm8k-2"]
    for row in rows:
        assert row["accounting"]["nfe"] <= 32 and row["accounting"]["wall_s"] > 0
        assert set(row["metrics"]) == {"exact_match_strict", "exact_match_flexible"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n"] == 3 and summary["primary_metric"] == "exact_match_flexible"
    assert summary["mean_nfe"] == sum(r["accounting"]["nfe"] for r in rows) / 3
    assert summary["config"]["sampler"]["_target_"].endswith("ConfidenceSampler")
    assert summary["environment"]["torch"]


def test_killed_run_resumes_without_duplicates_or_losses(tmp_path):
    limit = 8
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(cli(*JOB, f"limit={limit}", out_dir=killed_dir), cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    examples = killed_dir / "examples.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if examples.exists() and len(examples.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(examples.read_text().splitlines())
    assert 2 <= done_at_kill < limit, "the job finished before it could be killed halfway"
    with examples.open("a") as f:  # a record torn by the kill mid-write
        f.write('{"id": "gsm8k-7", "completion": "cut off')

    run_cli(*JOB, f"limit={limit}", out_dir=killed_dir)
    run_cli(*JOB, f"limit={limit}", out_dir=clean_dir)
    lines = examples.read_text().splitlines()
    assert not any("cut off" in line for line in lines)  # the torn line is dropped on resume
    resumed = [json.loads(line) for line in lines]  # every line is a record again
    ids = [r["id"] for r in resumed]
    assert sorted(ids) == sorted(f"gsm8k-{i}" for i in range(limit))
    assert len(ids) == len(set(ids))
    clean = {r["id"]: r["completion"] for r in records(clean_dir)}
    assert {r["id"]: r["completion"] for r in resumed} == clean
    assert json.loads((killed_dir / "summary.json").read_text())["n"] == limit


def test_rerun_of_finished_job_is_a_no_op_and_larger_limit_extends(tmp_path):
    first = run_cli(*JOB, "limit=2", out_dir=tmp_path)
    assert "already complete" not in first.stdout
    before = (tmp_path / "examples.jsonl").read_text()
    again = run_cli(*JOB, "limit=2", out_dir=tmp_path)
    assert (tmp_path / "examples.jsonl").read_text() == before
    # Issue 24: the no-op said wall=<the original run's time> as if it had just run.
    original = json.loads((tmp_path / "summary.json").read_text())["job_wall_s"]
    assert "gsm8k: already complete (n=2), nothing to do;" in again.stdout, again.stdout
    assert f"original run's wall={original:.1f}s" in again.stdout and again.stdout.count("wall=") == 1
    assert "already_complete" not in json.loads((tmp_path / "summary.json").read_text())
    run_cli(*JOB, "limit=3", out_dir=tmp_path)
    assert [r["id"] for r in records(tmp_path)] == ["gsm8k-0", "gsm8k-1", "gsm8k-2"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["gen_length=100", "block_length=32"], "not divisible by block_length"),
        (["gen_length=64", "steps=3", "block_length=32"], "not divisible by the number of blocks"),
        (["task.data_files.test=/nonexistent/test.jsonl"], "does not exist"),
        (["sampler.temperature=-1"], "temperature must be >= 0"),
        (["limit=0"], "limit must be a positive"),
    ],
)
def test_bad_inputs_fail_with_one_sentence(tmp_path, overrides, message):
    base = [o for o in JOB if not any(o.split("=")[0] == x.split("=")[0] for x in overrides)]
    result = run_cli(*base, *overrides, out_dir=tmp_path, check=False)
    assert_one_sentence(result, message)
    assert not (tmp_path / "run_config.json").exists()


def assert_one_sentence(result, message):
    """Exit 2 and a single ``error: ...`` line on stderr (the README's promise)."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr[-2000:]
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr


def test_unknown_config_option_names_the_alternatives(tmp_path):
    result = run_cli(*JOB, "sampler=nonexistent", out_dir=tmp_path, check=False)
    assert_one_sentence(result, "unknown sampler 'nonexistent'; known: boe,")
    assert "confidence" in result.stderr


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["no_such_option=1"], "unknown option 'no_such_option'"),
        (["sampler.no_such_option=1"], "unknown option 'sampler.no_such_option'"),
        (["task=no_such_task"], "unknown task 'no_such_task'; known:"),
        (["model=no_such_model"], "unknown model 'no_such_model'; known:"),
        (["gen_length=abc"], "gen_length must be an integer or null, got 'abc'"),
        (["batch_size=0"], "batch_size must be >= 1"),
        (["gen_length=[1"], "cannot parse the command line"),
    ],
)
def test_bad_command_lines_fail_with_one_sentence_and_exit_2(tmp_path, overrides, message):
    result = run_cli(*JOB, *overrides, out_dir=tmp_path / "run", check=False)
    assert_one_sentence(result, message)


def test_out_dir_that_is_a_file_is_one_sentence(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    result = run_cli(*JOB, out_dir=blocker, check=False)
    assert_one_sentence(result, "is a file")
    assert blocker.read_text() == "not a directory"


def write_gsm8k(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


def gsm8k_rows(n):
    return [json.loads(line) for line in (FIXTURES / "gsm8k_test.jsonl").read_text().splitlines()[:n]]


def test_malformed_data_file_names_the_file_and_line(tmp_path):
    rows = gsm8k_rows(3)
    data = write_gsm8k(tmp_path / "bad.jsonl", [rows[0], '{"question": "cut', rows[2]])
    result = run_cli(*[o for o in JOB if "data_files.test" not in o], f"task.data_files.test={data}",
                     out_dir=tmp_path / "run", check=False)
    assert_one_sentence(result, f"data file '{data}' line 2 is not valid JSON")


def test_data_row_missing_a_field_is_refused_before_generating(tmp_path):
    rows = gsm8k_rows(4)
    del rows[2]["question"]
    data = write_gsm8k(tmp_path / "rows.jsonl", rows)
    result = run_cli(*[o for o in JOB if "data_files.test" not in o], f"task.data_files.test={data}",
                     "limit=4", out_dir=tmp_path / "run", check=False)
    assert_one_sentence(result, "document 'gsm8k-2' (row 3) lacks the field(s) 'question'")
    assert not (tmp_path / "run" / "examples.jsonl").exists()  # nothing was generated first


CHECK_WITHOUT_TORCH = """
import sys
from hydra import compose, initialize_config_dir
from boe_bench.errors import ConfigError
from boe_bench.runner import run
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    cfg = compose(config_name="config", overrides=sys.argv[2:])
try:
    run(cfg)
except ConfigError as err:
    print("refused:", err, "| torch imported:", "torch" in sys.modules)
"""


@pytest.mark.parametrize("bad", ["task.data_files.test=/nonexistent/test.jsonl", "gen_length=abc", "MALFORMED"])
def test_data_and_setting_errors_speak_before_torch_is_imported(tmp_path, bad):
    if bad == "MALFORMED":
        bad = f"task.data_files.test={write_gsm8k(tmp_path / 'bad.jsonl', ['{oops'])}"
    overrides = [o for o in JOB if o.split("=")[0] != bad.split("=")[0]]
    result = subprocess.run([sys.executable, "-c", CHECK_WITHOUT_TORCH, str(ROOT / "configs"), *overrides, bad,
                             f"out_dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=ROOT, env=env(),
                            timeout=300)
    assert "refused:" in result.stdout and "torch imported: False" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("bad, says", [
    (["gen_length=100", "block_length=32"], "gen_length=100 is not divisible by block_length=32"),
    (["steps=7"], "steps=7 is not divisible by the number of blocks"),
    (["sampler=boe", "sampler.rho=1.5"], "boe rho must be in (0, 1], got 1.5"),
    (["sampler=remdm", "sampler.nucleus_p=0"], "nucleus_p must be in (0, 1]"),
    (["sampler=fast_dllm", "sampler.threshold=2"], "fast_dllm threshold must be in (0, 1]"),
    (["sampler=boe", "sampler.rho=abc"], "sampler options of the wrong type"),
])
def test_schedule_and_sampler_options_are_refused_before_torch_and_before_data(tmp_path, bad, says):
    """Issue 24: a bad schedule was reported after the hub error about the data (data files
    absent here on purpose: the schedule speaks first), and sampler options only after the
    model had loaded. Both are now refused from the config, with torch not yet imported."""
    overrides = ["model=tiny", "task=gsm8k", "sampler=confidence", "gen_length=32", "steps=32", "block_length=16",
                 "task.data_files.test=/nonexistent/test.jsonl"]
    keys = {b.split("=")[0] for b in bad}
    overrides = [o for o in overrides if o.split("=")[0] not in keys]
    if "steps" in keys:  # 256 tokens in blocks of 32: 8 blocks
        overrides = [o for o in overrides if o.split("=")[0] not in ("gen_length", "block_length")]
    result = subprocess.run([sys.executable, "-c", CHECK_WITHOUT_TORCH, str(ROOT / "configs"), *overrides, *bad,
                             f"out_dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=ROOT, env=env(),
                            timeout=300)
    assert f"refused: {says}" in result.stdout or (says in result.stdout and "refused:" in result.stdout), \
        result.stdout + result.stderr
    assert "torch imported: False" in result.stdout, result.stdout
    assert "does not exist" not in result.stdout  # the data was not looked at first


def test_the_sampler_checks_cover_every_sampler_config():
    """Each configs/sampler/*.yaml builds a class the pre-torch checks know, with options they
    accept as the class does (its own config passes both)."""
    from omegaconf import OmegaConf

    from boe_bench.samplers.options import CHECKS, check_sampler_config

    for path in sorted((ROOT / "configs" / "sampler").glob("*.yaml")):
        node = OmegaConf.load(path)
        if "defaults" in node:  # a variant (boe_rho010...) of a base config
            node = OmegaConf.merge(OmegaConf.load(path.parent / f"{node.defaults[0]}.yaml"),
                                   OmegaConf.masked_copy(node, [k for k in node if k != "defaults"]))
        target = node._target_
        if target.endswith(("fb.ForwardBackwardSampler", "remdm_llada.ReMDMLLaDASampler", "sedd.SEDDAnalyticSampler")):
            continue  # no option to check before the model
        assert target in CHECKS, path.name
        check_sampler_config(node)


def test_a_refused_command_does_not_block_its_fix(tmp_path):
    """Issue 17.1: a refused job left run_config.json behind, so the corrected command in the
    same out_dir was refused as 'a different configuration' though no record existed."""
    missing = [o for o in JOB if "data_files.test" not in o] + ["task.data_files.test=/nonexistent/test.jsonl"]
    assert run_cli(*missing, "limit=1", out_dir=tmp_path, check=False).returncode == 2
    assert not (tmp_path / "run_config.json").exists()
    refused_sampler = run_cli(*JOB, "sampler=boe", "sampler.rho=0", "limit=1", out_dir=tmp_path, check=False)
    assert_one_sentence(refused_sampler, "rho must be in (0, 1]")
    assert not (tmp_path / "run_config.json").exists()
    # A run_config without records (left by an older version) protects nothing either.
    (tmp_path / "run_config.json").write_text(json.dumps({"seed": 1}))
    run_cli(*JOB, "limit=1", out_dir=tmp_path)
    assert json.loads((tmp_path / "run_config.json").read_text())["seed"] == 1234
    assert len(records(tmp_path)) == 1


def test_every_result_changing_option_changes_the_config_hash():
    from hydra import compose, initialize_config_dir

    from boe_bench.runner import config_hash

    def digest(*overrides):
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            return config_hash(compose(config_name="config", overrides=list(overrides)))

    base = digest()
    for changed in ["sampler.temperature=0.5", "task.empty_cells=40", "batch_size=3", "seed=1", "steps=35",
                    "sampler=random", "model.path=/elsewhere"]:
        assert digest(changed) != base, changed
    for same in ["limit=5", "progress=false", "shard.index=1", "shard.count=2", "out_dir=/tmp/x", "wandb.enabled=true"]:
        assert digest(same) == base, same


def sweep_env():
    return {**env(), "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_a_sweep_over_an_option_outside_the_path_runs_every_cell_and_resumes(tmp_path):
    """Issue 17.2: `-m task.empty_cells=40,50` wrote both cells into one directory and refused
    the second. Each cell now gets its own directory (the config hash), and re-running the
    sweep finds and skips both."""
    sweep = [sys.executable, "-m", "boe_bench", "-m", "task.empty_cells=4,5", "limit=1", "progress=false",
             f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    result = subprocess.run(sweep, capture_output=True, text=True, cwd=tmp_path, env=sweep_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted((tmp_path / "runs/sudoku_grid/puzzle_mdm/confidence").glob("Lauto-sauto-bauto-seed1234-*"))
    assert len(runs) == 2
    summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
    assert sorted(s["config"]["task"]["empty_cells"] for s in summaries) == [4, 5]
    assert sorted(s["mean_nfe"] for s in summaries) == [4.0, 5.0]
    stamps = [(run / "summary.json").stat().st_mtime_ns for run in runs]
    again = subprocess.run(sweep, capture_output=True, text=True, cwd=tmp_path, env=sweep_env(), timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [(run / "summary.json").stat().st_mtime_ns for run in runs] == stamps  # found, finished, skipped
    assert again.stdout.count("already complete (n=1), nothing to do") == 2, again.stdout


@pytest.mark.parametrize("torn", ["summary.json", "run_config.json"])
def test_a_torn_json_file_does_not_block_the_rerun(tmp_path, torn):
    """Issue 17.3: a summary or run_config cut off by a kill made every re-run crash."""
    run_cli(*JOB, "limit=2", out_dir=tmp_path)
    path = tmp_path / torn
    path.write_text(path.read_text()[: len(path.read_text()) // 2])
    result = run_cli(*JOB, "limit=2", out_dir=tmp_path)
    assert "Traceback" not in result.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["n"] == 2
    assert json.loads((tmp_path / "run_config.json").read_text())["seed"] == 1234


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    from boe_bench import runner

    path = tmp_path / "summary.json"
    runner.write_atomic(path, '{"n": 1}')

    def killed(*args):
        raise KeyboardInterrupt  # the moment between writing the new content and the rename

    monkeypatch.setattr(runner.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.write_atomic(path, '{"n": 2, "cut')
    assert json.loads(path.read_text()) == {"n": 1}


def test_job_wall_adds_up_every_session(tmp_path):
    """Issue 17.4: after a resume, job_wall_s covered the last session only."""
    run_cli(*JOB, "limit=3", out_dir=tmp_path)
    first = json.loads((tmp_path / "summary.json").read_text())
    earlier = sum(r["job_wall_s"] for r in records(tmp_path))
    assert first["generation_wall_s"] <= earlier <= first["job_wall_s"]
    run_cli(*JOB, "limit=4", out_dir=tmp_path)
    second = json.loads((tmp_path / "summary.json").read_text())
    newest = records(tmp_path)[-1]
    assert second["job_wall_s"] >= earlier + newest["job_wall_s"]
    assert second["job_wall_s"] > first["job_wall_s"]
    assert second["session_wall_s"] < second["job_wall_s"]  # the last session's own time, beside it


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_says_how_to_resume(tmp_path, signum, code):
    # A suite started in the background (`cmd &`) runs with SIGINT ignored, which the child
    # would inherit (Python then installs no KeyboardInterrupt handler): give it the default
    # disposition a user's terminal gives it.
    proc = subprocess.Popen(cli(*JOB, "limit=40", out_dir=tmp_path), cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    examples = tmp_path / "examples.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (examples.exists() and examples.read_text()):
        time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    assert stderr.strip() == "interrupted; re-run the same command to resume"
    assert all(json.loads(line)["id"] for line in examples.read_text().splitlines())


def test_unreachable_hub_fails_fast_in_one_sentence(tmp_path):
    """Issue 17.12: without HF_HUB_OFFLINE an unreachable hub was retried for 40-60 s, with
    warnings, before the error. A quick connection check switches the HF libraries offline."""
    no_hub = {k: v for k, v in env().items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    no_hub.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))  # nothing listens on port 9
    no_hub = {k: v for k, v in no_hub.items() if "proxy" not in k.lower()}
    started = time.time()
    result = subprocess.run(cli("model=tiny", "task=gsm8k", "limit=1", out_dir=tmp_path / "run"),
                            capture_output=True, text=True, cwd=ROOT, env=no_hub, timeout=300)
    assert_one_sentence(result, "pass task.data_files=")
    assert time.time() - started < 120


def test_hub_check_switches_offline_only_when_unreachable(monkeypatch):
    from boe_bench import runner

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert runner.offline_if_hub_unreachable()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert not runner.offline_if_hub_unreachable()  # already offline: nothing to check


def test_changed_config_in_same_out_dir_is_refused(tmp_path):
    run_cli(*JOB, "limit=1", out_dir=tmp_path)
    result = run_cli(*[o for o in JOB if not o.startswith("steps")], "steps=16", "limit=1", out_dir=tmp_path,
                     check=False)
    assert result.returncode != 0 and "different configuration" in result.stderr


def test_a_refused_command_leaves_no_run_directory(tmp_path):
    """A refused job left Hydra's .hydra/ and an empty log in its run directory (a hashed
    directory of its own under runs/), which looked like a run that had started. Where the
    user named the out_dir it stays, empty; one that holds anything else is not touched."""
    refused = [*JOB, "sampler.temperature=-1"]
    assert_one_sentence(run_cli(*refused, check=False, cwd=tmp_path), "temperature must be >= 0")
    assert list(tmp_path.iterdir()) == []
    named = tmp_path / "named"
    assert_one_sentence(run_cli(*refused, out_dir=named, check=False), "temperature must be >= 0")
    assert named.is_dir() and list(named.iterdir()) == []
    (named / "notes.txt").write_text("mine")
    assert_one_sentence(run_cli(*refused, out_dir=named, check=False), "temperature must be >= 0")
    assert (named / "notes.txt").read_text() == "mine" and (named / ".hydra" / "config.yaml").exists()
