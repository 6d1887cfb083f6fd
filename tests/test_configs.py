"""Every config composes, points at a real class, and agrees with the registries."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_object

from boe_bench.models import MODELS
from boe_bench.samplers import SAMPLERS
from boe_bench.tasks import TASKS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def options(group):
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("group", ["model", "sampler", "task"])
def test_every_option_composes_and_targets_exist(group):
    for option in options(group):
        cfg = composed(f"{group}={option}")
        target = get_object(cfg[group]["_target_"])
        assert callable(target), f"{group}/{option}"


def test_every_registered_sampler_and_task_has_a_config():
    sampler_targets = {get_object(composed(f"sampler={o}").sampler._target_) for o in options("sampler")}
    for name in SAMPLERS.names():
        assert SAMPLERS.get(name) in sampler_targets, f"sampler {name} has no config"
    task_targets = {get_object(composed(f"task={o}").task._target_) for o in options("task")}
    for name in TASKS.names():
        assert TASKS.get(name) in task_targets, f"task {name} has no config"
    model_targets = {get_object(composed(f"model={o}").model._target_) for o in options("model")}
    for name in MODELS.names():
        assert MODELS.get(name) in model_targets, f"model {name} has no config"


def test_unknown_registry_name_lists_the_known_ones():
    from boe_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="confidence"):
        SAMPLERS.get("no_such_sampler")
