"""MATH-500 under lm-eval's minerva_math500 protocol: the math_verify metric beside the
Minerva exact match, and its absence (with a logged note) without the package."""
import builtins
import logging
from pathlib import Path

import pytest

from boe_bench.scoring import math as math_scoring
from boe_bench.tasks import build_task

FIX = Path(__file__).resolve().parent / "fixtures"
TASK = build_task("math500", data_files=str(FIX / "math500.jsonl"))


def minerva_completion(solution: str, final: str) -> str:
    return f" {solution}\nFinal Answer: The final answer is ${final}$. I hope it is correct.\n\nProblem:"


def test_prompt_has_four_minerva_exemplars_and_stops_at_problem():
    prompt = TASK.prompt_text(TASK.docs()[0])
    assert prompt.count("Problem:\n") == 5 and prompt.count("I hope it is correct.") == 4
    assert prompt.endswith(TASK.docs()[0]["problem"] + "\n\nSolution:") and TASK.until == ("Problem:",)


def test_math_verify_agrees_on_reference_solutions():
    pytest.importorskip("math_verify", reason="math-verify is an optional extra (boe_bench[math])")
    for doc in TASK.docs():
        good = TASK.score(doc, minerva_completion(doc["solution"], doc["answer"]))
        assert good["exact_match"] == good["math_verify"] == 1.0, doc["id"]
        bad = TASK.score(doc, minerva_completion("So it is $\\boxed{\\frac{9999}{7}}$.", "\\frac{9999}{7}"))
        assert bad["exact_match"] == bad["math_verify"] == 0.0, doc["id"]


def test_math_verify_absent_without_the_package(monkeypatch, caplog):
    real_import = builtins.__import__

    def no_math_verify(name, *args, **kwargs):
        if name.startswith("math_verify"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_math_verify)
    monkeypatch.setattr(math_scoring, "_MISSING_NOTED", [])
    doc = TASK.docs()[0]
    with caplog.at_level(logging.WARNING):
        metrics = TASK.score(doc, minerva_completion(doc["solution"], doc["answer"]))
    assert "math_verify" not in metrics and metrics["exact_match"] == 1.0
    assert "math-verify package is not installed" in caplog.text
