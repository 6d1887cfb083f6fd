"""One evaluation job: config in, ``examples.jsonl`` and ``summary.json`` out.

Records are appended (and fsync'ed) batch by batch, keyed by document id, so a job killed at
any point resumes by re-running the same command: finished documents are skipped, and a line
cut off by the kill is removed from the file and its batch redone. ``summary.json`` and
``run_config.json`` are replaced atomically (temp file + rename), so a kill never leaves
them half written.

Everything a user can get wrong is checked before the model loads and before anything is
written: settings, ``out_dir``, data files and every document, the sampler's options, the
hub's reachability. ``run_config.json`` (the configuration the records were made with) is
written only once the job is about to generate, so a refused command never blocks its fix.
Heavy modules (torch, the model and sampler registries) are imported only after the checks
that do not need them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from boe_bench.cpu_memory import keep_freed_memory
from boe_bench.errors import ConfigError
from boe_bench.registry import instantiate  # noqa: F401 (also imported from here)
from boe_bench.samplers.options import check_sampler_config

EXAMPLES = "examples.jsonl"
SUMMARY = "summary.json"
RUN_CONFIG = "run_config.json"
# Set (in the returned summary only, never on disk) when the job had nothing left to do: its
# summary, wall times included, is the original run's.
ALREADY_COMPLETE = "already_complete"
# Keys that may change between a run and its resumption without changing its records. Every
# other key is part of the configuration hash, which ends the default out_dir, so changing
# any result-changing option (rho, empty_cells, data files, batch_size...) selects a fresh
# directory, and re-running the identical command finds its own.
# paper_rows: the report's row labels, which change nothing generated.
RESUMABLE_KEYS = ("limit", "out_dir", "run_name", "progress", "wandb", "shard", "gpu_slots", "hydra", "paper_rows")
# Top-level knobs and what they must be (None: the task's default).
INT_SETTINGS = {"gen_length": True, "steps": True, "block_length": True, "limit": True, "seed": False,
                "batch_size": False}



def shard_docs(docs: list[dict], limit: int | None, index: int = 0, count: int = 1) -> list[dict]:
    """The first ``limit`` documents, then every ``count``-th from ``index`` (strided shards
    balance variable generation lengths and their union is exactly the unsharded set)."""
    return [doc for _, doc in shard_positions(docs, limit, index, count)]


def shard_positions(docs: list[dict], limit: int | None, index: int = 0, count: int = 1) -> list[tuple[int, dict]]:
    """``shard_docs`` with each document's position in the unsharded run (its seed offset,
    so a shard draws what the whole run draws for the same document)."""
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard.index must be in [0, shard.count), got {index} of {count}")
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit must be a positive number of examples, got {limit}")
        docs = docs[:limit]
    return list(enumerate(docs))[index::count]


def shard_name(filename: str, cfg: DictConfig) -> str:
    """``examples.jsonl`` for a whole run, ``examples.shard2-of-8.jsonl`` for one shard of it:
    shards share the run's directory and never write the same file."""
    if cfg.shard.count == 1:
        return filename
    stem, suffix = filename.rsplit(".", 1)
    return f"{stem}.shard{cfg.shard.index}-of-{cfg.shard.count}.{suffix}"


def _parse_lines(path: Path) -> tuple[list[dict], bool]:
    """Complete records of an examples file, and whether the file holds nothing else."""
    if not path.exists():
        return [], True
    data = path.read_bytes()
    records, clean = [], data.endswith(b"\n") or not data
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            clean = False
            continue
        if isinstance(record, dict) and "id" in record:
            records.append(record)
        else:
            clean = False
    return records, clean


def read_records(path: Path) -> list[dict]:
    """Complete records of an examples file; a torn line (killed mid-write) is skipped."""
    return _parse_lines(path)[0]


def repair_records(path: Path) -> list[dict]:
    """``read_records``, and the file rewritten (atomically) without the lines a kill tore,
    so what a resumed job leaves behind is valid JSON lines throughout."""
    records, clean = _parse_lines(path)
    if not clean:
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
    return records


def _disk_error(path: Path, err: OSError) -> ConfigError:
    return ConfigError(f"cannot write {str(path)!r}: {err.strerror or err}; the records written before are kept, "
                       "and the same command resumes from them once it can write")


def append_records(path: Path, records: list[dict]) -> None:
    """Append whole lines or nothing: a write that fails (a full disk) is cut back off."""
    with path.open("ab", buffering=0) as f:
        size = f.tell()
        try:
            data = memoryview("".join(json.dumps(r) + "\n" for r in records).encode())
            while data:
                data = data[f.write(data):]
            os.fsync(f.fileno())
        except OSError as err:
            try:
                f.truncate(size)
            except OSError:
                pass  # a torn last line is dropped by repair_records on resume
            raise _disk_error(path, err) from None


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, fsync, then rename over ``path``: a
    reader (or a re-run after a kill) sees the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _disk_error(path, err) from None


def read_json(path: Path) -> dict | None:
    """A JSON file's content; None when it is missing or unreadable (torn by an older version)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def generation_config(cfg: DictConfig) -> dict:
    """Every option that can change a record: the config without ``RESUMABLE_KEYS``."""
    out = {}
    for key in cfg:
        if key in RESUMABLE_KEYS:
            continue
        node = cfg._get_node(key)
        out[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else cfg[key]
    return out


def config_hash(cfg: DictConfig) -> str:
    """Twelve hex digits of the SHA-256 of ``generation_config``: the last part of the default
    out_dir (``${config_hash:}``) and ``summary.json``'s ``config_hash``."""
    return hashlib.sha256(json.dumps(generation_config(cfg), sort_keys=True, default=str).encode()).hexdigest()[:12]


def check_settings(cfg: DictConfig) -> None:
    """The top-level knobs have the right types (before anything is imported or written)."""
    for key, nullable in INT_SETTINGS.items():
        value = cfg.get(key)
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            allowed = "an integer or null" if nullable else "an integer"
            raise ConfigError(f"{key} must be {allowed}, got {value!r}")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    for key in ("index", "count"):
        value = cfg.shard.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"shard.{key} must be an integer, got {value!r}")
    if cfg.shard.count < 1 or not 0 <= cfg.shard.index < cfg.shard.count:
        raise ConfigError(f"shard.index must be in [0, shard.count), got {cfg.shard.index} of {cfg.shard.count}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError(f"limit must be a positive number of examples, got {cfg.limit}")


def check_out_dir(out_dir: Path) -> None:
    """``out_dir`` is (or can become) a writable directory."""
    for parent in (out_dir, *out_dir.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"out_dir {str(out_dir)!r} cannot be a directory: {str(parent)!r} is a file")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"out_dir {str(out_dir)!r} is not writable (no write permission on {str(parent)!r})")
            return


def data_file_paths(node) -> list[str]:
    """The local data files a task config names (``data_files``: a path or a dict of them)."""
    files = node.get("data_files") if isinstance(node, DictConfig) else None
    if files is None:
        return []
    values = OmegaConf.to_container(files, resolve=True) if OmegaConf.is_config(files) else files
    values = values.values() if isinstance(values, dict) else values if isinstance(values, list) else [values]
    return [str(v) for v in values if v is not None]


def check_data_files(task_cfg: DictConfig) -> None:
    """Every named data file exists and is a file, checked before any heavy import."""
    for path in data_file_paths(task_cfg):
        if not Path(path).exists():
            raise ConfigError(f"data file {path!r} does not exist")
        if not Path(path).is_file():
            raise ConfigError(f"data file {path!r} is not a file")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the HF hub's endpoint opens within ``timeout`` seconds."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def offline_if_hub_unreachable() -> bool:
    """Switch the HF libraries to offline mode (their cache only) when the hub cannot be
    reached, before they are imported: otherwise each hub access retries for tens of seconds
    before failing. Returns whether the switch was made."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False  # the hub may be reachable only through the proxy: leave it to the libraries
    if hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    return True


def check_docs(task, docs: list[dict]) -> None:
    """Every document can be prompted and has the fields the others have, and the first
    can be scored: a bad data row is refused before anything is generated."""
    if not docs:
        return
    expected = set(docs[0])
    for position, doc in enumerate(docs):
        missing = sorted(expected - set(doc))
        if missing:
            raise ConfigError(f"document {doc.get('id', position)!r} (row {position + 1}) lacks the field(s) "
                              f"{', '.join(map(repr, missing))} that the first row has; fix the data file")
        try:
            task.prompt_text(doc)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise ConfigError(f"document {doc.get('id', position)!r} (row {position + 1}) cannot be prompted "
                              f"({type(err).__name__}: {err}); fix the data file") from err
    try:
        task.score(docs[0], "")
    except (KeyError, TypeError, AttributeError, IndexError) as err:
        raise ConfigError(f"document {docs[0].get('id', 0)!r} cannot be scored ({type(err).__name__}: {err}); "
                          f"fix the data file") from err


def check_resumable(out_dir: Path, cfg: DictConfig, has_records: bool) -> None:
    """Refuse to mix records of different configurations in one directory. A directory
    without records holds nothing to protect: its run_config is simply replaced."""
    previous = read_json(out_dir / RUN_CONFIG)
    if not has_records or previous is None:
        return
    current = json.loads(json.dumps(generation_config(cfg), default=str))
    if previous != current:
        changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
        raise ConfigError(
            f"{out_dir} holds records of a different configuration (differs in: {', '.join(changed)}); "
            f"choose another out_dir"
        )


def write_run_config(out_dir: Path, cfg: DictConfig) -> None:
    write_atomic(out_dir / RUN_CONFIG, json.dumps(generation_config(cfg), indent=2, sort_keys=True, default=str))


def environment_info() -> dict:
    import torch
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


def record_job_wall(record: dict) -> float:
    """The job time a record carries (its share of the session that wrote it); records of
    older versions carry none and count their generation time."""
    return record.get("job_wall_s", record["accounting"]["wall_s"])


def summarise(task, records: list[dict], cfg: DictConfig, job_wall_s: float, session_wall_s: float | None = None) -> dict:
    """``job_wall_s`` covers every session of the job (a resumed job adds up its sessions);
    ``session_wall_s`` the last one alone."""
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
        "session_wall_s": job_wall_s if session_wall_s is None else session_wall_s,
        "schedule": dataclasses.asdict(resolve_schedule(cfg, task)),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": environment_info(),
        "config_hash": config_hash(cfg),
    }


def resolve_schedule(cfg: DictConfig, task):
    """The command's gen_length/steps/block_length, each falling back to the task's default."""
    from boe_bench.samplers.schedule import Schedule

    chosen = {key: cfg[key] if cfg[key] is not None else task.default_schedule[key] for key in task.default_schedule}
    return Schedule(**chosen)


def finished_summary(summary_path: Path, docs: list[dict], done: set, cfg: DictConfig) -> dict | None:
    """The stored summary when it covers exactly these documents under this configuration:
    a resumed sweep then skips the job without loading its model or rescoring."""
    if any(d["id"] not in done for d in docs):
        return None
    summary = read_json(summary_path)
    if summary is None:
        return None
    same = summary.get("config_hash") == config_hash(cfg)
    return summary if same and summary.get("n") == len(docs) else None


def run(cfg: DictConfig) -> dict:
    started = time.perf_counter()
    # Checks that need no heavy import and write nothing: the settings, then the schedule and
    # the sampler's options (from the config and the task's class alone: no torch, no data,
    # no hub), then the paths and the data.
    check_settings(cfg)
    task = instantiate(cfg.task, "task")  # imports only the task's own module; reads no data
    schedule = resolve_schedule(cfg, task)
    check_sampler_config(cfg.sampler)
    out_dir = Path(cfg.out_dir)
    check_out_dir(out_dir)
    check_data_files(cfg.task)
    offline_if_hub_unreachable()
    if cfg.get("gpu_slots"):
        from boe_bench.dispatch.gpuslot import claim_gpu_slot

        claim_gpu_slot(cfg.gpu_slots)
    positioned = shard_positions(task.docs(), cfg.limit, cfg.shard.index, cfg.shard.count)
    docs = [doc for _, doc in positioned]
    check_docs(task, docs)
    # From here on torch is imported (the sampler's module).
    sampler = instantiate(cfg.sampler, "sampler")
    keep_freed_memory()  # no page faults from step to step on a CPU (cpu_memory)

    examples_path, summary_path = out_dir / shard_name(EXAMPLES, cfg), out_dir / shard_name(SUMMARY, cfg)
    existing = read_records(examples_path)
    check_resumable(out_dir, cfg, has_records=bool(existing))
    repair_records(examples_path)  # drop lines a kill tore, so the file is valid JSON lines again
    if existing and read_json(out_dir / RUN_CONFIG) is None:  # torn by an older version: restore it
        write_run_config(out_dir, cfg)
    done = {r["id"] for r in existing}
    if (finished := finished_summary(summary_path, docs, done, cfg)) is not None:
        return {**finished, ALREADY_COMPLETE: True}
    # Fixed batches by position, so a resumed job redoes a torn batch exactly as it was.
    batches = [positioned[i : i + cfg.batch_size] for i in range(0, len(positioned), cfg.batch_size)]
    pending = [batch for batch in batches if any(doc["id"] not in done for _, doc in batch)]

    if pending:
        import torch
        from tqdm import tqdm

        from boe_bench.samplers.base import StopCriterion

        model = instantiate(cfg.model, "model")
        out_dir.mkdir(parents=True, exist_ok=True)
        write_run_config(out_dir, cfg)
        torch.manual_seed(cfg.seed)
        stop = StopCriterion(model.tokenizer, task.until, model.eos_ids)
        progress = tqdm(total=len(docs), initial=sum(d["id"] in done for d in docs),
                        desc=f"{task.name}/{sampler.name}", disable=not cfg.progress, dynamic_ncols=True)
        last_write = started
        for batch in pending:
            prompts = [task.prompt_ids(doc, model.tokenizer) for _, doc in batch]
            # Each row seeded by its document's position in the unsharded run, so a resumed job,
            # a shard or another batch size draws what an uninterrupted whole run draws for it.
            init = [task.initial_generation(doc, model.tokenizer) for _, doc in batch]
            output = sampler.generate(model, prompts, schedule, stop=stop,
                                      seed=[cfg.seed + position for position, _ in batch],
                                      gen_init=None if init[0] is None else init)
            records = []
            for (_, doc), text, accounting in zip(batch, output.texts, output.accounting):
                if doc["id"] in done:  # written before a kill tore the rest of its batch
                    continue
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
            # This session's time since its previous write (model loading included), shared
            # by the batch's records: summed over records it adds up every session's work.
            now = time.perf_counter()
            for record in records:
                record["job_wall_s"] = (now - last_write) / len(records)
            last_write = now
            append_records(examples_path, records)
            progress.update(len(records))
        progress.close()
    else:
        last_write = started

    records = read_records(examples_path)
    wanted = {d["id"] for d in docs}
    records = [r for r in records if r["id"] in wanted]
    now = time.perf_counter()
    job_wall_s = sum(record_job_wall(r) for r in records) + (now - last_write)
    summary = summarise(task, records, cfg, job_wall_s, session_wall_s=now - started)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / RUN_CONFIG).exists():
        write_run_config(out_dir, cfg)
    write_atomic(summary_path, json.dumps(summary, indent=2))
    if cfg.get("wandb") and cfg.wandb.enabled:
        from boe_bench.integrations.wandb_logger import log_run

        log_run(cfg, summary, records)
    return summary
