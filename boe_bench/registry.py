"""Name -> class registries for models, samplers and tasks.

Hydra builds runs from `_target_` in configs; registries serve library users and the
lm-eval entry point, which select components by short names. A test keeps the two in step.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

from boe_bench.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """``package``: import its modules (which register themselves) on the first lookup, not
    when the package is imported, so one entry's module loads without every other's imports."""

    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        self._entries: dict[str, type[T]] = {}
        self._package = package

    def _load(self) -> None:
        if self._package is not None:
            package, self._package = importlib.import_module(self._package), None
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{package.__name__}.{module.name}")

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = cls
            cls.registry_name = name
            return cls

        return add

    def get(self, name: str) -> type[T]:
        self._load()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._entries[name]

    def build(self, name: str, **kwargs) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries


def instantiate(node, what: str):
    """Hydra instantiation of a ``_target_`` config node whose failures surface as one
    ConfigError sentence (here, not in the runner, so building a task imports no torch)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise ConfigError(f"cannot build the {what}: {str(err).splitlines()[0]}") from err
