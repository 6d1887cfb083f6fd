"""Experiment logic lives in the package (boe_bench.experiments) and writes where it is told:
reports/ by default, the committed results/ only on request. The diagnostics sweep, moved out
of scripts/, rebuilds the committed tables from the committed inputs byte for byte."""
from pathlib import Path

import pandas as pd

from boe_bench.experiments import diagnostics_sweep

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "diagnostics"


def test_diagnostics_sweep_rebuilds_the_committed_tables(tmp_path):
    diagnostics_sweep.report(pd.read_csv(COMMITTED / "sweep.csv"), tmp_path)
    assert (tmp_path / "sweep.md").read_text() == (COMMITTED / "sweep.md").read_text()
    assert (tmp_path / "sweep.png").stat().st_size > 0
    diagnostics_sweep.diagnostics_table(tmp_path, COMMITTED)
    assert (tmp_path / "diagnostics.md").read_text() == (COMMITTED / "diagnostics.md").read_text()


def test_diagnostics_sweep_writes_reports_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    diagnostics_sweep.main(["--report-only", "--diagnose-root", str(COMMITTED)])
    assert (tmp_path / "reports" / "diagnostics" / "diagnostics.md").exists()
    assert not (tmp_path / "results").exists()
