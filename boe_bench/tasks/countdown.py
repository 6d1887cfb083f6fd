"""Countdown with three numbers, d1's protocol (dllm-reasoning/d1 eval/countdown.py).

0-shot chat prompt, ``<reasoning>`` prefilled, 256 problems. The expression is the last
``\\boxed{}`` (else the ``<answer>`` content, else the whole text); it must use exactly the
given numbers, only arithmetic characters, and evaluate (without builtins) to the target
within 1e-5.
"""
from __future__ import annotations

import re
from importlib import resources

from boe_bench.scoring.math import last_boxed_only_string, remove_boxed
from boe_bench.tasks import TASKS
from boe_bench.tasks.base import Task, read_records

SYSTEM_PROMPT = (
    "Using only the provided numbers, create an arithmetic expression that evaluates to exactly the provided target "
    "number. You may use the operations +, -, *, and / as needed, but each number must be used exactly once. Think "
    "step-by-step. After reasoning, provide only your final expression inside \\boxed{} tags without including an "
    "equals sign or the target number. For example: \\boxed{a + b * c}Respond in the following format:\n<reasoning>\n"
    "Your reasoning here\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>"
)


def extract_equation(completion: str) -> str:
    """d1's chain: with no ``\\boxed``/``\\fbox`` at all the whole text is the equation; the
    ``<answer>`` block is only the fallback for a box whose braces never close."""
    if "\\boxed" not in completion and "\\fbox" not in completion:
        equation = completion
    else:
        boxed = last_boxed_only_string(completion)
        if boxed is not None:
            equation = remove_boxed(boxed)
        else:
            match = re.search(r"<answer>(.*?)</answer>", completion, re.DOTALL)
            equation = match.group(1).strip() if match else completion
    equation = equation.replace("\\div", "/").replace("\\times", "*").replace("\\cdot", "*")
    # "expr = target" anywhere in the text: keep the left-hand side.
    left_side = re.search(r"([0-9+\-*/() ]+)=[0-9. ]+", equation)
    return left_side.group(1).strip() if left_side else equation


def evaluates_to(equation: str, numbers: list[int], target: float) -> bool:
    if sorted(int(n) for n in re.findall(r"\d+", equation)) != sorted(numbers):
        return False
    if not re.match(r"^[\d+\-*/().\s]+$", equation):
        return False
    try:
        value = eval(equation.strip(), {"__builtins__": None}, {})  # only digits and operators reach here
    except Exception:
        return False
    return abs(value - target) < 1e-5


@TASKS.register("countdown")
class Countdown(Task):
    primary_metric = "accuracy"
    chat = True
    assistant_prefix = "<reasoning>"
    protocols = {"d1": "d1's 0-shot chat prompt, the expression checked by evaluation (the only protocol)"}
    id_form = "countdown-<row of d1's countdown_cd3_test.jsonl>"

    def __init__(self, data_files: str | None = None, protocol: str = "d1"):
        super().__init__(data_files, protocol)

    def load_docs(self) -> list[dict]:
        source = self.data_files or resources.files("boe_bench.data") / "countdown_cd3_test.jsonl"
        rows = read_records(str(source))
        return [{"id": f"countdown-{i}", "numbers": [int(n) for n in row["input"].split(",")],
                 "target": int(row["output"])} for i, row in enumerate(rows)]

    def prompt_text(self, doc: dict) -> str:
        return SYSTEM_PROMPT + "\n\n" + f"Numbers: {doc['numbers']}\nTarget: {doc['target']}"

    def score(self, doc: dict, completion: str) -> dict:
        equation = extract_equation(completion)
        return {"answer": equation, "accuracy": float(evaluates_to(equation, doc["numbers"], doc["target"]))}
