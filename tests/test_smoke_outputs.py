"""Issue 24: smoke runs and default outputs never write the committed results/. Checked on
what the commands would do (Make's dry run, the composed configs), not by running them."""
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]


def make_dry_run(*args) -> str:
    return subprocess.run(["make", "-n", *args], capture_output=True, text=True, cwd=ROOT, check=True).stdout


@pytest.mark.parametrize("target", ["table2", "table3", "table4", "table5", "figure4", "figure4_puzzle", "testbed",
                                    "diagnostics_sweep", "code_eval_parity"])
def test_make_targets_write_results_only_when_asked(target):
    smoke = make_dry_run(target, "MODEL=tiny", "LIMIT=2")
    assert "results" not in smoke.replace("results/paper", ""), smoke
    assert "progress=false" not in smoke  # each cell shows its progress bar
    asked = make_dry_run(target, "MODEL=tiny", "LIMIT=2", "OUT=results")
    assert "out=results" in asked or "--out results/testbed" in asked, asked


def test_tiny_sweeps_run_torch_on_one_thread():
    """Two threads spin-wait for each other over a tiny model's forward on a loaded machine (README
    "LIMIT and time"); a real model keeps torch's default."""
    for target in ("table5", "table4", "figure4"):
        tiny = [line for line in make_dry_run(target, "MODEL=tiny", "LIMIT=2").splitlines() if "-m boe_bench -m" in line]
        assert tiny and all("OMP_NUM_THREADS=1 " in line for line in tiny), tiny
        assert "OMP_NUM_THREADS" not in make_dry_run(target)


def test_one_limit_story():
    """The CPU smoke size is LIMIT=2 in make help, the README and the configs' comments."""
    help_text = subprocess.run(["make", "help"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    texts = [help_text, (ROOT / "README.md").read_text(), *(p.read_text() for p in (ROOT / "configs").rglob("*.yaml"))]
    words = {w.strip("`.,;:()") for text in texts for w in text.split()}
    assert {w for w in words if w.startswith("LIMIT=")} - {"LIMIT=N"} == {"LIMIT=2"}
    assert "LIMIT=2" in help_text


@pytest.mark.parametrize("config, overrides", [
    ("config", ["model=tiny", "task=gsm8k"]),
    ("config", ["experiment=table5", "model=tiny", "+profile=tiny"]),
    ("diagnose", ["model=tiny", "task=gsm8k"]),
])
def test_default_out_dirs_are_untracked(config, overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name=config, overrides=overrides, return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    out_dir = str(cfg.out_dir)
    assert out_dir.startswith("runs/"), out_dir
    ignored = subprocess.run(["git", "check-ignore", "-q", out_dir], cwd=ROOT).returncode == 0
    assert ignored, f"{out_dir} is not ignored by git"
