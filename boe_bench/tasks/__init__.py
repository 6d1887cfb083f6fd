"""Benchmarks. Each module registers its task(s) under a short name; the modules load on
the first registry lookup, so building one task (a Hydra ``_target_``) imports only its own
module (checking a data file then needs no torch)."""
from boe_bench.registry import Registry

TASKS: Registry = Registry("task", package=__name__)

from boe_bench.tasks.base import Task  # noqa: E402


def build_task(name: str, **kwargs) -> Task:
    return TASKS.build(name, **kwargs)


__all__ = ["TASKS", "Task", "build_task"]
