"""Every experiment overlay composes, keeps the paper's schedule, and sweeps only configs that exist."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
# Sweep options other helpers are still writing; an experiment that needs one is skipped, by name.
PENDING = {("sampler", "remdm"), ("sampler", "remdm_llada"), ("task", "owt")}
# Not LLaDA's blocks of 32: MDLM decodes the whole sequence as one block, the puzzle model the grid.
OWN_BLOCKS = {"table4", "figure4_puzzle"}


def options(group):
    return {p.stem for p in (CONFIGS / group).glob("*.yaml")}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_its_sweep_names_exist(experiment):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    missing = {(group, name.strip()) for group in ("sampler", "task", "model") if group in params
               for name in str(params[group]).split(",") if name.strip() not in options(group)}
    for group in ("model", "task"):
        chosen = cfg.hydra.runtime.choices[group]
        if chosen not in options(group):
            missing.add((group, chosen))
    assert missing <= PENDING, f"{experiment} sweeps configs that do not exist: {sorted(missing - PENDING)}"
    if missing:
        pytest.skip(f"{experiment} waits for configs being written: {sorted(missing)}")
    if experiment not in OWN_BLOCKS:
        assert cfg.block_length == 32
        steps = [int(s) for s in str(params.get("steps", cfg.steps)).split(",")]
        assert all(cfg.gen_length % s == 0 or s % (cfg.gen_length // cfg.block_length) == 0 for s in steps)
    if "gen_length" in params:  # two tokens per step at every swept length
        assert cfg.steps == cfg.gen_length // 2
