"""Benchmarks. Each module registers its task(s) under a short name."""
import importlib
import pkgutil

from boe_bench.registry import Registry

TASKS: Registry = Registry("task")

from boe_bench.tasks.base import Task  # noqa: E402

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_task(name: str, **kwargs) -> Task:
    return TASKS.build(name, **kwargs)


__all__ = ["TASKS", "Task", "build_task"]
