"""Rescore saved generations with the runner's own scorers.

    python -m boe_bench.score task=gsm8k predictions=preds.jsonl [out=summary.json] [task.<option>=...]

``predictions`` is JSON lines, one per example: {"id": "<document id>", "completion": "<text>"}
(ids as the task names them, e.g. "gsm8k-0", "HumanEval/0", "mbpp-11"; an examples.jsonl
written by the runner qualifies). Every id must belong to the task. The summary (metrics,
n, protocol) is printed and written to ``out`` (default: beside the predictions).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from boe_bench.errors import ConfigError
from boe_bench.runner import instantiate, read_records

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def rescore(task, predictions: list[dict]) -> dict:
    docs = {d["id"]: d for d in task.docs()}
    unknown = [p["id"] for p in predictions if p["id"] not in docs]
    if unknown:
        raise ConfigError(f"{len(unknown)} prediction ids are not documents of task {task.name}, e.g. {unknown[0]!r}")
    records = []
    for prediction in predictions:
        metrics = task.score(docs[prediction["id"]], prediction["completion"])
        records.append({"id": prediction["id"], "answer": metrics.pop("answer", None), "metrics": metrics})
    return {"task": task.describe(), "primary_metric": task.primary_metric,
            "score": task.aggregate(records).get(task.primary_metric), "metrics": task.aggregate(records),
            "n": len(records), "records": records}


def main(argv: list[str]) -> int:
    options = dict(arg.split("=", 1) for arg in argv if arg.split("=", 1)[0] in ("predictions", "out"))
    overrides = [arg for arg in argv if arg.split("=", 1)[0] not in ("predictions", "out")]
    try:
        if "predictions" not in options:
            raise ConfigError("usage: python -m boe_bench.score task=<name> predictions=<file.jsonl> [out=<file>]")
        path = Path(options["predictions"])
        if not path.exists():
            raise ConfigError(f"predictions file {str(path)!r} does not exist")
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        summary = rescore(instantiate(cfg.task, "task"), read_records(path))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(options.get("out", path.with_suffix(".summary.json")))
    out.write_text(json.dumps(summary, indent=2))
    print(f"{summary['task']['task']}: {summary['primary_metric']}={summary['score']} n={summary['n']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
