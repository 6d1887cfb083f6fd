"""Tables and Pareto curves from finished runs, beside the paper's numbers.

    python -m boe_bench.report experiment=table5 [root=runs] [out=results]

Collects every ``summary.json`` under ``<root>/<experiment>/`` (the layout experiment
configs write: <task>/<model>/<sampler>/<run>), writes ``<out>/<experiment>/``:
``runs.csv`` (one row per run), ``table.md`` and ``table.tex`` (samplers x task/length in
the paper's layout, best bold and second underlined per column, the paper's number and our
difference beside ours when ``results/paper/<experiment>.csv`` has the cell), and
``pareto_<task>.png``/``.svg`` (score against NFE and against cost, one curve per sampler,
the Pareto frontier marked). Missing cells print as "–", never as 0.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

MISSING = "–"


def collect(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(root.glob("*/*/*/*/summary.json")):
        task, model, sampler, _ = path.relative_to(root).parts[:4]
        summary = json.loads(path.read_text())
        rows.append({
            "task": task, "model": model, "sampler": sampler,
            "gen_length": summary["schedule"]["gen_length"], "steps": summary["schedule"]["steps"],
            "metric": summary["primary_metric"], "score": summary["score"], "n": summary["n"],
            "nfe": summary["mean_nfe"], "cost": summary["mean_cost_fwd_equiv"], "wall_s": summary["job_wall_s"],
        })
    return pd.DataFrame(rows)


def paper_numbers(experiment: str, paper_dir: Path) -> dict:
    path = paper_dir / f"{experiment}.csv"
    if not path.exists():
        return {}
    paper = pd.read_csv(path)
    return {(r.task, int(r.gen_length), r.sampler): float(r.value) for r in paper.itertuples()}


def rank_marks(column: pd.Series) -> dict:
    """Index -> 'best' / 'second' among the non-missing cells of a column."""
    order = column.dropna().sort_values(ascending=False).index.tolist()
    return {**({order[0]: "best"} if order else {}), **({order[1]: "second"} if len(order) > 1 else {})}


def table(frame: pd.DataFrame, paper: dict) -> tuple[str, str]:
    """Markdown and LaTeX: rows samplers, columns task@L; ours in percent (paper, diff)."""
    frame = frame.assign(column=frame["task"] + "@" + frame["gen_length"].astype(str), percent=100 * frame["score"])
    grid = frame.pivot_table(index="sampler", columns="column", values="percent", aggfunc="mean")
    extra = frame.groupby("sampler")[["nfe", "cost", "wall_s"]].mean()
    marks = {c: rank_marks(grid[c]) for c in grid.columns}
    md_rows, tex_rows = [], []
    for sampler in grid.index:
        md_cells, tex_cells = [sampler], [sampler.replace("_", "\\_")]
        for column in grid.columns:
            value = grid.loc[sampler, column]
            task, length = column.split("@")
            reference = paper.get((task, int(length), sampler))
            text = MISSING if pd.isna(value) else f"{value:.1f}"
            if reference is not None:
                diff = MISSING if pd.isna(value) else f"{value - reference:+.1f}"
                text += f" ({reference:.1f}, {diff})"
            mark = marks[column].get(sampler)
            md_cells.append(f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text)
            tex = text.replace("–", "--")
            tex_cells.append(f"\\textbf{{{tex}}}" if mark == "best" else f"\\underline{{{tex}}}" if mark == "second" else tex)
        costs = [f"{extra.loc[sampler, k]:.1f}" for k in ("nfe", "cost", "wall_s")]
        md_rows.append("| " + " | ".join(md_cells + costs) + " |")
        tex_rows.append(" & ".join(tex_cells + costs) + " \\\\")
    header = ["sampler", *grid.columns, "NFE", "cost (fwd)", "wall s"]
    markdown = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *md_rows])
    latex = "\n".join([f"\\begin{{tabular}}{{l{'c' * (len(header) - 1)}}}", "\\toprule",
                       " & ".join(h.replace("_", "\\_").replace("@", " L=") for h in header) + " \\\\", "\\midrule",
                       *tex_rows, "\\bottomrule", "\\end{tabular}"])
    return markdown, latex


def pareto_front(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """Points no other point beats on both fewer ``x`` and a higher score."""
    ordered = points.sort_values([x, "score"], ascending=[True, False])
    best, keep = float("-inf"), []
    for index, row in ordered.iterrows():
        if row["score"] > best:
            keep.append(index)
            best = row["score"]
    return ordered.loc[keep]


def pareto_plots(frame: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for task, group in frame.dropna(subset=["score"]).groupby("task"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, x, label in ((axes[0], "nfe", "NFE"), (axes[1], "cost", "cost (forward-equivalents)")):
            for sampler, curve in group.groupby("sampler"):
                curve = curve.sort_values(x)
                ax.plot(curve[x], 100 * curve["score"], marker="o", label=sampler)
            front = pareto_front(group, x)
            ax.plot(front[x], 100 * front["score"], color="black", linestyle="--", linewidth=1, label="frontier")
            ax.set_xlabel(label)
            ax.set_ylabel(f"{group['metric'].iloc[0]} (%)")
            ax.set_title(task)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        for suffix in ("png", "svg"):
            path = out / f"pareto_{task}.{suffix}"
            fig.savefig(path, dpi=120)
            written.append(path)
        plt.close(fig)
    return written


def report(experiment: str, root: Path = Path("runs"), out: Path = Path("results"),
           paper_dir: Path = Path("results/paper")) -> Path:
    frame = collect(root / experiment)
    destination = out / experiment
    destination.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        raise SystemExit(f"no finished runs under {root / experiment}; run `python -m boe_bench -m experiment={experiment}`")
    frame.to_csv(destination / "runs.csv", index=False)
    markdown, latex = table(frame, paper_numbers(experiment, paper_dir))
    note = (f"# {experiment}\n\nOurs in percent; in parentheses the paper's number and our difference where "
            f"results/paper/{experiment}.csv has the cell. Models: {', '.join(sorted(frame['model'].unique()))}; "
            f"n per cell: {', '.join(str(n) for n in sorted(frame['n'].unique()))}.\n\n")
    (destination / "table.md").write_text(note + markdown + "\n")
    (destination / "table.tex").write_text(latex + "\n")
    pareto_plots(frame, destination)
    print(note + markdown)
    return destination


def main(argv: list[str]) -> int:
    options = dict(arg.split("=", 1) for arg in argv)
    if "experiment" not in options:
        print("usage: python -m boe_bench.report experiment=<name> [root=runs] [out=results]", file=sys.stderr)
        return 2
    report(options["experiment"], Path(options.get("root", "runs")), Path(options.get("out", "results")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
