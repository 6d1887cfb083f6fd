"""One GPU per worker process for Hydra's joblib launcher.

joblib reuses its worker processes across jobs and ``hydra.job.num`` is a position in the
sweep, not a worker slot, so ``num % n_gpus`` lets two concurrent jobs share a GPU. Instead
each worker claims a slot once, with a non-blocking ``flock`` on ``<lock_dir>/gpu<i>.lock``,
keeps the open file for its lifetime (the OS drops the lock when the worker exits), and sets
``CUDA_VISIBLE_DEVICES`` before anything touches CUDA. Use it with ``n_jobs == gpu_slots``.

This lives in an importable module on purpose: loky pickles functions of ``__main__`` by
value, which would give every job a fresh copy of the module state below and a worker would
then wait on its own stale lock.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from boe_bench.errors import ConfigError

DEFAULT_LOCK_DIR = Path(os.environ.get("BOE_GPU_LOCK_DIR", "/tmp/boe_bench_gpu_locks"))

_claimed: tuple[int, object] | None = None  # (slot, open lock file) held by this process


def claim_gpu_slot(n_slots: int, lock_dir: Path = DEFAULT_LOCK_DIR, devices: list[str] | None = None) -> int:
    """This process's slot in ``range(n_slots)`` (the same one on every later call), with
    ``CUDA_VISIBLE_DEVICES`` set to the matching device. ``devices`` defaults to the ids
    already in ``CUDA_VISIBLE_DEVICES``, else ``0..n_slots-1``."""
    global _claimed
    if _claimed is not None:
        return _claimed[0]
    if n_slots < 1:
        raise ConfigError(f"gpu_slots must be >= 1, got {n_slots}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = devices or (visible.split(",") if visible else [str(i) for i in range(n_slots)])
    if len(devices) < n_slots:
        raise ConfigError(f"gpu_slots={n_slots} but only {len(devices)} devices are visible ({','.join(devices)})")
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(n_slots):
        handle = open(lock_dir / f"gpu{slot}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[slot]
        _claimed = (slot, handle)
        return slot
    raise ConfigError(f"all {n_slots} GPU slots in {lock_dir} are held: run the joblib launcher with "
                      f"hydra.launcher.n_jobs={n_slots} (no more workers than GPUs)")


def release_gpu_slot() -> None:
    """Drop this process's claim (tests; a worker normally holds it until it exits)."""
    global _claimed
    if _claimed is not None:
        _claimed[1].close()
        _claimed = None
