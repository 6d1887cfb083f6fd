"""Benchmarks. Each module registers its task(s) under a short name; the modules are
imported on the registry's first look-up (so scoring one task's text imports no model code)."""
from boe_bench.registry import Registry

TASKS: Registry = Registry("task", package=__name__)

from boe_bench.tasks.base import Task  # noqa: E402


def build_task(name: str, **kwargs) -> Task:
    return TASKS.build(name, **kwargs)


__all__ = ["TASKS", "Task", "build_task"]
