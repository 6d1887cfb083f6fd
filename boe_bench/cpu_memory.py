"""Keep freed memory in the process on the CPU, so that a decoding step does not page-fault.

PyTorch's CPU allocator has no cache: every tensor comes from ``malloc`` and goes back with
``free``. glibc returns large freed blocks to the kernel (``munmap`` above its mmap
threshold, and a trim of the heap's top once more than the trim threshold lies free there),
and the next step's tensors of the same sizes fault their pages in again, each 4 KiB page
zeroed by the kernel. On ``cpu-bench`` at L = 1028 a Confidence step faulted about 8,200
pages (33 MB) this way and a BoE step 9,100-11,800. That kernel time counts in the thread's
CPU time, and its price depends on the host, not on the step: on the shared VM it moved
whole-decode ratios from run to run.

``keep_freed_memory`` fixes glibc's thresholds (``mallopt``) at the values its dynamic rule
would only reach later or never: blocks up to 32 MiB (the most glibc allows) come from the
heap, the heap is trimmed only once 1 GiB lies free at its top, and it grows 64 MiB at a
time. Freed memory is then reused by the next step, which faults nothing. The process keeps
the pages of its largest step (its peak resident size, not more); blocks above 32 MiB are
still mapped and unmapped one by one. Measured on the 2-core VM (``cpu-bench``, thread CPU
time, one torch thread): a step at L = 1028 went from 168-174 ms to 154-157 ms for Confidence
(no faults left). In the cost benchmarks, which run the variants' steps side by side in one
process, the faults did not fall evenly on the variants (results/bench/boe_decode_malloc.md,
six alternated runs each way): with the system's thresholds Confidence's decode took 4-8%
longer in 5 of 6 pairs and BoE's ``masked`` about as long, so ``masked`` at rho 0.25 read
1.097-1.142x Confidence (repeats spread 2-10%); with freed memory kept, 1.136-1.152x
(spread 2-4%).

Other C libraries (musl, macOS) have no ``mallopt``; there it does nothing. A user who set
glibc's ``MALLOC_*`` variables, or ``BOE_BENCH_MALLOC=system``, keeps the system's behaviour
(``BOE_BENCH_MALLOC=keep``, or unset, keeps freed memory; any other value is refused, so that a
misspelt opt-out is not silently ignored).
"""
from __future__ import annotations

import ctypes
import os

from boe_bench.errors import ConfigError

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20))
OPT_OUT = "BOE_BENCH_MALLOC"

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process (see the module docstring); True where they
    are in force, False where this C library has no ``mallopt`` or the user chose otherwise.
    Raises ``ConfigError`` for a ``BOE_BENCH_MALLOC`` it does not know."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def keep_freed_memory_or_fail() -> bool:
    """``keep_freed_memory`` for a command line with no handler of ``ConfigError`` of its own
    (the trainers, the testbed): a ``BOE_BENCH_MALLOC`` it does not know ends the command in one
    sentence, exit 2 (``experiments.config.fail``)."""
    try:
        return keep_freed_memory()
    except ConfigError as err:
        from boe_bench.experiments.config import fail  # Hydra's compose API: only on this path

        fail(str(err))


def _apply() -> bool:
    choice = os.environ.get(OPT_OUT, "keep").strip().lower() or "keep"
    if choice not in ("keep", "system"):
        raise ConfigError(f"{OPT_OUT} must be 'keep' (the default) or 'system' (glibc's own thresholds), "
                          f"got {os.environ[OPT_OUT]!r}")
    if choice == "system" or any(key.startswith("MALLOC_") for key in os.environ):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: another libc's mallopt (if any) takes other codes
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)


def kept() -> bool:
    """Whether ``keep_freed_memory`` is in force in this process (for labelling measurements)."""
    return bool(_applied)
