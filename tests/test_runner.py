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


def run_cli(*overrides, out_dir=None, check=True):
    result = subprocess.run(cli(*overrides, out_dir=out_dir), capture_output=True, text=True, cwd=ROOT, env=env(),
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
    assert lines[done_at_kill].endswith("cut off")  # the torn line is left alone, not built upon
    resumed = [json.loads(line) for i, line in enumerate(lines) if i != done_at_kill]
    ids = [r["id"] for r in resumed]
    assert sorted(ids) == sorted(f"gsm8k-{i}" for i in range(limit))
    assert len(ids) == len(set(ids))
    clean = {r["id"]: r["completion"] for r in records(clean_dir)}
    assert {r["id"]: r["completion"] for r in resumed} == clean
    assert json.loads((killed_dir / "summary.json").read_text())["n"] == limit


def test_rerun_of_finished_job_is_a_no_op_and_larger_limit_extends(tmp_path):
    run_cli(*JOB, "limit=2", out_dir=tmp_path)
    before = (tmp_path / "examples.jsonl").read_text()
    run_cli(*JOB, "limit=2", out_dir=tmp_path)
    assert (tmp_path / "examples.jsonl").read_text() == before
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
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_config_option_names_the_alternatives(tmp_path):
    result = run_cli(*JOB, "sampler=nonexistent", out_dir=tmp_path, check=False)
    assert result.returncode != 0
    assert "nonexistent" in result.stderr and "confidence" in result.stderr
    assert "Traceback" not in result.stderr


def test_changed_config_in_same_out_dir_is_refused(tmp_path):
    run_cli(*JOB, "limit=1", out_dir=tmp_path)
    result = run_cli(*[o for o in JOB if not o.startswith("steps")], "steps=16", "limit=1", out_dir=tmp_path,
                     check=False)
    assert result.returncode != 0 and "different configuration" in result.stderr
