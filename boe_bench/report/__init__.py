"""Tables and Pareto curves from finished runs, beside the paper's numbers.

    python -m boe_bench.report experiment=table5 [root=runs] [out=results] [wandb=offline|online]

Collects every ``summary.json`` under ``<root>/<experiment>/`` (<task>/<model>/<sampler>/<run>)
and writes ``<out>/<experiment>/``: ``runs.csv`` (one row per run), ``table.md`` and
``table.tex`` per model (samplers x task@length in the paper's layout, best bold and second
underlined per column, the paper's number and our difference beside ours where
``results/paper/<experiment>.csv`` has the cell), and ``pareto_<task>_<model>.png``/``.svg``
(score against NFE and against cost, one curve per sampler, the Pareto frontier marked).
Cells the experiment sweeps but no run has finished print as "–", never as 0.
"""
from __future__ import annotations

from pathlib import Path

from boe_bench.errors import ConfigError
from boe_bench.report.collect import collect, experiment_axes, paper_numbers
from boe_bench.report.pareto import pareto_front, pareto_plots
from boe_bench.report.tables import MISSING, table

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

__all__ = ["collect", "paper_numbers", "pareto_front", "pareto_plots", "report", "table", "MISSING"]


def report(experiment: str, root: Path = Path("runs"), out: Path = Path("results"),
           paper_dir: Path = Path("results/paper"), wandb_mode: str | None = None) -> Path:
    frame = collect(root / experiment)
    if frame.empty:
        raise ConfigError(f"no finished runs under {root / experiment}; run `python -m boe_bench -m experiment={experiment}`")
    destination = out / experiment
    destination.mkdir(parents=True, exist_ok=True)
    frame.to_csv(destination / "runs.csv", index=False)
    paper, axes = paper_numbers(experiment, paper_dir), experiment_axes(experiment, CONFIG_DIR)
    beside = (f"in parentheses the paper's number and our difference where {paper_dir / experiment}.csv has "
              f"the cell (paper runtime in hours)" if (paper_dir / f"{experiment}.csv").exists()
              else f"no paper numbers for this experiment ({paper_dir / experiment}.csv does not exist)")
    sections, latex = [f"# {experiment}\n\nOurs in percent (secondary metrics in their own unit); {beside}. "
                       f"\"{MISSING}\": no finished run.\n"], []
    for model, runs in frame.groupby("model"):
        markdown, tex = table(runs, paper, axes)
        sections.append(f"## {model}\n\nn per cell: {', '.join(str(n) for n in sorted(runs['n'].unique()))}.\n\n{markdown}\n")
        latex.append(f"% {model}\n{tex}\n")
    (destination / "table.md").write_text("\n".join(sections))
    (destination / "table.tex").write_text("\n".join(latex))
    files = [destination / "table.md", destination / "table.tex", *pareto_plots(frame, destination, paper)]
    if wandb_mode:
        from boe_bench.integrations.wandb_logger import log_report

        log_report(experiment, frame, files, mode=wandb_mode, directory=destination)
    print("\n".join(sections))
    return destination
