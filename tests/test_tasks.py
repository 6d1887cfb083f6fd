"""Every scorer gives full marks to reference answers written as a model would, zero to
perturbed ones; every task runs end to end on the tiny model."""
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from boe_bench.runner import run
from boe_bench.scoring.math import is_equiv, normalize_final_answer
from boe_bench.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"


def test_gsm8k_reference_solutions():
    task = build_task("gsm8k", data_files={"test": str(FIX / "gsm8k_test.jsonl"), "train": str(FIX / "gsm8k_train.jsonl")})
    for doc in task.docs():
        good = task.score(doc, " " + doc["answer"] + "\n\nQuestion:")
        assert good["exact_match_strict"] == good["exact_match_flexible"] == 1.0
        gold = doc["answer"].split("####")[-1].strip().replace(",", "")
        bad = task.score(doc, f" The answer is #### {int(gold) + 1}")
        assert bad["exact_match_strict"] == bad["exact_match_flexible"] == 0.0


def test_humaneval_canonical_solutions_pass_and_perturbed_fail():
    task = build_task("humaneval", data_files=str(FIX / "humaneval.jsonl"), timeout=5.0)
    problems = [json.loads(line) for line in (FIX / "humaneval.jsonl").read_text().splitlines()]
    for doc, raw in zip(task.docs(), problems):
        assert task.score(doc, raw["canonical_solution"])["pass@1"] == 1.0, doc["id"]
        assert task.score(doc, "    return None\n")["pass@1"] == 0.0, doc["id"]


def test_mbpp_reference_code_passes_and_perturbed_fails():
    task = build_task("mbpp", data_files=str(FIX / "mbpp.jsonl"), timeout=5.0)
    docs = task.docs()
    assert [d["id"] for d in docs][:2] == ["mbpp-11", "mbpp-12"] and len(task.shots()) == 3
    assert task.prompt_text(docs[0]).count("[DONE]") == 3 and task.prompt_text(docs[0]).endswith("[BEGIN]\n")
    for doc in docs:
        assert task.score(doc, doc["code"])["pass@1"] == 1.0, doc["id"]
        assert task.score(doc, "def unrelated():\n    pass")["pass@1"] == 0.0, doc["id"]


def test_math500_reference_solutions_in_minerva_format():
    task = build_task("math500", data_files=str(FIX / "math500.jsonl"))
    for doc in task.docs():
        completion = f" {doc['solution']}\nFinal Answer: The final answer is ${doc['answer']}$. I hope it is correct."
        assert task.score(doc, completion)["exact_match"] == 1.0, doc["id"]
        wrong = " So.\nFinal Answer: The final answer is $\\frac{9999}{7}$. I hope it is correct."
        assert task.score(doc, wrong)["exact_match"] == 0.0, doc["id"]


def test_minerva_normalisation_and_equivalence():
    assert normalize_final_answer("x = \\boxed{10}") == "10"
    assert normalize_final_answer("$1,000$") == "1000"
    assert is_equiv("\\frac{1}{2}", "0.5") and not is_equiv("\\frac{1}{3}", "0.5")


def test_countdown_reference_equations_and_perturbations():
    task = build_task("countdown")
    docs = task.docs()
    assert len(docs) == 256
    doc = {"numbers": [30, 100, 93], "target": 23}
    assert task.score(doc, "</reasoning>\n<answer>\n\\boxed{100 - 93 + 30 - 14}\n</answer>")["accuracy"] == 0.0
    assert task.score(doc, "<answer>\\boxed{30 - (100 - 93)}</answer>")["accuracy"] == 1.0
    assert task.score(doc, "<answer>30 - (100 - 93) = 23</answer>")["accuracy"] == 1.0
    assert task.score(doc, "\\boxed{30 - 100 + 93}")["accuracy"] == 1.0
    assert task.score(doc, "\\boxed{30 - 100 + 93 + 0}")["accuracy"] == 0.0  # an extra number
    assert task.score(doc, "\\boxed{__import__('os')}")["accuracy"] == 0.0


TASK_DATA = {
    "gsm8k": [f"task.data_files.test={FIX / 'gsm8k_test.jsonl'}", f"task.data_files.train={FIX / 'gsm8k_train.jsonl'}"],
    "humaneval": [f"task.data_files={FIX / 'humaneval.jsonl'}"],
    "mbpp": [f"task.data_files={FIX / 'mbpp.jsonl'}"],
    "math500": [f"task.data_files={FIX / 'math500.jsonl'}"],
    "sudoku": [],
    "countdown": [],
}


@pytest.mark.parametrize("task", sorted(TASK_DATA))
def test_task_runs_end_to_end_on_tiny(task, tmp_path):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "model=tiny", f"task={task}", "limit=2", "gen_length=32", "steps=16", "block_length=32",
            "progress=false", f"out_dir={tmp_path}", *TASK_DATA[task]])
    summary = run(cfg)
    assert summary["n"] == 2 and summary["score"] is not None and summary["mean_nfe"] <= 16
    assert summary["task"]["task"] == task


def test_rescoring_cli_uses_the_runner_scorers(tmp_path):
    import subprocess
    import sys

    docs = [json.loads(line) for line in (FIX / "gsm8k_test.jsonl").read_text().splitlines()][:3]
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text("".join(json.dumps({"id": f"gsm8k-{i}", "completion": " " + d["answer"] if i < 2 else " 0"}) + "\n"
                                   for i, d in enumerate(docs)))
    out = tmp_path / "summary.json"
    result = subprocess.run([sys.executable, "-m", "boe_bench.score", "task=gsm8k", f"predictions={predictions}",
                             f"out={out}", *TASK_DATA["gsm8k"]], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    assert summary["n"] == 3 and summary["score"] == pytest.approx(2 / 3)
    bad = subprocess.run([sys.executable, "-m", "boe_bench.score", "task=gsm8k", f"predictions={tmp_path / 'none.jsonl'}"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
