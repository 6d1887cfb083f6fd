"""One evaluation job: config in, ``examples.jsonl`` and ``summary.json`` out.

Records are appended (and fsync'ed) batch by batch, keyed by document id, so a job killed at
any point resumes by re-running the same command: finished documents are skipped, a line
cut off by the kill is dropped and its document redone.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from boe_bench.errors import ConfigError
from boe_bench.registry import instantiate  # noqa: F401 (also imported from here)
from boe_bench.samplers.base import StopCriterion
from boe_bench.samplers.schedule import Schedule

EXAMPLES = "examples.jsonl"
SUMMARY = "summary.json"
RUN_CONFIG = "run_config.json"
# Keys that may change between a run and its resumption without invalidating its records.
# Keys that do not change what is generated (paper_rows: the report's row labels).
RESUMABLE_KEYS = ("limit", "batch_size", "out_dir", "progress", "wandb", "shard", "gpu_slots", "paper_rows")


def shard_docs(docs: list[dict], limit: int | None, index: int = 0, count: int = 1) -> list[dict]:
    """The first ``limit`` documents, then every ``count``-th from ``index`` (strided shards
    balance variable generation lengths and their union is exactly the unsharded set)."""
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard.index must be in [0, shard.count), got {index} of {count}")
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit must be a positive number of examples, got {limit}")
        docs = docs[:limit]
    return docs[index::count]


def shard_name(filename: str, cfg: DictConfig) -> str:
    """``examples.jsonl`` for a whole run, ``examples.shard2-of-8.jsonl`` for one shard of it:
    shards share the run's directory and never write the same file."""
    if cfg.shard.count == 1:
        return filename
    stem, suffix = filename.rsplit(".", 1)
    return f"{stem}.shard{cfg.shard.index}-of-{cfg.shard.count}.{suffix}"


def read_records(path: Path) -> list[dict]:
    """Complete records of an examples file; a torn last line (killed mid-write) is dropped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_records(path: Path, records: list[dict]) -> None:
    # A line torn by a kill has no newline; start a fresh one so it stays the only casualty.
    torn = path.exists() and path.stat().st_size > 0 and path.read_bytes()[-1:] != b"\n"
    with path.open("a") as f:
        f.write("\n" * torn + "".join(json.dumps(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def generation_config(cfg: DictConfig) -> dict:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in resolved.items() if k not in RESUMABLE_KEYS}


def check_resumable(out_dir: Path, cfg: DictConfig) -> None:
    """Refuse to mix records of different configurations in one directory."""
    path = out_dir / RUN_CONFIG
    current = generation_config(cfg)
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != current:
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise ConfigError(
                f"{out_dir} holds records of a different configuration (differs in: {', '.join(changed)}); "
                f"choose another out_dir"
            )
    else:
        path.write_text(json.dumps(current, indent=2, sort_keys=True))


def environment_info() -> dict:
    import transformers

    try:
        revision = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                  cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        revision = None
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "git_revision": revision,
        "device": device,
        # Which GPUs a launcher (Ray, SLURM, joblib slots) gave this job.
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "hostname": platform.node(),
    }


def summarise(task, records: list[dict], cfg: DictConfig, job_wall_s: float) -> dict:
    metrics = task.aggregate(records)
    n = len(records)
    mean = lambda key: sum(r["accounting"][key] for r in records) / n if n else None  # noqa: E731
    return {
        "task": task.describe(),
        "primary_metric": task.primary_metric,
        "score": metrics.get(task.primary_metric),
        "metrics": metrics,
        "n": n,
        "mean_nfe": mean("nfe"),
        "mean_cost_fwd_equiv": mean("cost_fwd_equiv"),
        "generation_wall_s": sum(r["accounting"]["wall_s"] for r in records),
        "job_wall_s": job_wall_s,
        "schedule": dataclasses.asdict(resolve_schedule(cfg, task)),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": environment_info(),
        "config_hash": hashlib.sha256(json.dumps(generation_config(cfg), sort_keys=True).encode()).hexdigest()[:12],
    }


def resolve_schedule(cfg: DictConfig, task) -> Schedule:
    """The command's gen_length/steps/block_length, each falling back to the task's default."""
    chosen = {key: cfg[key] if cfg[key] is not None else task.default_schedule[key] for key in task.default_schedule}
    return Schedule(**chosen)


def finished_summary(summary_path: Path, docs: list[dict], done: set, cfg: DictConfig) -> dict | None:
    """The stored summary when it covers exactly these documents under this configuration:
    a resumed sweep then skips the job without loading its model or rescoring."""
    if not summary_path.exists() or any(d["id"] not in done for d in docs):
        return None
    summary = json.loads(summary_path.read_text())
    same = summary.get("config_hash") == hashlib.sha256(json.dumps(generation_config(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return summary if same and summary.get("n") == len(docs) else None


def run(cfg: DictConfig) -> dict:
    started = time.perf_counter()
    if cfg.get("gpu_slots"):
        from boe_bench.dispatch.gpuslot import claim_gpu_slot

        claim_gpu_slot(cfg.gpu_slots)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    task = instantiate(cfg.task, "task")
    schedule = resolve_schedule(cfg, task)
    check_resumable(out_dir, cfg)
    torch.manual_seed(cfg.seed)

    sampler = instantiate(cfg.sampler, "sampler")
    docs = shard_docs(task.docs(), cfg.limit, cfg.shard.index, cfg.shard.count)
    examples_path, summary_path = out_dir / shard_name(EXAMPLES, cfg), out_dir / shard_name(SUMMARY, cfg)
    done = {r["id"] for r in read_records(examples_path)}
    pending = [(i, d) for i, d in enumerate(docs) if d["id"] not in done]
    if (finished := finished_summary(summary_path, docs, done, cfg)) is not None:
        return finished

    if pending:
        model = instantiate(cfg.model, "model")
        stop = StopCriterion(model.tokenizer, task.until, model.eos_ids)
        progress = tqdm(total=len(docs), initial=len(docs) - len(pending), desc=f"{task.name}/{sampler.name}",
                        disable=not cfg.progress, dynamic_ncols=True)
        for start in range(0, len(pending), cfg.batch_size):
            batch = pending[start : start + cfg.batch_size]
            prompts = [task.prompt_ids(doc, model.tokenizer) for _, doc in batch]
            # Seeded by the first document's position, so a resumed job draws what an
            # uninterrupted one would have drawn for the same batch.
            init = [task.initial_generation(doc, model.tokenizer) for _, doc in batch]
            output = sampler.generate(model, prompts, schedule, stop=stop, seed=cfg.seed + batch[0][0],
                                      gen_init=None if init[0] is None else init)
            records = []
            for (_, doc), text, accounting in zip(batch, output.texts, output.accounting):
                metrics = task.score(doc, text)
                records.append({
                    "id": doc["id"],
                    "prompt": task.prompt_text(doc),
                    "completion": text,
                    "answer": metrics.pop("answer", None),
                    "metrics": metrics,
                    "correct": metrics.get(task.primary_metric),
                    "accounting": accounting.to_dict(),
                })
            append_records(examples_path, records)
            progress.update(len(batch))
        progress.close()

    records = read_records(examples_path)
    wanted = {d["id"] for d in docs}
    records = [r for r in records if r["id"] in wanted]
    summary = summarise(task, records, cfg, time.perf_counter() - started)
    summary_path.write_text(json.dumps(summary, indent=2))
    if cfg.get("wandb") and cfg.wandb.enabled:
        from boe_bench.integrations.wandb_logger import log_run

        log_run(cfg, summary, records)
    return summary
