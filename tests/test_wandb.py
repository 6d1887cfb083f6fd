"""W&B mirror, offline: a run logs config, summary and its per-example table; the report pushes
its tables and Pareto plots. Local files stay the source of truth."""
import json

import pytest

pytest.importorskip("wandb", reason="wandb is optional: pip install 'boe_bench[wandb]'")

from test_dispatch import run_job  # noqa: E402  (same tiny GSM8K job)
from test_report import write_summary  # noqa: E402


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))


def offline_runs(directory):
    return sorted((directory / "wandb").glob("offline-run-*"))


def test_a_run_mirrors_its_summary_and_examples_offline(tmp_path):
    summary = run_job(tmp_path / "run", "wandb.enabled=true", "wandb.group=table5")
    runs = offline_runs(tmp_path / "run")
    assert len(runs) == 1
    tables = list(runs[0].glob("files/media/table/examples_*.table.json"))
    assert tables, list(runs[0].rglob("*"))
    logged = json.loads(tables[0].read_text())
    assert len(logged["data"]) == summary["n"] == 5
    assert [row[0] for row in logged["data"]] == [json.loads(line)["id"] for line in
                                                    (tmp_path / "run" / "examples.jsonl").read_text().splitlines()]
    assert (tmp_path / "run" / "summary.json").exists()  # the local record is written either way


def test_the_report_pushes_tables_and_plots_offline(tmp_path):
    from boe_bench.report import report

    write_summary(tmp_path / "runs", "table5", "gsm8k", "boe", 128, 64, 0.5, 64)
    write_summary(tmp_path / "runs", "table5", "gsm8k", "confidence", 128, 64, 0.4, 64)
    destination = report("table5", tmp_path / "runs", tmp_path / "results", tmp_path / "paper", wandb_mode="offline",
                         wandb_dir=tmp_path / "wandb" / "table5")
    assert not (destination / "wandb").exists()  # issue 24: W&B's files are not results
    runs = offline_runs(tmp_path / "wandb" / "table5")
    assert len(runs) == 1
    saved = {p.name for p in runs[0].glob("files/*")}
    assert {"table.md", "table.tex", "pareto_gsm8k_tiny.png"} <= saved
