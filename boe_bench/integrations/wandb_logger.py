"""Mirror runs and reports to Weights & Biases (``pip install wandb``).

The JSON/JSONL files a run writes stay the source of truth; W&B is a mirror. Enable per
run with ``wandb.enabled=true`` (offline by default: ``wandb sync <dir>/wandb/offline-run-*``
uploads later; ``wandb.mode=online`` syncs now). Runs of one experiment share a group named
after it, so W&B shows a table's cells side by side.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from boe_bench.errors import ConfigError

EXAMPLE_COLUMNS = ["id", "correct", "nfe", "cost_fwd_equiv", "wall_s", "answer", "completion"]


def _wandb():
    try:
        import wandb
    except ImportError:
        raise ConfigError("wandb.enabled=true needs the wandb package: pip install 'boe_bench[wandb]'") from None
    return wandb


def experiment_name(cfg: DictConfig) -> str:
    """The experiment this run belongs to: the configured group, else Hydra's experiment choice."""
    if cfg.wandb.get("group"):
        return str(cfg.wandb.group)
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get("experiment") or "adhoc"
    except ValueError:  # not inside a Hydra job (tests, the Python API)
        return "adhoc"


def run_name(summary: dict) -> str:
    config, schedule = summary["config"], summary["schedule"]
    sampler = Path(str(config.get("out_dir", ""))).parts
    label = sampler[-2] if len(sampler) >= 2 else summary["task"].get("task", "run")
    return f"{label}-L{schedule['gen_length']}-s{schedule['steps']}-seed{config.get('seed')}"


def example_rows(records: list[dict]) -> list[list]:
    return [[r["id"], r.get("correct"), r["accounting"]["nfe"], r["accounting"]["cost_fwd_equiv"],
             r["accounting"]["wall_s"], None if r.get("answer") is None else str(r["answer"]), r["completion"]]
            for r in records]


def log_run(cfg: DictConfig, summary: dict, records: list[dict]) -> Path:
    """Config, summary numbers, a per-example table and the per-example NFE/score curve of
    one finished run. Returns the directory W&B wrote to."""
    wandb = _wandb()
    directory = Path(cfg.wandb.dir or cfg.out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=cfg.wandb.project, group=experiment_name(cfg), job_type="eval",
                     name=run_name(summary), mode=cfg.wandb.mode, dir=str(directory),
                     config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous")
    try:
        for key in ("score", "n", "mean_nfe", "mean_cost_fwd_equiv", "generation_wall_s", "job_wall_s"):
            run.summary[key] = summary[key]
        for key, value in summary["metrics"].items():
            if isinstance(value, (int, float)):
                run.summary[f"metrics/{key}"] = value
        examples = wandb.Table(columns=EXAMPLE_COLUMNS, data=example_rows(records))
        run.log({"examples": examples,
                 "nfe_per_example": wandb.plot.scatter(examples, "nfe", "cost_fwd_equiv", title="NFE and cost per example")})
    finally:
        run.finish()
    return directory / "wandb"


def log_report(experiment: str, frame, files: list[Path], project: str = "boe_bench", mode: str = "offline",
               directory: Path = Path("wandb")) -> Path:
    """The collected runs as a table, one accuracy-NFE line series per task (a curve per
    sampler), and the report's files (tables, Pareto PNGs) as a report job of the group."""
    wandb = _wandb()
    run = wandb.init(project=project, group=experiment, job_type="report", name=f"{experiment}-report", mode=mode,
                     dir=str(directory), reinit="finish_previous")
    try:
        frame = frame.astype(object).where(frame.notna(), None)
        run.log({"runs": wandb.Table(dataframe=frame)})
        for task, group in frame.dropna(subset=["score", "nfe"]).groupby("task"):
            curves = [curve.sort_values("nfe") for _, curve in group.groupby("sampler")]
            run.log({f"pareto/{task}": wandb.plot.line_series(
                xs=[c["nfe"].tolist() for c in curves], ys=[[100 * s for s in c["score"]] for c in curves],
                keys=[str(c["sampler"].iloc[0]) for c in curves], title=f"{task}: score vs NFE", xname="NFE")})
        for path in files:
            if path.suffix == ".png":
                run.log({f"plots/{path.stem}": wandb.Image(str(path))})
            run.save(str(path.resolve()), base_path=str(path.parent.resolve()), policy="now")
    finally:
        run.finish()
    return directory / "wandb"
