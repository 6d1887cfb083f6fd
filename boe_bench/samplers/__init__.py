"""Unmasking samplers. Each module registers its sampler(s) under a short name; the modules
load on the first registry lookup (or the first use of a torch name below), so the schedule
and the option checks (``schedule``, ``options``) are importable without torch: a command's
settings are refused before torch loads."""
from boe_bench.registry import Registry

SAMPLERS: Registry = Registry("sampler", package=__name__)

from boe_bench.samplers.schedule import Schedule  # noqa: E402

_FROM_BASE = ("GenerationOutput", "Sampler", "StopCriterion")


def __getattr__(name: str):
    if name in _FROM_BASE:
        from boe_bench.samplers import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_sampler(name: str, **kwargs):
    return SAMPLERS.build(name, **kwargs)


__all__ = ["SAMPLERS", "GenerationOutput", "Sampler", "Schedule", "StopCriterion", "build_sampler"]
