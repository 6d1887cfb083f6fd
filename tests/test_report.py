"""The report on synthetic summaries: layout, marks, paper numbers, missing cells, frontier."""
import json

import pandas as pd
import pytest

from boe_bench.errors import ConfigError
from boe_bench.report import pareto_front, report
from boe_bench.report.__main__ import main as report_cli

PAPER_COLUMNS = ["table", "model", "task", "gen_length", "sampler", "metric", "value", "unit", "source_note"]


def write_summary(root, experiment, task, sampler, length, steps, score, nfe, wall=36.0, model="tiny"):
    path = root / experiment / task / model / sampler / f"L{length}-s{steps}"
    path.mkdir(parents=True)
    path.joinpath("summary.json").write_text(json.dumps({
        "schedule": {"gen_length": length, "steps": steps, "block_length": 32}, "primary_metric": "accuracy",
        "score": score, "n": 4, "mean_nfe": nfe, "mean_cost_fwd_equiv": nfe * 1.5, "job_wall_s": wall,
        "generation_wall_s": wall / 2}))


def write_paper(paper_dir, experiment, rows):
    paper_dir.mkdir(exist_ok=True)
    pd.DataFrame(rows, columns=PAPER_COLUMNS).to_csv(paper_dir / f"{experiment}.csv", index=False)


def test_table5_layout_marks_paper_cells_runtime_and_missing_rows(tmp_path):
    runs, out, paper = tmp_path / "runs", tmp_path / "results", tmp_path / "paper"
    write_summary(runs, "table5", "gsm8k", "boe", 128, 64, 0.50, 64, wall=7200)
    write_summary(runs, "table5", "gsm8k", "confidence", 128, 64, 0.40, 64)
    write_summary(runs, "table5", "gsm8k", "boe_rho025", 128, 64, 0.30, 40)
    write_paper(paper, "table5", [
        ["table5", "llada_8b", "gsm8k", 128, "boe", "accuracy", 73.9, "percent", "test"],
        ["table5", "llada_8b", "gsm8k", 128, "boe", "runtime", 1.94, "hours", "test"],
        ["table5", "llada_8b", "gsm8k", 128, "boe_no_aqa", "runtime", 2.71, "hours", "test"]])
    destination = report("table5", runs, out, paper)
    markdown = (destination / "table.md").read_text()
    lines = {line.split(" | ")[0].strip("| "): line for line in markdown.splitlines() if line.startswith("| ")}
    # The experiment config's sampler order is the row order; unfinished rows show "–", not 0.
    assert [name for name in lines if name != "sampler"] == [
        "confidence", "boe", "boe_no_gate", "boe_no_anticollapse", "boe_no_aqa", "boe_rho010", "boe_rho025", "boe_rho050"]
    assert lines["boe"] == "| boe | **50.0 (73.9, -23.9)** | 64.0 | 96.0 | 2 (1.94) |"
    assert lines["confidence"] == "| confidence | <u>40.0</u> | 64.0 | 96.0 | 0.01 |"
    assert lines["boe_no_aqa"] == "| boe_no_aqa | – | – | – | – (2.71) |"
    assert lines["boe_no_gate"] == "| boe_no_gate | – | – | – | – |"
    assert "\\textbf{50.0 (73.9, -23.9)}" in (destination / "table.tex").read_text()
    assert len(pd.read_csv(destination / "runs.csv")) == 3
    assert (destination / "pareto_gsm8k_tiny.png").stat().st_size > 0
    assert (destination / "pareto_gsm8k_tiny.svg").read_text().startswith("<?xml")


def test_table2_columns_cover_the_sweep_and_paper_only_cells(tmp_path):
    runs, out, paper = tmp_path / "runs", tmp_path / "results", tmp_path / "paper"
    write_summary(runs, "table2", "gsm8k", "boe", 128, 64, 0.25, 64)
    write_paper(paper, "table2", [["table2", "llada_8b", "mbpp", 256, "lookum", "pass@1", 36.2, "percent", "t"]])
    markdown = (report("table2", runs, out, paper) / "table.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| sampler"))
    assert header.count("@128") == 6 and header.count("@256") == 6  # 6 tasks x 2 lengths, finished or not
    lookum = next(line for line in markdown.splitlines() if line.startswith("| lookum"))
    assert "– (36.2, –)" in lookum  # the paper has it, we do not: no made-up difference


def test_figure4_steps_become_columns_and_frontier_is_drawn(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    for steps, score in ((32, 0.2), (64, 0.3), (128, 0.5)):
        write_summary(runs, "figure4", "gsm8k", "boe", 256, steps, score, steps)
        write_summary(runs, "figure4", "gsm8k", "confidence", 256, steps, score - 0.1, steps)
    destination = report("figure4", runs, out, tmp_path / "no_paper")
    header = (destination / "table.md").read_text().splitlines()
    assert any("gsm8k@256/s32" in line and "gsm8k@256/s128" in line for line in header)
    assert (destination / "pareto_gsm8k_tiny.svg").exists()


def test_report_refuses_an_empty_root_and_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="no finished runs"):
        report("table5", tmp_path / "runs", tmp_path / "results", tmp_path)
    assert report_cli(["table5"]) == 2
    assert report_cli(["experiment=table5", "bogus=1"]) == 2


def test_pareto_front_keeps_only_undominated_points():
    points = pd.DataFrame({"nfe": [10, 20, 30, 40], "score": [0.5, 0.4, 0.7, 0.6]})
    assert pareto_front(points, "nfe")["nfe"].tolist() == [10, 30]


def test_tied_cells_share_their_mark():
    from boe_bench.report.tables import rank_marks

    marks = rank_marks(pd.Series({"a": 50.0, "b": 50.0, "c": 40.0, "d": float("nan"), "e": 10.0}))
    assert marks == {"a": "best", "b": "best", "c": "second"}


def test_table4_shows_gen_ppl_and_entropy_beside_mauve_with_their_own_direction(tmp_path):
    runs, out, paper = tmp_path / "runs", tmp_path / "results", tmp_path / "paper"
    for sampler, mauve, ppl, ent in (("confidence", 0.30, 60.0, 5.4), ("entropy", 0.20, 40.0, 5.1),
                                     ("boe", 0.40, 50.0, 5.6)):
        path = runs / "table4" / "owt" / "tiny_mdlm" / sampler / "L1024-s128"
        path.mkdir(parents=True)
        path.joinpath("summary.json").write_text(json.dumps({
            "schedule": {"gen_length": 1024, "steps": 128, "block_length": 1024}, "primary_metric": "mauve",
            "score": mauve, "n": 2, "mean_nfe": 128, "mean_cost_fwd_equiv": 128, "job_wall_s": 10.0,
            "metrics": {"mauve": mauve, "gen_ppl": ppl, "entropy": ent}}))
    write_paper(paper, "table4", [["table4", "mdlm", "owt", 1024, "boe", "gen_ppl", 45.5, "ppl", "t"]])
    lines = (report("table4", runs, out, paper) / "table.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| sampler"))
    assert "| owt@1024 | owt@1024 Gen PPL | owt@1024 entropy |" in header
    row = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines if line.startswith("| ") and "@" not in line}
    assert row["boe"][1] == "**40.0**" and row["entropy"][2] == "**40.00**"  # MAUVE: max; Gen PPL: min
    # Second lowest Gen PPL, with the paper's Gen PPL beside it (not under MAUVE).
    assert row["boe"][2] == "<u>50.00 (45.5, +4.5)</u>" and row["confidence"][2] == "60.00"
    assert row["boe"][3] == "5.60" and row["confidence"][3] == "5.40"  # entropy: no better direction
