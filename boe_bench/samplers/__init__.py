"""Unmasking samplers. Each module registers its sampler(s) under a short name."""
import importlib
import pkgutil

from boe_bench.registry import Registry

SAMPLERS: Registry = Registry("sampler")

from boe_bench.samplers.base import GenerationOutput, Sampler, StopCriterion  # noqa: E402
from boe_bench.samplers.schedule import Schedule  # noqa: E402

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_sampler(name: str, **kwargs) -> Sampler:
    return SAMPLERS.build(name, **kwargs)


__all__ = ["SAMPLERS", "GenerationOutput", "Sampler", "Schedule", "StopCriterion", "build_sampler"]
