"""``python -m boe_bench task=gsm8k sampler=boe``: one evaluation job, composed by Hydra.

Whatever the user can get wrong (an unknown option or config name, an unparsable override,
a refused value, an out_dir that is a file) ends in one sentence on stderr and exit code 2,
and a refused job leaves no run directory behind (``remove_refused_run_dir``);
an interrupt (Ctrl-C, SIGTERM) in one line saying how to resume, exit 130/143. Tracebacks are
kept for real faults, and for everything when the user sets HYDRA_FULL_ERROR=1.
"""
import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from boe_bench.errors import ConfigError

EXIT_CONFIG = 2
INTERRUPTED = "interrupted; re-run the same command to resume"


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    from boe_bench.runner import run

    try:
        summary = run(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        # In a sweep one refused cell must not stop the others: Hydra marks it failed, runs
        # the rest, then exits non-zero naming it. A re-run redoes only unfinished cells.
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        named = any(o.split("=", 1)[0].lstrip("+~") in ("out_dir", "hydra.run.dir")
                    for o in (*hydra_cfg.overrides.task, *hydra_cfg.overrides.hydra))
        remove_refused_run_dir(Path(hydra_cfg.runtime.output_dir), keep_dir=named)
        sys.exit(EXIT_CONFIG)
    print(summary_line(summary, cfg.out_dir))


HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}


def remove_refused_run_dir(run_dir: Path, keep_dir: bool = False) -> None:
    """Remove what Hydra wrote for a job that was then refused (``.hydra/`` and an empty log)
    and, unless ``keep_dir`` (an out_dir the user named), the run directory it leaves empty
    and the empty directories above it, up to the working directory: a refused command leaves
    nothing that looks like a run. Only where the directory holds nothing else: one that
    holds records, or anything of the user's, is left as it is."""
    try:
        entries = list(run_dir.iterdir())
        hydra = run_dir / ".hydra"
        logs = [e for e in entries if e.suffix == ".log" and e.is_file() and e.stat().st_size == 0]
        if set(entries) - {hydra, *logs}:
            return
        if hydra.exists() and not ({e.name for e in hydra.iterdir()} <= HYDRA_FILES):
            return
        for log in logs:
            log.unlink()
        if hydra.exists():
            for name in HYDRA_FILES:
                (hydra / name).unlink(missing_ok=True)
            hydra.rmdir()
        if keep_dir:
            return
        run_dir.rmdir()
        cwd = Path.cwd().resolve()
        for parent in run_dir.resolve().parents:
            if parent == cwd or cwd not in parent.parents:
                break
            parent.rmdir()  # OSError where not empty: the walk stops there
    except OSError:  # best effort: the refusal itself has been said
        pass


def summary_line(summary: dict, out_dir: str) -> str:
    """The job's one-line result. A job that found its records complete did nothing: it says
    so, and labels the wall time as the original run's (not this command's)."""
    from boe_bench.runner import ALREADY_COMPLETE

    score = summary["score"]
    task = summary["task"]["task"]
    metric = f"{summary['primary_metric']}={score if score is None else round(score, 4)}"
    cost = f"mean_nfe={summary['mean_nfe']:.1f} mean_cost={summary['mean_cost_fwd_equiv']:.2f}"
    if summary.get(ALREADY_COMPLETE):
        return (f"{task}: already complete (n={summary['n']}), nothing to do; {metric} {cost} "
                f"original run's wall={summary['job_wall_s']:.1f}s -> {out_dir}")
    return f"{task}: {metric} n={summary['n']} {cost} wall={summary['job_wall_s']:.1f}s -> {out_dir}"


def one_sentence(err: BaseException) -> str | None:
    """The user's mistake behind a Hydra/OmegaConf/OS error, in one sentence; None for a fault."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, MissingConfigException):
        missing, options = getattr(err, "missing_cfg_file", None), getattr(err, "options", None)
        if missing and options is not None and "/" in missing:
            group, name = missing.rsplit("/", 1)
            return f"unknown {group} {name!r}; known: {', '.join(options)}"
        return first_line
    if isinstance(err, ConfigCompositionException):
        if first_line.startswith("Could not override '"):
            key = first_line.split("'")[1]
            return (f"unknown option {key!r}: the config has no such key (python -m boe_bench --cfg job "
                    f"lists the options)")
        return first_line
    if isinstance(err, OverrideParseException):
        return f"cannot parse the command line: {first_line}"
    if isinstance(err, OmegaConfBaseException):
        return first_line
    if isinstance(err, (FileExistsError, NotADirectoryError)) and err.filename:
        return f"cannot create the run directory: {err.filename!r} is a file, not a directory"
    if isinstance(err, PermissionError) and err.filename:
        return f"cannot write {err.filename!r}: permission denied"
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (the records written so far are complete)."""


def _terminate(signum, frame):
    raise Terminated


def cli() -> None:
    user_wants_tracebacks = bool(os.environ.get("HYDRA_FULL_ERROR"))
    # Hydra otherwise prints its own multi-line report and exits 1; we want the exception.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
    except KeyboardInterrupt as interrupt:
        print(f"\n{INTERRUPTED}", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT))
    except ConfigError as err:
        if user_wants_tracebacks:
            raise
        # A sweep: the refused cells said why and Hydra named their overrides above.
        print(f"error: a sweep cell was refused ({err}); the other cells ran; fix it and re-run the "
              f"same command to finish", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except Exception as err:  # noqa: BLE001 - reported in one sentence or re-raised
        sentence = None if user_wants_tracebacks else one_sentence(err)
        if sentence is None:
            raise
        print(f"error: {sentence}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


if __name__ == "__main__":
    cli()
