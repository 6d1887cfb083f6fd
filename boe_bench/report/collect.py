"""Finished runs and the paper's numbers as pandas frames."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

COLUMNS = ["task", "model", "sampler", "gen_length", "steps", "block_length", "metric", "score", "n",
           "nfe", "cost", "generation_wall_s", "wall_s", "merged_shards", "device", "path"]


def collect(root: Path) -> pd.DataFrame:
    """One row per finished run under ``root`` (layout <task>/<model>/<sampler>/<run>/summary.json,
    as experiment configs write it). Shard summaries are not runs: merge them first."""
    rows = []
    for path in sorted(root.glob("*/*/*/*/summary.json")):
        task, model, sampler = path.relative_to(root).parts[:3]
        summary = json.loads(path.read_text())
        schedule = summary["schedule"]
        rows.append({
            "task": task, "model": model, "sampler": sampler, "gen_length": schedule["gen_length"],
            "steps": schedule["steps"], "block_length": schedule.get("block_length"),
            "metric": summary["primary_metric"], "score": summary["score"], "n": summary["n"],
            "nfe": summary["mean_nfe"], "cost": summary["mean_cost_fwd_equiv"],
            "generation_wall_s": summary.get("generation_wall_s"), "wall_s": summary["job_wall_s"],
            "merged_shards": summary.get("merged_shards", 1),
            # The machine the wall-clock was measured on.
            "device": summary.get("environment", {}).get("device"), "path": str(path.parent),
            # Secondary metrics (OWT: gen PPL, entropy beside MAUVE) for runs.csv and W&B.
            **{f"metric:{k}": v for k, v in summary.get("metrics", {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)},
        })
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=[*COLUMNS, *sorted(set(frame.columns) - set(COLUMNS))])


def paper_numbers(experiment: str, paper_dir: Path) -> pd.DataFrame:
    """``results/paper/<experiment>.csv`` (may hold only its header)."""
    path = paper_dir / f"{experiment}.csv"
    columns = ["table", "model", "task", "gen_length", "sampler", "metric", "value", "unit", "source_note"]
    if not path.exists():
        return pd.DataFrame(columns=columns)
    return pd.read_csv(path)


def experiment_axes(experiment: str, config_dir: Path) -> dict[str, list]:
    """The swept values of an experiment (sampler order = the paper's row order), so cells the
    sweep defines but no run has finished still show, as missing."""
    path = config_dir / "experiment" / f"{experiment}.yaml"
    if not path.exists():
        return {}
    params = OmegaConf.load(path).get("hydra", {}).get("sweeper", {}).get("params", {}) or {}
    return {key: [v.strip() for v in str(value).split(",")] for key, value in params.items()}
