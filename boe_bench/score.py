"""Rescore saved generations, from any tool, with the runner's own scorers.

    python -m boe_bench.score task=<name> predictions=<file.jsonl> [out=<summary.json>] [workers=4]
                              [task.data_files=<local copy>] [task.<option>=<value> ...]

``predictions`` is JSON lines, one generation per line::

    {"id": "<document id>", "completion": "<generated text, without the prompt>"}

Ids are the task's document ids ("gsm8k-0", "HumanEval/0", "mbpp-11", ...); an
``examples.jsonl`` written by the runner qualifies as it is. Several lines with the same id
are several samples of one problem (code tasks then report pass@k for every configured k up
to the number of samples). Completions may run past the task's stop sequences; scorers cut
them where lm-eval would. Every id must belong to the task.

The task is composed from ``configs/task/<name>.yaml`` with Hydra, so ``task.*`` overrides
behave as in ``python -m boe_bench``; each completion goes through ``Task.score`` and the
records through ``Task.aggregate``, exactly as in the runner. The summary (task, metrics, n,
per-record results) is written to ``out`` (default: ``<predictions>.summary.json``) and its
metrics are printed.
"""
from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from boe_bench.errors import ConfigError
from boe_bench.runner import instantiate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
OWN_KEYS = ("predictions", "out", "workers")
USAGE = "usage: python -m boe_bench.score task=<name> predictions=<file.jsonl> [out=<file>] [workers=N] [task.<key>=...]"


def read_predictions(path: Path) -> list[dict]:
    if not path.exists():
        raise ConfigError(f"predictions file {str(path)!r} does not exist")
    predictions = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{number} is not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("completion"), str):
            raise ConfigError(f'{path}:{number} needs string fields "id" and "completion"')
        predictions.append(row)
    if not predictions:
        raise ConfigError(f"predictions file {str(path)!r} holds no predictions")
    return predictions


def rescore(task, predictions: list[dict], workers: int = 1) -> dict:
    docs = {d["id"]: d for d in task.docs()}
    unknown = [p["id"] for p in predictions if p["id"] not in docs]
    if unknown:
        raise ConfigError(f"{len(unknown)} prediction ids are not documents of task {task.name}, e.g. {unknown[0]!r}")
    # Threads suffice: scorers are pure, and code scorers wait on their own subprocesses.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        scores = list(pool.map(lambda p: task.score(docs[p["id"]], p["completion"]), predictions))
    records = [{"id": p["id"], "answer": metrics.pop("answer", None), "metrics": metrics}
               for p, metrics in zip(predictions, scores)]
    metrics = task.aggregate(records)
    return {"task": task.describe(), "primary_metric": task.primary_metric, "score": metrics.get(task.primary_metric),
            "metrics": metrics, "n": len(records), "records": records}


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    options, overrides = {}, []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if key in OWN_KEYS and eq:
            options[key] = value
        else:
            overrides.append(arg)
    if "predictions" not in options or not any(o.startswith("task=") for o in overrides):
        raise ConfigError(USAGE)
    if not options.get("workers", "1").isdigit():
        raise ConfigError(f"workers must be a positive integer, got {options['workers']!r}")
    return options, overrides


def main(argv: list[str]) -> int:
    try:
        options, overrides = parse_args(argv)
        predictions = read_predictions(Path(options["predictions"]))
        try:
            with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
                cfg = compose(config_name="config", overrides=overrides)
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(f"bad override: {str(err).splitlines()[0]}") from None
        summary = rescore(instantiate(cfg.task, "task"), predictions, int(options.get("workers", 1)))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(options.get("out") or Path(options["predictions"]).with_suffix(".summary.json"))
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({"task": summary["task"]["task"], "n": summary["n"], **summary["metrics"]}))
    print(f"summary written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
