"""Denoisers. Each module registers builder functions under a short model name."""
import importlib
import pkgutil

from boe_bench.registry import Registry

MODELS: Registry = Registry("model")

from boe_bench.models.base import Denoiser, FrozenState  # noqa: E402

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_model(name: str, **kwargs) -> Denoiser:
    return MODELS.build(name, **kwargs)


__all__ = ["MODELS", "Denoiser", "FrozenState", "build_model"]
