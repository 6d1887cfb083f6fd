"""Countdown (d1 cd3): real problems solved by search, written as a model would answer,
score 1; perturbed answers score 0; d1's extraction fallbacks hold."""
import itertools

import pytest

from boe_bench.tasks import build_task
from boe_bench.tasks.countdown import extract_equation

TASK = build_task("countdown")


def solve(numbers: list[int], target: int) -> str | None:
    """An expression using each number once that evaluates to target (both bracketings)."""
    for a, b, c in itertools.permutations(numbers):
        for op1, op2 in itertools.product("+-*/", repeat=2):
            for expression in (f"({a} {op1} {b}) {op2} {c}", f"{a} {op1} ({b} {op2} {c})"):
                try:
                    if abs(eval(expression) - target) < 1e-9:
                        return expression
                except ZeroDivisionError:
                    pass
    return None


def d1_answer(expression: str) -> str:
    return f"\nI combine the numbers.\n</reasoning>\n<answer>\n\\boxed{{{expression}}}\n</answer><|eot_id|>"


SOLVED = [(doc, solve(doc["numbers"], doc["target"])) for doc in TASK.docs()[:20]]


def test_packaged_data_and_prompt():
    docs = TASK.docs()
    assert len(docs) == 256 and all(len(d["numbers"]) == 3 for d in docs)
    prompt = TASK.prompt_text(docs[0])
    assert "\\boxed{a + b * c}Respond in the following format" in prompt
    assert prompt.endswith(f"\n\nNumbers: {docs[0]['numbers']}\nTarget: {docs[0]['target']}")


@pytest.mark.parametrize("index", range(20))
def test_reference_solutions_full_marks_perturbed_zero(index):
    doc, expression = SOLVED[index]
    if expression is None:
        pytest.skip(f"no two-operator solution found for {doc['numbers']} -> {doc['target']}")
    assert TASK.score(doc, d1_answer(expression))["accuracy"] == 1.0
    assert TASK.score(doc, d1_answer(f"{expression} = {doc['target']}"))["accuracy"] == 1.0
    assert TASK.score(doc, d1_answer(expression + " + 1"))["accuracy"] == 0.0          # an extra number
    a, b, c = doc["numbers"]
    assert TASK.score(doc, d1_answer(f"{a} + {b}"))["accuracy"] == 0.0                # a number unused
    off_by_one = f"({expression}) + {c} - {c}"  # right value, but c used twice
    assert TASK.score(doc, d1_answer(off_by_one))["accuracy"] == 0.0


def test_most_fixture_problems_are_solvable():
    # Guards the search above: if it silently found nothing, the test above would only skip.
    assert sum(expression is not None for _, expression in SOLVED) >= 15


def test_d1_fallback_chain():
    # No box at all: d1 scores the whole text, so numbers in the reasoning invalidate it.
    assert extract_equation("<reasoning>try 7</reasoning><answer>30 - 7</answer>") == \
        "<reasoning>try 7</reasoning><answer>30 - 7</answer>"
    # Unclosed box: the <answer> block is used.
    assert extract_equation("\\boxed{30 - 7 <answer> 30 - 7 </answer>") == "30 - 7"
    # LaTeX operators and a trailing "= target".
    assert extract_equation("\\boxed{(30 \\times 2) \\div 4 = 15}") == "(30 * 2) / 4"
    doc = {"numbers": [30, 2, 4], "target": 15}
    assert TASK.score(doc, "\\boxed{(30 \\times 2) \\div 4}")["accuracy"] == 1.0
    assert TASK.score({"numbers": [5, 5, 3], "target": 1}, "\\boxed{3 / (5 - 5)}")["accuracy"] == 0.0  # 1/0
    assert TASK.score(doc, "\\boxed{30 ** 2 // 4}")["accuracy"] == 0.0   # numbers fine, value wrong
