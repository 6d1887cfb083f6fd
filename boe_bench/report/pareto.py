"""Score against NFE and against cost: one curve per sampler, the Pareto frontier marked."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def pareto_front(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """Points no other point beats with fewer ``x`` and a higher score."""
    ordered = points.sort_values([x, "score"], ascending=[True, False])
    best, keep = float("-inf"), []
    for index, row in ordered.iterrows():
        if row["score"] > best:
            keep.append(index)
            best = row["score"]
    return ordered.loc[keep]


def pareto_plots(frame: pd.DataFrame, out: Path, paper: pd.DataFrame | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for (model, task), group in frame.dropna(subset=["score", "nfe"]).groupby(["model", "task"]):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, x, label in ((axes[0], "nfe", "NFE"), (axes[1], "cost", "cost (forward-equivalents)")):
            for sampler, curve in group.groupby("sampler"):
                curve = curve.sort_values(x)
                ax.plot(curve[x], 100 * curve["score"], marker="o", label=sampler)
            front = pareto_front(group, x)
            ax.plot(front[x], 100 * front["score"], color="black", linestyle="--", linewidth=1,
                    marker="s", markerfacecolor="none", markersize=9, label="Pareto frontier")
            if paper is not None and x == "nfe" and {"nfe"} <= set(paper.columns):
                points = paper[(paper["task"] == task) & paper["nfe"].notna()]
                ax.scatter(points["nfe"], points["value"], marker="x", color="grey", label="paper")
            ax.set_xlabel(label)
            ax.set_ylabel(f"{group['metric'].iloc[0]} (%)")
            ax.set_title(f"{task} ({model})")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        for suffix in ("png", "svg"):
            path = out / f"pareto_{task}_{model}.{suffix}"
            fig.savefig(path, dpi=120)
            written.append(path)
        plt.close(fig)
    return written
