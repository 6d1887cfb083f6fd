"""Experiment logic lives in the package (boe_bench.experiments, boe_bench.train) with its settings
in configs/<module>/, and writes where it is told: reports/ by default, the committed results/
only on request. The presets are the committed runs' settings; a bad option is one sentence and
exit 2."""
import csv
from pathlib import Path

import pandas as pd
import pytest
import torch

from boe_bench.experiments import code_eval_parity, diagnostics_sweep, testbed
from boe_bench.experiments.config import load, presets

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "diagnostics"
MODULES = {"testbed": testbed, "diagnostics_sweep": diagnostics_sweep, "code_eval_parity": code_eval_parity}


def test_diagnostics_sweep_rebuilds_the_committed_tables(tmp_path):
    diagnostics_sweep.report(pd.read_csv(COMMITTED / "sweep.csv"), tmp_path)
    assert (tmp_path / "sweep.md").read_text() == (COMMITTED / "sweep.md").read_text()
    assert (tmp_path / "sweep.png").stat().st_size > 0
    diagnostics_sweep.diagnostics_table(tmp_path, COMMITTED)
    assert (tmp_path / "diagnostics.md").read_text() == (COMMITTED / "diagnostics.md").read_text()


def test_diagnostics_sweep_writes_reports_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    diagnostics_sweep.main(["report_only=true", f"diagnose_root={COMMITTED}"])
    assert (tmp_path / "reports" / "diagnostics" / "diagnostics.md").exists()
    assert not (tmp_path / "results").exists()


def test_the_sweep_presets_are_the_committed_sweep():
    """default.yaml then exact.yaml run exactly the cells of results/diagnostics/sweep.csv."""
    cells = set()
    for preset in ("default", "exact"):
        s = load("diagnostics_sweep", diagnostics_sweep.Settings, [f"--config-name={preset}"])
        labels = s.samplers + list((s.variants or {}))
        cells |= {(label, steps, puzzle_set, s.limit) for label in labels for steps in s.steps for puzzle_set in s.sets}
    committed = pd.read_csv(COMMITTED / "sweep.csv")
    assert cells == set(committed[["sampler", "steps", "puzzle_set", "n"]].itertuples(index=False, name=None))


def test_the_parity_preset_builds_the_committed_rows():
    s = load("code_eval_parity", code_eval_parity.Settings, [])
    rows = code_eval_parity.build(s.per_variant, s.timeout_variant)
    with open(ROOT / "results" / "code_eval_parity.csv") as f:
        committed = [(r["row"], r["variant"]) for r in csv.DictReader(f)]
    assert [(row, variant) for row, variant, *_ in rows] == committed


def test_testbed_runs_as_a_module_and_writes_where_it_is_told(tmp_path, monkeypatch):
    """The testbed is package code (python -m boe_bench.experiments.testbed), and by default
    writes reports/testbed, never the committed results/testbed."""
    monkeypatch.chdir(tmp_path)
    testbed.main(["samplers=[confidence,random]", "difficulties=[40]", "seeds=[0]", "puzzles=2", "batch=2",
                  "drop_puzzles=0"])
    frame = pd.read_csv(tmp_path / "reports" / "testbed" / "testbed.csv")
    assert sorted(frame["sampler"]) == ["confidence", "random"] and (frame["nfe"] == 40).all()
    assert not (tmp_path / "results").exists()
    assert "## 40 empty cells" in (tmp_path / "reports" / "testbed" / "testbed.md").read_text()


def test_the_testbed_preset_is_the_committed_run():
    s = load("testbed", testbed.Settings, [])
    committed = pd.read_csv(ROOT / "results" / "testbed" / "testbed.csv")
    assert sorted(committed["empty_cells"].unique()) == s.difficulties
    assert sorted(committed["seed"].unique()) == s.seeds
    # a solve rate over one puzzle set is a multiple of 1/puzzles
    assert ((committed["solved"] * s.puzzles).round(6) % 1 == 0).all()
    assert s.out.startswith("reports/")


@pytest.mark.parametrize("module", MODULES)
def test_every_preset_fits_its_schema(module):
    for preset in presets(module):
        load(module, MODULES[module].Settings, [f"--config-name={preset}"])


@pytest.mark.parametrize("module,argv,says", [
    ("testbed", ["puzzles=abc"], "bad value for 'puzzles'"),
    ("testbed", ["puzles=3"], "unknown option 'puzles'"),
    ("testbed", ["+puzles=3"], "unknown option 'puzles'"),
    ("testbed", ["samplers=[confidense]"], "unknown sampler 'confidense'"),
    ("testbed", ["--out", "x"], "give settings as key=value"),
    ("testbed", ["difficulties=[90]"], "empty_cells must be in [1, 81]"),
    ("diagnostics_sweep", ["--config-name=nope"], "unknown diagnostics_sweep preset 'nope'"),
    ("diagnostics_sweep", ["steps=[35"], "cannot parse the command line"),
    ("diagnostics_sweep", ["limit=0"], "limit and batch must be at least 1"),
    ("code_eval_parity", ["reference=/no/such/execute.py"], "is not a file"),
])
def test_a_bad_option_is_one_sentence_and_exit_2(module, argv, says, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        MODULES[module].main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())  # refused before writing anything


def test_the_puzzle_trainer_is_deterministic_under_a_seed(tmp_path):
    """Two tiny runs with one seed give the same weights (and the model loader reads them);
    another seed gives other weights."""
    from boe_bench.models import build_model
    from boe_bench.train import puzzle_mdm

    def train(name, seed):
        out = tmp_path / f"{name}.pt"
        puzzle_mdm.main(["--grid", "4", "--steps", "3", "--batch", "8", "--layers", "1", "--d-model", "16",
                         "--heads", "2", "--device", "cpu", "--threads", "1", "--seed", str(seed), "--out", str(out)])
        return out

    a, b, c = train("a", 0), train("b", 0), train("c", 1)
    weights = [torch.load(p, weights_only=True)["state_dict"] for p in (a, b, c)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert (tmp_path / "a.log.csv").read_text().splitlines()[0] == "step,loss,lr,elapsed_s"
    model = build_model("puzzle_mdm", path=str(a))
    assert model.shape.size == 4


def test_the_puzzle_trainer_refuses_a_bad_option(capsys):
    from boe_bench.train import puzzle_mdm

    with pytest.raises(SystemExit) as exit_:
        puzzle_mdm.main(["--steps", "0"])
    assert exit_.value.code == 2 and "--steps must be at least 1" in capsys.readouterr().err
