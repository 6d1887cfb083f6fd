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
directory) and its metrics are printed; stderr says how many of the task's ids were scored and,
for code tasks, which sandbox walls stand.

Nothing scored is lost: each row is appended to ``<out>.rows.jsonl`` (flushed and synced) as
soon as it is scored, and a run that dies (Ctrl-C, a kill, a full disk, a crash) is resumed by
the same command, which scores only the rows not yet there. The summary is written whole
(to a temporary file, then renamed) and the rows file is removed after it.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import os
import sys
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
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
    try:
        for number, row in jsonl_rows(existing_file(path, "predictions file"), "predictions file"):
            if not isinstance(row.get("id"), str) or not isinstance(row.get("completion"), str):
                raise ConfigError(f'predictions file {str(path)!r} line {number} needs string fields "id" and "completion"')
            predictions.append(row)
    except UnicodeDecodeError:
        for line, raw in enumerate(path.read_bytes().split(b"\n"), 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ConfigError(f"predictions file {str(path)!r} line {line} is not UTF-8 text (byte "
                                  f"0x{raw[err.start]:02x} at column {err.start + 1}); JSON lines must be UTF-8") from None
        raise
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


def _quiet_worker() -> None:
    """Ctrl-C reaches the whole terminal's process group: the main process handles it, the
    pool's workers must not each print a traceback."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _score(task, doc: dict, completion: str) -> dict:
    return task.score(doc, completion)


class RowLog:
    """Scored rows, one JSON line each, appended and synced as they come; the first line
    names the task and the predictions they belong to, so a resume never mixes runs."""

    def __init__(self, path: Path, key: dict):
        self.path, self.key, self.done = path, key, {}
        if path.exists():
            lines = path.read_bytes().split(b"\n")
            try:
                header = json.loads(lines[0])
            except (json.JSONDecodeError, UnicodeDecodeError):
                header = None
            if header != key:
                raise ConfigError(f"{path} holds rows of another task or predictions file; remove it or choose "
                                  "another out=")
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                    self.done[int(row["index"])] = row["metrics"]
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
                    continue  # a line cut by the crash that interrupted the last run
        try:
            self.file = open(path, "ab")
            if not self.done and self.file.tell() == 0:
                self._write(key)
        except OSError as err:
            raise ConfigError(f"out={path.with_suffix('')} cannot be written: {err.strerror} ({path})") from None

    def _write(self, obj: dict) -> None:
        self.file.write((json.dumps(obj) + "\n").encode())
        self.file.flush()
        os.fsync(self.file.fileno())

    def add(self, index: int, metrics: dict) -> None:
        self._write({"index": index, "metrics": metrics})
        self.done[index] = metrics

    def close(self) -> None:
        self.file.close()
        if not self.done:  # nothing scored: no file to resume from
            self.path.unlink(missing_ok=True)


def score_rows(task, pairs: list[tuple[dict, str]], log: RowLog | None, workers: int = 1) -> list[dict]:
    """Each pair through ``Task.score`` (main thread, or ``workers`` processes), skipping and
    then reusing the rows ``log`` already holds; each new row goes to ``log`` as it is scored."""
    done = dict(log.done) if log else {}
    pending = [i for i in range(len(pairs)) if i not in done]

    def keep(index, metrics):
        done[index] = metrics
        if log:
            log.add(index, metrics)

    if workers == 1:
        for i in pending:
            keep(i, task.score(*pairs[i]))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=_quiet_worker) as pool:
            futures = {pool.submit(_score, task, *pairs[i]): i for i in pending}
            try:
                while futures:
                    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in finished:
                        keep(futures.pop(future), future.result())
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    return [done[i] for i in range(len(pairs))]


def rescore(task, predictions: list[dict], workers: int = 1, log: RowLog | None = None) -> dict:
    """Each completion through ``Task.score`` (main thread, or ``workers`` processes), the
    records through ``Task.aggregate``; with ``log``, rows are kept as they are scored."""
    docs = {d["id"]: d for d in task.docs()}
    check_ids(task, docs, predictions)
    pairs = [(docs[p["id"]], p["completion"]) for p in predictions]
    scores = [dict(m) for m in score_rows(task, pairs, log, workers)]
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
            continue
        if key.startswith("+") or key.startswith("~"):
            raise ConfigError(f"{arg!r}: the score CLI takes task=<name>, task.<option>=<value> and "
                              f"{', '.join(OWN_KEYS)}; it does not add or remove config keys")
        if key != "task" and not key.startswith("task."):
            close = difflib.get_close_matches(key, [*OWN_KEYS, "task"], n=1)
            hint = f"; did you mean {close[0]}=?" if close else ""
            raise ConfigError(f"unknown option {key!r}{hint} (the score CLI takes task=, task.<option>=, "
                              f"{'=, '.join(OWN_KEYS)}=)")
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
    if out.parent.is_dir() and not os.access(out.parent, os.W_OK):
        raise ConfigError(f"out={out} cannot be written: its directory is read-only")
    options["out"] = out
    return options, overrides


def write_whole(path: Path, text: str) -> None:
    """``text`` at ``path``, never half-written: a temporary file beside it, synced, renamed."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    log = None
    try:
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
            task = instantiate(cfg.task, "task")
            check_ids(task, {d["id"]: d for d in task.docs()}, predictions)
            out = options["out"]
            out.parent.mkdir(parents=True, exist_ok=True)  # the default's directory (a given out's exists)
            digest = hashlib.sha256(Path(options["predictions"]).read_bytes()).hexdigest()
            log = RowLog(out.with_name(out.name + ".rows.jsonl"), {"task": task.describe(), "predictions": digest})
            if log.done:
                print(f"resuming: {len(log.done)} rows already scored in {log.path}", file=sys.stderr)
            if hasattr(task, "strict"):
                from boe_bench.scoring.sandbox import isolation

                print(f"sandbox walls: {isolation()}", file=sys.stderr)
            summary = rescore(task, predictions, options["workers"], log)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        write_whole(out, json.dumps(summary, indent=2))
    except KeyboardInterrupt:
        kept = f"; {len(log.done)} scored rows are kept in {log.path}, and the same command resumes" if log else ""
        print(f"interrupted{kept}", file=sys.stderr)
        return 130
    except OSError as err:
        kept = f"; {len(log.done)} scored rows are kept in {log.path}, and the same command resumes" if log else ""
        print(f"error: cannot write {err.filename or options.get('out')}: {err.strerror}{kept}", file=sys.stderr)
        return 1
    finally:
        if log:
            log.close()
    log.path.unlink(missing_ok=True)
    print(json.dumps({"task": summary["task"]["task"], "n": summary["n"], **summary["metrics"]}))
    coverage = summary["coverage"]
    note = "" if coverage["ids_scored"] == coverage["ids"] else " (the metrics cover those ids only)"
    print(f"coverage: scored {coverage['ids_scored']} of {coverage['ids']} ids{note}", file=sys.stderr)
    print(f"summary written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
