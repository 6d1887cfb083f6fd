"""What every cost benchmark shares: random LLaDA-shaped models, the clock, interleaved
repeats and their spread, the machine's name and load, and where results are written.

The clock. On a CPU the primary time is the calling thread's CPU time (``time.thread_time``)
with torch limited to one thread, so every kernel runs on the timed thread: other jobs on a
shared machine delay it (wall clock) but do not add to it. Wall clock is kept beside it;
where the two disagree the machine was loaded. On a GPU the primary time is CUDA events
(device work between two points of the stream), wall clock beside it.

Repeats. ``interleaved`` runs the variants in turn, in order on even repeats and reversed
on odd ones (ABBA), so a drift in load or clock speed hits every variant alike; a ratio is
taken per repeat against the baseline of that repeat, and reported with its spread,
(max - min) / median over repeats. A spread above ``SPREAD_LIMIT`` means the ratio is not
resolved: ``verdict`` says so instead of "met".

Whole decodes on a CPU interleave finer: ``lockstep`` runs the variants' decodes side by side,
one step of each at a time in ABBA order, so Confidence's step i and BoE's step i are timed
within a second of each other. On a shared VM a neighbour slows this thread's CPU time too
(caches, memory bandwidth, a shared core): one Confidence step of fixed work measured
138-320 ms within one decode, and such spells last seconds. Whole decodes 35 s apart took
them unevenly: on one host, ratios spread 19-23% over 5 repeats and read 1.04 where runs side
by side read 1.21. Side by side, repeats still spread 7-14% (spells within a decode do not
average out), but two runs' medians agreed within 0.012 (results/bench/boe_decode.md).
``memory_load`` makes a neighbour's memory traffic on purpose, to see how much a ratio moves
with it (``--memory-load`` in ``bench.decode``).

Page faults. glibc hands large freed blocks back to the kernel, so a step faulted its
tensors' pages in again (about 8,000 per Confidence step at L = 1028), kernel time that counts
in thread CPU time, and side by side in one process they did not fall evenly on the variants.
``setup_device`` keeps freed memory in the process on a CPU
(``boe_bench.cpu_memory``, as the evaluation runner does), and the rows say so in their
machine. Six GSM8K-shaped runs each way, alternated on one day
(results/bench/boe_decode_malloc.md): with the system's thresholds Confidence's decode took
4-8% longer in 5 of 6 pairs and BoE's about as long, so `masked` read 1.097-1.142x
(repeats spread 2-10%); with freed memory kept, 1.136-1.152x (spread 2-4%).
"""
from __future__ import annotations

import csv
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from boe_bench.cpu_memory import keep_freed_memory, kept
from boe_bench.errors import ConfigError

SPREAD_LIMIT = 0.10
DEFAULT_DIR = Path("runs/bench")  # git-ignored: smoke runs never touch results/

SHAPES = {
    # LLaDA-8B: 32 layers, d=4096, 32 heads (no GQA), MLP 12288, vocab 126464.
    "llada-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, intermediate_size=12288,
                     vocab_size=126464),
    # LLaDA's layout at a CPU size: the cost benchmarks' CPU model.
    "cpu-bench": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                      vocab_size=4096),
    "cpu-small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                      vocab_size=512),
    # For tests of the benchmark code itself.
    "test": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=128),
}


class BenchError(ValueError):
    """A bad benchmark argument: printed as one sentence, exit 2."""


def fail_cleanly(main: Callable[[], None]) -> None:
    """Run a benchmark's main; a ``BenchError`` (or a ``ConfigError`` of a setting it reads,
    such as ``BOE_BENCH_MALLOC``) ends as one sentence on stderr, exit 2."""
    try:
        main()
    except (BenchError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def random_model(shape: str, device: str, dtype: torch.dtype, seed: int = 0):
    """A random-initialised LLaDA-shaped ``TransformerDenoiser`` (speed only, never quality)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from boe_bench.models.tiny import build_char_tokenizer
    from boe_bench.models.transformer import TransformerDenoiser

    if shape not in SHAPES:
        raise BenchError(f"unknown shape {shape!r}; choose one of {', '.join(sorted(SHAPES))}")
    config = LlamaConfig(**SHAPES[shape], num_key_value_heads=SHAPES[shape]["num_attention_heads"],
                         max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            hf = LlamaForCausalLM(config).eval()
        finally:
            torch.set_default_dtype(previous)
    return TransformerDenoiser(hf, build_char_tokenizer(), mask_id=config.vocab_size - 1, eos_ids=(),
                               name=f"random-{shape}")


def setup_device(device: str, threads: int = 1) -> tuple[bool, torch.dtype]:
    """(on a GPU, the benchmark dtype); CPU runs use ``threads`` torch threads (1: every
    kernel on the timed thread, which thread CPU time needs)."""
    gpu = device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        raise BenchError(f"--device {device} asked for, but torch sees no CUDA device here")
    if not gpu and device != "cpu":
        raise BenchError(f"--device must be cpu or cuda[:n], got {device!r}")
    if not gpu:
        torch.set_num_threads(threads)
        keep_freed_memory()
    return gpu, torch.bfloat16 if gpu else torch.float32


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Reading:
    """One timed call: primary seconds (thread CPU on a CPU, CUDA events on a GPU), wall
    seconds, whatever the call returned and, from ``lockstep``, the thread CPU seconds of each
    slice between two pauses (``steps``)."""

    seconds: float
    wall_s: float
    value: object = None
    steps: list[float] | None = None


def timed(fn: Callable[[], object], device: str) -> Callable[[], Reading]:
    """``fn`` as a callable returning a ``Reading`` of one call."""
    gpu = str(device).startswith("cuda")

    def run() -> Reading:
        sync(device)
        if gpu:
            start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start_event.record()
        wall, cpu = time.perf_counter(), time.thread_time()
        value = fn()
        if gpu:
            end_event.record()
        sync(device)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        primary = start_event.elapsed_time(end_event) / 1000 if gpu else cpu
        return Reading(primary, wall, value)

    return run


@contextmanager
def memory_load(megabytes: int):
    """For the block's duration, a second process that copies a buffer of ``megabytes`` to
    another and back without pause (one torch thread, so on a 2-core VM it takes the core the
    timed thread leaves free): the memory traffic a neighbour makes on a shared host, made on
    purpose, to measure how a cost ratio moves with it. Yields the process (None for 0: no
    load)."""
    if megabytes <= 0:
        yield None
        return
    code = ("import sys, torch\ntorch.set_num_threads(1)\nn = int(sys.argv[1]) * 2 ** 18\n"
            "a, b = torch.ones(n), torch.empty(n)\nwhile True:\n    b.copy_(a)\n    a.copy_(b)\n")
    load = subprocess.Popen([sys.executable, "-c", code, str(megabytes)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(3)  # until torch is imported and the buffers are touched
        if load.poll() is not None:
            raise BenchError(f"the memory load process exited with {load.returncode} (--memory-load {megabytes})")
        yield load
    finally:
        load.kill()
        load.wait()


def abba_order(labels: list[str], repeat: int) -> list[str]:
    """The variants' order in repeat ``repeat``: as given on even repeats, reversed on odd."""
    return list(labels) if repeat % 2 == 0 else list(reversed(labels))


def interleaved(runs: dict[str, Callable[[], Reading]], repeats: int, warmup: Callable[[str], None] | None = None,
                progress: Callable[[int, str, Reading], None] | None = None) -> dict[str, list[Reading]]:
    """Readings of every run, ``repeats`` each, interleaved ABBA. ``warmup(label)`` runs
    once per variant before (default: one untimed call of the run)."""
    if repeats < 1:
        raise BenchError(f"--repeats must be >= 1, got {repeats}")
    for label, run in runs.items():
        warmup(label) if warmup else run()
    readings: dict[str, list[Reading]] = {label: [] for label in runs}
    for repeat in range(repeats):
        for label in abba_order(list(runs), repeat):
            readings[label].append(runs[label]())
            if progress:
                progress(repeat, label, readings[label][-1])
    return readings


class _Turns:
    """One lockstep run's thread: it runs only between ``go`` and its next ``pause``, and
    times those slices itself (thread CPU time, wall clock)."""

    def __init__(self, run: Callable[[Callable[[], None]], object]):
        self.run, self.go, self.back = run, threading.Event(), threading.Event()
        self.steps: list[float] = []
        self.wall = self.mark = self.wall_mark = 0.0  # totals; where the current slice began
        self.value, self.error, self.done = None, None, False
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _start_slice(self) -> None:
        self.go.wait()
        self.go.clear()
        self.mark, self.wall_mark = time.thread_time(), time.perf_counter()

    def _end_slice(self) -> None:
        self.steps.append(time.thread_time() - self.mark)
        self.wall += time.perf_counter() - self.wall_mark

    def pause(self) -> None:
        self._end_slice()
        self.back.set()
        self._start_slice()

    def _main(self) -> None:
        self._start_slice()
        try:
            self.value = self.run(self.pause)
        except BaseException as error:  # handed to the scheduling thread, which raises it
            self.error = error
        self._end_slice()
        self.done = True
        self.back.set()

    def turn(self) -> None:
        """Let the run go until its next pause (or its end)."""
        self.back.clear()
        self.go.set()
        self.back.wait()


def lockstep(runs: dict[str, Callable[[Callable[[], None]], object]], repeats: int,
             progress: Callable[[int, str, Reading], None] | None = None) -> dict[str, list[Reading]]:
    """Readings of every run, ``repeats`` each, the runs interleaved slice by slice (CPU).

    A run takes a ``pause`` callable and calls it between its steps (a decode: before each
    step). In a repeat every run gets a thread of its own, and only one thread runs at a
    time: each run goes until its next pause, the runs in ABBA order (in order on even
    rounds, reversed on odd ones), until all have ended. Each thread times its own slices,
    so a run's ``seconds`` is the sum of its slices' thread CPU time and ``wall_s`` of their
    wall time; waiting for its turn costs it nothing. Warm-up: one whole call of every run,
    pauses ignored. An exception in a run is raised here once the repeat has stopped."""
    if repeats < 1:
        raise BenchError(f"--repeats must be >= 1, got {repeats}")
    for run in runs.values():
        run(lambda: None)
    readings: dict[str, list[Reading]] = {label: [] for label in runs}
    for repeat in range(repeats):
        turns = {label: _Turns(run) for label, run in runs.items()}
        for t in turns.values():
            t.thread.start()
        round_ = 0
        while not all(t.done for t in turns.values()):
            for label in abba_order([k for k, t in turns.items() if not t.done], round_):
                turns[label].turn()
                if turns[label].error is not None:  # the others stay parked (daemon threads)
                    raise turns[label].error
            round_ += 1
        for label, t in turns.items():
            t.thread.join()
            readings[label].append(Reading(sum(t.steps), t.wall, t.value, t.steps))
            if progress:
                progress(repeat, label, readings[label][-1])
    return readings


def floor_ratio(readings: list[Reading], baseline: list[Reading]) -> float:
    """The ratio with neighbours' interference taken out as far as the repeats allow: each
    slice's fastest repeat, summed, over the baseline's (``lockstep`` readings whose runs
    pause alike in every repeat; NaN otherwise). Interference only adds time, but not to
    every operator alike, so this can read on either side of the per-repeat ratios."""
    counts = {len(r.steps or ()) for r in (*readings, *baseline)}
    if len(counts) != 1 or 0 in counts:
        return float("nan")
    fastest = lambda rs: sum(map(min, zip(*(r.steps for r in rs))))  # noqa: E731
    return fastest(readings) / fastest(baseline)


def spread(values: list[float]) -> float:
    """(max - min) / median: 0 for one value."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else float("nan")


def ratio_stats(readings: list[Reading], baseline: list[Reading]) -> dict:
    """Per-repeat ratios of primary and wall seconds to the baseline's same repeat."""
    ratios = [a.seconds / b.seconds for a, b in zip(readings, baseline)]
    walls = [a.wall_s / b.wall_s for a, b in zip(readings, baseline)]
    secs = [r.seconds for r in readings]
    return {
        "repeats": len(readings),
        "seconds_median": round(statistics.median(secs), 6), "seconds_min": round(min(secs), 6),
        "seconds_max": round(max(secs), 6),
        "wall_median_s": round(statistics.median(r.wall_s for r in readings), 6),
        "ratio_median": round(statistics.median(ratios), 4), "ratio_min": round(min(ratios), 4),
        "ratio_max": round(max(ratios), 4), "ratio_spread": round(spread(ratios), 4),
        "wall_ratio_median": round(statistics.median(walls), 4),
        "flag": "spread>10%" if spread(ratios) > SPREAD_LIMIT else "",
    }


def verdict(ratio: float, limit: float, ratio_spread: float, low: float | None = None,
            high: float | None = None) -> str:
    """'met' / 'MISSED by x' for a measured ratio against a target, unless its repeats spread
    too much to tell (then met or missed only where every repeat, ``low`` .. ``high``, agrees)."""
    if ratio != ratio:
        return "not measured"
    if ratio_spread > SPREAD_LIMIT:
        if high is not None and high <= limit:
            return f"met by every repeat (spread {ratio_spread:.0%})"
        if low is not None and low > limit:
            return f"MISSED by every repeat (spread {ratio_spread:.0%}; median over by {ratio - limit:.3f})"
        return f"not resolved (repeats spread {ratio_spread:.0%} > {SPREAD_LIMIT:.0%})"
    return "met" if ratio <= limit else f"MISSED by {ratio - limit:.3f}"


def machine_name(device: str, given: str | None = None) -> str:
    """The machine a row was measured on: ``given`` (the user's name for it), else the GPU's
    name or the CPU model and core count; on a CPU where ``setup_device`` kept freed memory
    in the process, it says so (``cpu_memory``: a CPU row's time depends on it)."""
    gpu = str(device).startswith("cuda")
    if given:
        name = given
    elif gpu:
        name = torch.cuda.get_device_name()
    else:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        name = f"{name}, {os.cpu_count()} cores"
    return name + (", freed memory kept" if not gpu and kept() else "")


def load_average() -> str:
    """The 1/5/15-minute load averages, as one field."""
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return ""


def out_path(given: str | None, default_name: str) -> Path:
    """Where a benchmark writes: ``--out`` if given, else ``runs/bench/<default_name>``."""
    path = Path(given) if given else DEFAULT_DIR / default_name
    if path.exists() and path.is_dir():
        raise BenchError(f"--out {path} is a directory; give a file name ending in .csv")
    if path.suffix != ".csv":
        raise BenchError(f"--out must name a .csv file (the markdown goes beside it), got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def merge_csv(rows: list[dict], path: Path, fields: list[str], key: Callable[[dict], tuple]) -> list[dict]:
    """Rows of this run replace the file's rows with the same ``key`` (e.g. machine and
    batch); all others are kept. Written to a temporary file, then renamed into place."""
    ours = {key(r) for r in rows}
    kept = []
    if path.exists():
        with path.open() as f:
            kept = [r for r in csv.DictReader(f) if key(r) not in ours]
    merged = kept + rows
    write_csv(merged, path, fields)
    return merged


def write_csv(rows: list[dict], path: Path, fields: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_results(out: Path, text: str, rows: list[dict] | None = None, fields: list[str] | None = None) -> None:
    """A benchmark's outputs: its CSV ``out`` (unless the caller merged it already: ``rows``
    None) and the markdown ``text`` beside it (same name, ``.md``), both written atomically."""
    if rows is not None:
        write_csv(rows, out, fields)
    write_text(out.with_suffix(".md"), text)
    print(f"wrote {out} and {out.with_suffix('.md')}")


def read_csv(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"no CSV at {path}")
    with path.open() as f:
        return list(csv.DictReader(f))
