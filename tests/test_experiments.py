"""Every experiment overlay composes, keeps the paper's schedule, sweeps only configs that exist,
and runs exactly the paper's rows."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
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
    assert not missing, f"{experiment} sweeps configs that do not exist: {sorted(missing)}"
    if experiment not in OWN_BLOCKS:
        assert cfg.block_length == 32
        steps = [int(s) for s in str(params.get("steps", cfg.steps)).split(",")]
        assert all(cfg.gen_length % s == 0 or s % (cfg.gen_length // cfg.block_length) == 0 for s in steps)
    if "gen_length" in params:  # two tokens per step at every swept length
        assert cfg.steps == cfg.gen_length // 2
    if experiment == "table5":  # "All methods use one-token-per-step sampling"
        assert cfg.steps == cfg.gen_length == 128


@pytest.mark.parametrize("experiment", ["table2", "table3", "table4", "table5", "figure4"])
def test_the_sweep_runs_the_papers_rows_in_its_order(experiment):
    """paper_rows (the report's rows) name configs that exist and the
    sweep (plus Table 4's SEDD command) runs each row once, in the paper's order, and no other."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    rows = {label: str(spec).partition("@") for label, spec in cfg.paper_rows.items()}
    for label, (sampler, _, models) in rows.items():
        assert sampler in options("sampler"), label
        for model in filter(None, models.split("|")):
            assert model in options("model"), (label, model)
    swept = [s.strip() for s in str(cfg.hydra.sweeper.params.sampler).split(",")]
    default_model = cfg.hydra.runtime.choices.model
    on_default = [sampler for sampler, _, models in rows.values() if not models or default_model in models.split("|")]
    assert swept == on_default
    others = {label: spec for label, spec in rows.items() if spec[2] and default_model not in spec[2].split("|")}
    if experiment == "table4":  # the SEDD row: `make table4`'s second command, sampler=sedd_analytic model=sedd_small
        assert others == {"SEDD (absorb)": ("sedd_analytic", "@", "sedd_small|tiny_sedd")}
        assert "sampler=sedd_analytic" in (CONFIGS.parent / "Makefile").read_text()
    else:
        assert not others
