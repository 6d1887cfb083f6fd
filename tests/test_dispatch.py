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
