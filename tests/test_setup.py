"""The README's first commands, the Makefile's set-up and GPU targets, as a user meets them."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def quick_start() -> str:
    section = README.split("## Quick start", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def test_quick_start_is_what_a_user_does_in_a_fresh_venv():
    assert quick_start().splitlines() == [
        "python -m venv .venv",
        "source .venv/bin/activate",
        "make setup",
        "python -m boe_bench limit=8",
    ]
    assert "/.venv/" in (ROOT / ".gitignore").read_text().split()


def test_quick_start_output_line_matches_the_real_one(tmp_path):
    """The README shows the line the quick-start job prints, out_dir (with its hash) included."""
    shown = re.search(r"^sudoku_grid: solved=.*$", README, re.M).group(0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "boe_bench", "limit=1", "progress=false"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout.strip().splitlines()[-1]
    pattern = (r"sudoku_grid: solved=[0-9.]+ n=\d+ mean_nfe=70\.0 mean_cost=70\.00 wall=[0-9.]+s -> "
               r"runs/sudoku_grid/puzzle_mdm/confidence/Lauto-sauto-bauto-seed1234-[0-9a-f]{12}")
    assert re.fullmatch(pattern, printed), printed
    assert re.fullmatch(pattern.replace("n=\\d+", "n=8"), shown), shown
    assert (tmp_path / printed.split(" -> ")[1] / "summary.json").exists()


def make(*args):
    return subprocess.run(["make", *args, f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_setup_can_take_torch_from_the_cpu_index():
    cpu = make("-n", "setup", "TORCH_INDEX=https://download.pytorch.org/whl/cpu").stdout
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in cpu
    default = make("-n", "setup").stdout
    assert "pip install torch==2.13.0" in default and "--index-url" not in default
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in README


def test_make_test_gpu_says_when_no_test_is_marked():
    result = make("test-gpu")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    # None marked (pytest's exit 5): the target says so instead of failing.
    assert "no test is marked gpu" in result.stdout or " skipped" in result.stdout
