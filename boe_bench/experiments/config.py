"""Settings of the experiment modules: ``configs/<module>/<preset>.yaml``, read with Hydra.

Each module declares its settings as a plain dataclass (the schema: names and types) and keeps
their values in ``configs/<module>/default.yaml``, other presets beside it. The command line is
Hydra overrides on the preset, ``--config-name=<preset>`` picks another::

    python -m boe_bench.experiments.testbed seeds=[0] samplers=[confidence,boe] out=reports/x
    python -m boe_bench.experiments.diagnostics_sweep --config-name=exact

Whatever a user gets wrong (an unknown option or preset, a value of the wrong type, a value the
module refuses) ends in one sentence on stderr and exit code 2, as in ``python -m boe_bench``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TypeVar

from omegaconf import OmegaConf

from boe_bench.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXIT_CONFIG = 2
T = TypeVar("T")


def presets(module: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / module).glob("*.yaml"))


def load(module: str, schema: type[T], argv: list[str] | None = None, doc: str = "") -> T:
    """The settings of ``module`` from its preset and the overrides in ``argv``, checked against
    ``schema`` (and by its ``check()`` when it has one). ``--help`` prints ``doc`` and the
    composed settings."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        name, overrides = split_argv(argv)
        if name not in presets(module):
            raise ConfigError(f"unknown {module} preset {name!r}; known: {', '.join(presets(module))}")
        settings = compose(module, name, overrides, schema)
        if hasattr(settings, "check"):
            settings.check()
    except ConfigError as err:
        fail(str(err))
    except Exception as err:  # noqa: BLE001 - a user's mistake in one sentence, a fault re-raised
        sentence = one_sentence(module, err)
        if sentence is None:
            raise
        fail(sentence)
    if {"-h", "--help"} & set(argv):
        print(f"{doc.strip()}\n\nSettings (configs/{module}/{name}.yaml with your overrides; presets: "
              f"{', '.join(presets(module))}):\n\n{OmegaConf.to_yaml(OmegaConf.structured(settings))}")
        sys.exit(0)
    return settings


def split_argv(argv: list[str]) -> tuple[str, list[str]]:
    name, overrides, rest = "default", [], iter(argv)
    for arg in rest:
        if arg == "--config-name":
            name = next(rest, "")
        elif arg.startswith("--config-name="):
            name = arg.split("=", 1)[1]
        elif arg in ("-h", "--help"):
            continue
        elif arg.startswith("-") or "=" not in arg:
            raise ConfigError(f"cannot read {arg!r}: give settings as key=value (--help lists them)")
        else:
            overrides.append(arg)
    return name, overrides


def compose(module: str, name: str, overrides: list[str], schema: type[T]) -> T:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS / module), version_base="1.3"):
        cfg = hydra_compose(config_name=name, overrides=overrides)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg))


def one_sentence(module: str, err: BaseException) -> str | None:
    """The user's mistake behind a Hydra/OmegaConf error, in one sentence; None for a fault."""
    from hydra.errors import ConfigCompositionException, OverrideParseException
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    unknown = None
    if isinstance(err, ConfigCompositionException) and first_line.startswith("Could not override '"):
        unknown = first_line.split("'")[1]
    elif isinstance(err, ConfigKeyError):
        unknown = getattr(err, "full_key", None) or first_line
    if unknown:
        return f"unknown option {unknown!r}: configs/{module}/ has no such key (--help lists the options)"
    if isinstance(err, ValidationError) and getattr(err, "full_key", None):
        return f"bad value for {err.full_key!r}: {first_line}"
    if isinstance(err, OverrideParseException):
        return f"cannot parse the command line: {first_line}"
    if isinstance(err, (ConfigCompositionException, OmegaConfBaseException)):
        return first_line
    return None


def fail(sentence: str) -> None:
    print(f"error: {sentence}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)
