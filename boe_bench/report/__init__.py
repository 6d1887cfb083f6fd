"""Tables and Pareto curves from finished runs, beside the paper's numbers, with intervals.

    python -m boe_bench.report experiment=table5 [root=runs] [out=reports] [wandb=offline|online]

Collects every ``summary.json`` under ``<root>/<experiment>/`` (<task>/<model>/<sampler>/<run>)
and its ``examples.jsonl`` and writes ``<out>/<experiment>/`` (``reports/``, untracked, unless
``out=results`` asks to replace the committed report; W&B's files go to ``wandb/<experiment>/``): ``runs.csv`` (one row per run,
with 95% intervals), ``table.md`` and ``table.tex`` (the paper's rows, in its order, as the
overlay's ``paper_rows`` names them, x task@length; ours with its 95% interval, the paper's
number and our difference beside it where ``results/paper/<experiment>.csv`` has the cell, a
dagger where the paper's number is outside our interval; best bold, second underlined, unless
tied), the
paired comparison of BoE with every other row on the same examples, and
``pareto_<task>_<model>.png``/``.svg`` (score against NFE and against cost with interval bars,
one curve per row, the Pareto frontier marked). Cells the experiment sweeps but no run has
finished print as "–", never as 0; runs outside the paper's rows are marked "(extra)". A section
of random-weight models or of cells with fewer than two examples opens with a banner saying
its numbers are noise / carry no interval, and its plots say so in their title.
"""
from __future__ import annotations

from pathlib import Path

from boe_bench.errors import ConfigError
from boe_bench.report.collect import assign_rows, collect, experiment_axes, paper_numbers, paper_rows
from boe_bench.report.pareto import pareto_front, pareto_plots
from boe_bench.report.tables import FLAG, MISSING, paired_table, table

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

__all__ = ["collect", "paper_numbers", "pareto_front", "pareto_plots", "report", "table", "MISSING"]

NOTES = (f"Ours in percent (Gen PPL, entropy in their own unit) with its 95% interval in brackets: Wilson for "
         f"pass rates, bootstrap over examples (1000 resamples, seed 0; MAUVE 100) for pooled cell accuracy, "
         f"MAUVE, Gen PPL, entropy, NFE and cost. {FLAG}: the paper's number lies outside our interval. "
         f"\"{MISSING}\": no finished run (or no interval: one example, or no per-example records). Wall-clock "
         f"is one measurement on the machine in runs.csv (no interval); \"wall / Confidence\" divides it by the "
         f"Confidence row's, the paper's ratio in parentheses.")
PAIRED_NOTE = ("BoE minus each row on the examples both ran (percentage points; Gen PPL/entropy in their unit): "
               "difference [95% paired-bootstrap interval] and two-sided p, from McNemar's exact test for 0/1 "
               "outcomes (in parentheses: examples only BoE got right / only the row got right) and from the "
               "paired bootstrap otherwise.")


def sections_of(frame, rows):
    """One section per model, or one for all when the paper's rows name models (Table 4:
    SEDD and MDLM rows in one table)."""
    if any(models for _, models in rows.values()):
        return [(" + ".join(sorted(frame["model"].unique())), frame)]
    return list(frame.groupby("model"))


def noise(runs) -> bool:
    """Whether a section's numbers rank nothing: random weights, or a cell of one example."""
    return bool(runs["random_weights"].fillna(False).astype(bool).any()) or int(runs["n"].min()) < 2


def banner(runs) -> str:
    """What a reader must know before reading a section's numbers (empty when nothing)."""
    notes = []
    if bool(runs["random_weights"].fillna(False).astype(bool).any()):
        notes.append("Random weights: scores are noise; this section shows that every cell runs and reports, "
                     "not how the samplers compare")
    if int(runs["n"].min()) < 2:
        notes.append(f"n={int(runs['n'].min())} example(s) in a cell: no interval, no test, no ranking")
    return "".join(f"> **{note}.**\n" for note in notes) + ("\n" if notes else "")


def report(experiment: str, root: Path = Path("runs"), out: Path = Path("reports"),
           paper_dir: Path = Path("results/paper"), wandb_mode: str | None = None,
           wandb_dir: Path | None = None) -> Path:
    found: dict = {}
    frame = collect(root / experiment, keep=found)
    if frame.empty:
        raise ConfigError(f"no finished runs under {root / experiment}; run `python -m boe_bench -m experiment={experiment}`")
    rows = paper_rows(experiment, CONFIG_DIR)
    frame.insert(3, "row", assign_rows(frame, rows))
    destination = out / experiment
    destination.mkdir(parents=True, exist_ok=True)
    frame.to_csv(destination / "runs.csv", index=False)
    paper, axes = paper_numbers(experiment, paper_dir), experiment_axes(experiment, CONFIG_DIR)
    order = list(rows) or axes.get("sampler", [])
    beside = (f"In parentheses the paper's number and our difference where {paper_dir / experiment}.csv has "
              f"the cell (paper runtime in hours)." if (paper_dir / f"{experiment}.csv").exists()
              else f"No paper numbers for this experiment ({paper_dir / experiment}.csv does not exist).")
    sections, latex = [f"# {experiment}\n\n{NOTES} {beside}\n"], []
    for model, runs in sections_of(frame, rows):
        markdown, tex = table(runs, paper, axes, order, found, ranked=not noise(runs))
        sections.append(f"## {model}\n\n{banner(runs)}n per cell: {', '.join(str(n) for n in sorted(runs['n'].unique()))}."
                        f"\n\n{markdown}\n")
        paired = paired_table(runs, found, order)
        if paired:
            sections.append(f"### {model}: BoE against each row, paired\n\n{PAIRED_NOTE}\n\n{paired}\n")
        latex.append(f"% {model}\n{tex}\n")
    (destination / "table.md").write_text("\n".join(sections))
    (destination / "table.tex").write_text("\n".join(latex))
    files = [destination / "table.md", destination / "table.tex", *pareto_plots(frame, destination, paper)]
    if wandb_mode:
        from boe_bench.integrations.wandb_logger import log_report

        # Never beside the report: W&B's files are not results (`wandb/` is untracked).
        log_report(experiment, frame, files, mode=wandb_mode, directory=wandb_dir or Path("wandb") / experiment)
    print("\n".join(sections))
    return destination
