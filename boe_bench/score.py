"""Rescore saved generations, from any tool, with the runner's own scorers.

    python -m boe_bench.score task=<name> predictions=<file.jsonl> [out=<summary.json>] [workers=N]
                              [task.data_files=<local copy>] [task.protocol=<protocol>] [task.<option>=<value> ...]

``predictions`` is JSON lines, one generation per line::

    {"id": "<document id>", "completion": "<generated text, without the prompt>"}

Ids are the task's document ids ("gsm8k-0", "HumanEval/0", "mbpp-11", "countdown-0", ...); an
``examples.jsonl`` written by the runner qualifies as it is. Every id must belong to the task.
For code tasks several lines with one id are several samples of one problem (pass@k for every
configured k up to the number of samples); every other task scores one completion per
document and refuses a repeated id (a second sample would silently weigh that document
twice). Completions may run past the task's stop sequences: each task's ``score`` cuts them
as lm-eval does (``boe_bench.tasks.base.cut_at_stop``), the same call the runner makes.

The task is composed from ``configs/task/<name>.yaml`` with Hydra, so ``task.*`` overrides
behave as in ``python -m boe_bench``. Completions are scored in this process's main thread
(``workers=1``) or in ``workers`` processes, never in threads: MATH-500's ``math_verify`` and
answer comparison time out by SIGALRM, which only a main thread receives. Only the task's
module is imported, no model code. The summary (task, metrics, n, coverage, per-record
results) is written to ``out`` (its directory must exist; default:
``runs/rescored/<task>/<predictions' directory>-<stem>.summary.json``, never into a run's
directory) and its metrics are printed; stderr says how many of the task's ids were scored.
"""
from __future__ import annotations

import importlib
import json
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from boe_bench.errors import ConfigError
from boe_bench.tasks.base import existing_file, jsonl_rows

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
OWN_KEYS = ("predictions", "out", "workers")
# Every task config, each with its protocols (shown in the usage text).
TASK_NAMES = tuple(sorted(p.stem for p in (CONFIGS / "task").glob("*.yaml")))
# Where the summary goes when no out= is given: never beside the predictions, which may be a
# run's examples.jsonl (its directory belongs to the runner).
DEFAULT_OUT = Path("runs/rescored")


def task_class(name: str) -> type:
    """The class a task config builds, imported alone (no other task, no model code)."""
    from omegaconf import OmegaConf

    module, _, cls = OmegaConf.load(CONFIGS / "task" / f"{name}.yaml")["_target_"].rpartition(".")
    return getattr(importlib.import_module(module), cls)


def usage() -> str:
    lines = ["usage: python -m boe_bench.score task=<name> predictions=<file.jsonl> [out=<file>] [workers=N] "
             "[task.data_files=<local copy>] [task.protocol=<p>] [task.<key>=...]",
             "task.protocol (the default first):"]
    for name in TASK_NAMES:
        protocols = task_class(name).protocols
        lines += [f"  {name}: " + "; ".join(f"{p} = {meaning}" for p, meaning in protocols.items())]
    return "\n".join(lines)


def read_predictions(path: Path) -> list[dict]:
    predictions = []
    for number, row in jsonl_rows(existing_file(path, "predictions file"), "predictions file"):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("completion"), str):
            raise ConfigError(f'predictions file {str(path)!r} line {number} needs string fields "id" and "completion"')
        predictions.append(row)
    if not predictions:
        raise ConfigError(f"predictions file {str(path)!r} holds no predictions")
    return predictions


def check_ids(task, docs: dict, predictions: list[dict]) -> None:
    unknown = [p["id"] for p in predictions if p["id"] not in docs]
    if unknown:
        form = f"{task.id_form}, e.g." if task.id_form else "like"
        raise ConfigError(f"{len(unknown)} prediction ids are not documents of task {task.name}, e.g. "
                          f"{unknown[0]!r}; its ids are {form} {next(iter(docs))!r}")
    if not task.samples_per_id:
        repeated = [i for i, count in Counter(p["id"] for p in predictions).items() if count > 1]
        if repeated:
            raise ConfigError(f"{len(repeated)} ids appear more than once, e.g. {repeated[0]!r}; task {task.name} "
                              "scores one completion per document, so keep one line per id")


def _score(task, doc: dict, completion: str) -> dict:
    return task.score(doc, completion)


def rescore(task, predictions: list[dict], workers: int = 1) -> dict:
    """Each completion through ``Task.score`` (main thread, or ``workers`` processes), the
    records through ``Task.aggregate``."""
    docs = {d["id"]: d for d in task.docs()}
    check_ids(task, docs, predictions)
    pairs = [(docs[p["id"]], p["completion"]) for p in predictions]
    if workers == 1:
        scores = [task.score(doc, completion) for doc, completion in pairs]
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            chunk = max(1, len(pairs) // (4 * workers))
            scores = list(pool.map(_score, [task] * len(pairs), *zip(*pairs), chunksize=chunk))
    records = [{"id": p["id"], "answer": metrics.pop("answer", None), "metrics": metrics}
               for p, metrics in zip(predictions, scores)]
    metrics = task.aggregate(records)
    scored = len({p["id"] for p in predictions})
    return {"task": task.describe(), "primary_metric": task.primary_metric, "score": metrics.get(task.primary_metric),
            "metrics": metrics, "n": len(records), "coverage": {"ids_scored": scored, "ids": len(docs)},
            "records": records}


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    options, overrides = {}, []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if key in OWN_KEYS and eq:
            options[key] = value
        else:
            overrides.append(arg)
    if "predictions" not in options or not any(o.startswith("task=") for o in overrides):
        raise ConfigError(usage())
    workers = options.get("workers", "1")
    if not workers.isdigit() or int(workers) < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    options["workers"] = int(workers)
    if options.get("out"):
        out = Path(options["out"])
    else:
        task = next(o for o in overrides if o.startswith("task=")).partition("=")[2]
        predictions = Path(options["predictions"]).resolve()
        out = DEFAULT_OUT / task / f"{predictions.parent.name}-{predictions.stem}.summary.json"
    if (options.get("out") and not out.parent.is_dir()) or out.is_dir():
        raise ConfigError(f"out={out} cannot be written: {'it is a directory' if out.is_dir() else 'its directory does not exist'}")
    options["out"] = out
    return options, overrides


def main(argv: list[str]) -> int:
    try:
        options, overrides = parse_args(argv)
        predictions = read_predictions(Path(options["predictions"]))
        from hydra import compose, initialize_config_dir
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        from boe_bench.registry import instantiate

        try:
            with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
                cfg = compose(config_name="config", overrides=overrides)
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(f"bad override: {str(err).splitlines()[0]}") from None
        summary = rescore(instantiate(cfg.task, "task"), predictions, options["workers"])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = options["out"]
    out.parent.mkdir(parents=True, exist_ok=True)  # the default's directory (a given out's exists)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({"task": summary["task"]["task"], "n": summary["n"], **summary["metrics"]}))
    coverage = summary["coverage"]
    note = "" if coverage["ids_scored"] == coverage["ids"] else " (the metrics cover those ids only)"
    print(f"coverage: scored {coverage['ids_scored']} of {coverage['ids']} ids{note}", file=sys.stderr)
    print(f"summary written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
