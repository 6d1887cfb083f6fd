"""Merge the shards of one run into its ``examples.jsonl`` and ``summary.json``.

    python -m boe_bench.merge runs/gsm8k/llada_8b_base/boe/L256-s128-b32-seed1234

Checks that the shards together hold every expected document exactly once (none missing,
none duplicated), then summarises the union with the task's own aggregate.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from boe_bench.errors import ConfigError
from boe_bench.runner import EXAMPLES, SUMMARY, instantiate, read_records, shard_docs, summarise


def merge(out_dir: Path) -> dict:
    summaries = sorted(out_dir.glob("summary.shard*-of-*.json"))
    if not summaries:
        raise ConfigError(f"{out_dir} holds no shard summaries (summary.shard<i>-of-<n>.json)")
    shard_summaries = [json.loads(p.read_text()) for p in summaries]
    cfg = OmegaConf.create(shard_summaries[0]["config"])
    count = cfg.shard.count
    present = sorted(s["config"]["shard"]["index"] for s in shard_summaries)
    if present != list(range(count)):
        raise ConfigError(f"{out_dir}: shards {sorted(set(range(count)) - set(present))} of {count} have not finished")
    records = [r for path in sorted(out_dir.glob("examples.shard*-of-*.jsonl")) for r in read_records(path)]
    ids = [r["id"] for r in records]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    task = instantiate(cfg.task, "task")
    expected = [d["id"] for d in shard_docs(task.docs(), cfg.limit)]
    missing = sorted(set(expected) - set(ids))
    extra = sorted(set(ids) - set(expected))
    if duplicated or missing or extra:
        raise ConfigError(f"{out_dir}: shard records do not cover the run exactly: {len(duplicated)} duplicated, "
                          f"{len(missing)} missing, {len(extra)} unexpected (e.g. {(duplicated + missing + extra)[0]!r})")
    order = {doc_id: i for i, doc_id in enumerate(expected)}
    records.sort(key=lambda r: order[r["id"]])
    (out_dir / EXAMPLES).write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg.shard.index, cfg.shard.count = 0, 1
    summary = summarise(task, records, cfg, max(s["job_wall_s"] for s in shard_summaries))
    summary["merged_shards"] = count
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m boe_bench.merge <run directory>", file=sys.stderr)
        return 2
    try:
        summary = merge(Path(argv[0]))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"merged {summary['merged_shards']} shards: {summary['primary_metric']}={summary['score']} n={summary['n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
