"""Finished runs (with 95% intervals from their per-example records) and the paper's numbers
as pandas frames; the paper's rows, as the experiment overlay names them."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from boe_bench.report.intervals import Estimator, estimators

COLUMNS = ["task", "model", "sampler", "gen_length", "steps", "block_length", "metric", "score", "score_lo",
           "score_hi", "n", "nfe", "nfe_lo", "nfe_hi", "cost", "cost_lo", "cost_hi", "generation_wall_s", "wall_s",
           "merged_shards", "device", "random_weights", "path"]
PAPER_COLUMNS = ["table", "model", "task", "gen_length", "sampler", "metric", "value", "unit", "row", "source_note"]


def interval_columns(found: dict[str, Estimator], primary: str, metrics: dict) -> dict:
    """score_lo/hi (primary metric), nfe/cost_lo/hi, metric:<k>_lo/hi: 95% intervals."""
    out = {}
    for name, prefix in ((primary, "score"), ("nfe", "nfe"), ("cost", "cost"),
                         *((k, f"metric:{k}") for k in metrics)):
        if name in found:
            out[f"{prefix}_lo"], out[f"{prefix}_hi"] = found[name].interval()
    return out


def random_weights(summary: dict) -> bool:
    """Whether the run's model is one of the random-initialised stand-ins (``build_tiny*``:
    tiny, tiny_dream, tiny_mdlm, tiny_sedd), whose scores are noise."""
    target = str(summary.get("config", {}).get("model", {}).get("_target_", ""))
    return target.rsplit(".", 1)[-1].startswith("build_tiny")


def collect(root: Path, keep: dict[str, dict[str, Estimator]] | None = None) -> pd.DataFrame:
    """One row per finished run under ``root`` (layout <task>/<model>/<sampler>/<run>/summary.json,
    as experiment configs write it), with 95% intervals from its ``examples.jsonl``; ``keep``
    (run path -> metric -> estimator) receives the estimators for paired comparisons. Shard
    summaries are not runs: merge them first."""
    rows = []
    for path in sorted(root.glob("*/*/*/*/summary.json")):
        task, model, sampler = path.relative_to(root).parts[:3]
        summary = json.loads(path.read_text())
        schedule = summary["schedule"]
        found = estimators(path.parent, summary)
        if keep is not None:
            keep[str(path.parent)] = found
        rows.append({
            "task": task, "model": model, "sampler": sampler, "gen_length": schedule["gen_length"],
            "steps": schedule["steps"], "block_length": schedule.get("block_length"),
            "metric": summary["primary_metric"], "score": summary["score"], "n": summary["n"],
            "nfe": summary["mean_nfe"], "cost": summary["mean_cost_fwd_equiv"],
            "generation_wall_s": summary.get("generation_wall_s"), "wall_s": summary["job_wall_s"],
            "merged_shards": summary.get("merged_shards", 1),
            # The machine the wall-clock was measured on.
            "device": summary.get("environment", {}).get("device"), "path": str(path.parent),
            "random_weights": random_weights(summary),
            # Secondary metrics (OWT: gen PPL, entropy beside MAUVE) for runs.csv and W&B.
            **{f"metric:{k}": v for k, v in summary.get("metrics", {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)},
            **interval_columns(found, summary["primary_metric"], summary.get("metrics", {})),
        })
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=[*COLUMNS, *sorted(set(frame.columns) - set(COLUMNS))])


def paper_numbers(experiment: str, paper_dir: Path) -> pd.DataFrame:
    """``results/paper/<experiment>.csv`` (may hold only its header). Without a ``row``
    column (the paper's row label) a cell's row is its sampler; MAUVE, a fraction in the
    paper, is put in percent as the report prints ours."""
    path = paper_dir / f"{experiment}.csv"
    if not path.exists():
        return pd.DataFrame(columns=PAPER_COLUMNS)
    paper = pd.read_csv(path)
    if "row" not in paper:
        paper["row"] = paper["sampler"]
    if "unit" in paper and len(paper):
        fraction = paper["unit"] == "fraction"
        paper["value"] = paper["value"].astype(float).where(~fraction, 100 * paper["value"].astype(float))
    return paper


def paper_rows(experiment: str, config_dir: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The overlay's ``paper_rows``: the paper's row label -> (our sampler, the models the row
    runs on, empty for any). Written ``sampler`` or ``sampler@model|model`` (Table 4: a row is
    a model and a sampler, e.g. ``random@sedd_small|tiny_sedd``)."""
    path = config_dir / "experiment" / f"{experiment}.yaml"
    spec = (OmegaConf.load(path).get("paper_rows") if path.exists() else None) or {}
    rows = {}
    for label, value in spec.items():
        sampler, _, models = str(value).partition("@")
        rows[str(label)] = (sampler.strip(), tuple(m.strip() for m in models.split("|") if m.strip()))
    return rows


def assign_rows(frame: pd.DataFrame, rows: dict[str, tuple[str, tuple[str, ...]]]) -> pd.Series:
    """Each run's row label: the paper row whose sampler (and model, where it names models)
    the run used, else ``<sampler> (extra)``; the sampler itself without a row spec."""
    def label(sampler: str, model: str) -> str:
        if not rows:
            return sampler
        for name, (row_sampler, models) in rows.items():
            if row_sampler == sampler and (not models or model in models):
                return name
        return f"{sampler} (extra)"

    return pd.Series([label(s, m) for s, m in zip(frame["sampler"], frame["model"])], index=frame.index, dtype=object)


def experiment_axes(experiment: str, config_dir: Path) -> dict[str, list]:
    """The swept values of an experiment (sampler order = the paper's row order), so cells the
    sweep defines but no run has finished still show, as missing."""
    path = config_dir / "experiment" / f"{experiment}.yaml"
    if not path.exists():
        return {}
    params = OmegaConf.load(path).get("hydra", {}).get("sweeper", {}).get("params", {}) or {}
    return {key: [v.strip() for v in str(value).split(",")] for key, value in params.items()}
