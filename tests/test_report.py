"""The report on synthetic summaries: layout, marks, paper numbers, missing cells, frontier."""
import json

import pandas as pd

from boe_bench.report import pareto_front, report


def write_summary(root, task, sampler, length, steps, score, nfe):
    path = root / "tableX" / task / "tiny" / sampler / f"L{length}-s{steps}"
    path.mkdir(parents=True)
    path.joinpath("summary.json").write_text(json.dumps({
        "schedule": {"gen_length": length, "steps": steps, "block_length": 32}, "primary_metric": "accuracy",
        "score": score, "n": 4, "mean_nfe": nfe, "mean_cost_fwd_equiv": nfe * 1.5, "job_wall_s": 1.0}))


def test_table_marks_best_and_second_shows_paper_and_missing(tmp_path):
    runs, out, paper = tmp_path / "runs", tmp_path / "results", tmp_path / "paper"
    write_summary(runs, "gsm8k", "boe", 128, 64, 0.50, 64)
    write_summary(runs, "gsm8k", "confidence", 128, 64, 0.40, 64)
    write_summary(runs, "gsm8k", "entropy", 128, 64, 0.30, 64)
    write_summary(runs, "mbpp", "boe", 128, 64, 0.20, 64)
    paper.mkdir()
    pd.DataFrame([{"table": "tableX", "model": "m", "task": "gsm8k", "gen_length": 128, "sampler": "boe",
                   "metric": "accuracy", "value": 55.0, "source": "test"}]).to_csv(paper / "tableX.csv", index=False)
    from boe_bench import report as module

    original = module.paper_numbers
    module.paper_numbers = lambda experiment, _: original(experiment, paper)
    try:
        destination = report("tableX", runs, out)
    finally:
        module.paper_numbers = original
    markdown = (destination / "table.md").read_text()
    assert "| boe | **50.0 (55.0, -5.0)** | **20.0** |" in markdown
    assert "| confidence | <u>40.0</u> | – |" in markdown  # missing, not zero
    assert "\\textbf{50.0 (55.0, -5.0)}" in (destination / "table.tex").read_text()
    assert (destination / "pareto_gsm8k.png").exists() and (destination / "pareto_gsm8k.svg").exists()


def test_pareto_front_keeps_only_undominated_points():
    points = pd.DataFrame({"nfe": [10, 20, 30, 40], "score": [0.5, 0.4, 0.7, 0.6]})
    assert pareto_front(points, "nfe")["nfe"].tolist() == [10, 30]
