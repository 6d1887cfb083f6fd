"""Score against NFE and against cost: one curve per row (sampler), 95% interval bars on both
axes, the Pareto frontier (of the point estimates) marked."""
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


def error_bars(curve: pd.DataFrame, column: str, factor: float):
    """[below, above] distances to the 95% interval (``<column>_lo``/``_hi``); None without."""
    lo, hi = f"{column}_lo", f"{column}_hi"
    if lo not in curve or curve[lo].isna().all():
        return None
    centre = curve[column].astype(float)
    below = (centre - curve[lo].astype(float)).clip(lower=0).fillna(0)
    above = (curve[hi].astype(float) - centre).clip(lower=0).fillna(0)
    return [factor * below.to_numpy(), factor * above.to_numpy()]


def plot_warning(group: pd.DataFrame) -> str:
    """A title line for plots whose points say nothing about the samplers."""
    notes = []
    if "random_weights" in group and bool(group["random_weights"].fillna(False).astype(bool).any()):
        notes.append("random weights: scores are noise")
    if int(group["n"].min()) < 2:
        notes.append(f"n={int(group['n'].min())}: interval bars span most of the scale")
    return "; ".join(notes)


def pareto_plots(frame: pd.DataFrame, out: Path, paper: pd.DataFrame | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for (model, task), group in frame.dropna(subset=["score", "nfe"]).groupby(["model", "task"]):
        warning = plot_warning(group)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, x, label in ((axes[0], "nfe", "NFE"), (axes[1], "cost", "cost (forward-equivalents)")):
            for row, curve in group.groupby("row" if "row" in group else "sampler", sort=False):
                curve = curve.sort_values(x)
                ax.errorbar(curve[x], 100 * curve["score"], yerr=error_bars(curve, "score", 100.0),
                            xerr=error_bars(curve, x, 1.0), marker="o", capsize=3, label=row)
            front = pareto_front(group, x)
            ax.plot(front[x], 100 * front["score"], color="black", linestyle="--", linewidth=1,
                    marker="s", markerfacecolor="none", markersize=9, label="Pareto frontier")
            if paper is not None and x == "nfe" and {"nfe"} <= set(paper.columns):
                points = paper[(paper["task"] == task) & paper["nfe"].notna()]
                ax.scatter(points["nfe"], points["value"], marker="x", color="grey", label="paper")
            ax.set_xlabel(label)
            ax.set_ylabel(f"{group['metric'].iloc[0]} (%)")
            ax.set_title(f"{task} ({model})" + (f"\n{warning}" if warning else ""),
                         color="firebrick" if warning else "black")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        for suffix in ("png", "svg"):
            path = out / f"pareto_{task}_{model}.{suffix}"
            fig.savefig(path, dpi=120)
            written.append(path)
        plt.close(fig)
    return written
