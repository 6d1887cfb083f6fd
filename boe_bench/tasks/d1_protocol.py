"""d1's 0-shot chat protocol for GSM8K and MATH-500 (dllm-reasoning/d1 eval/gsm8k.py,
eval/math500.py, eval/parse_and_get_acc.py), the alternative to lm-eval's few-shot one.

The user turn is d1's system prompt, a blank line and the bare question; the assistant turn
is prefilled with ``<reasoning>``; generation runs to the canvas end (no stop strings). The
answer is the ``\\boxed{}`` content with d1's fallbacks, compared as d1 compares it.
"""
from __future__ import annotations

import re

from boe_bench.scoring.math import hendrycks_equiv

PROTOCOL_HELP = ("d1's 0-shot chat prompt with \"<reasoning>\" prefilled, no stop cut, the \\boxed{} answer "
                 "scored as `accuracy`")
ASSISTANT_PREFIX = "<reasoning>"

GSM8K_SYSTEM_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. Wrap the final answer "
    "in a \\boxed{}. \nRespond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n"
    "<answer>\n\\boxed{...}\n</answer>"
)
# d1's MATH-500 prompt differs from GSM8K's: no space before the newline, and a stray quote
# and newline after </answer> (kept: it is what the model saw).
MATH500_SYSTEM_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. Wrap the final answer "
    "in a \\boxed{}.\nRespond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n"
    "<answer>\n\\boxed{...}\n</answer>\" \n"
)
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
NUMBER = re.compile(r"-?\d+\.?\d*")


def use_chat_protocol(task, primary_metric: str = "accuracy") -> None:
    """Switch a task instance to d1's prompt shape: chat template, prefill, no stop strings."""
    task.chat = True
    task.assistant_prefix = ASSISTANT_PREFIX
    task.until = ()
    task.primary_metric = primary_metric


def user_message(system_prompt: str, question: str) -> str:
    return system_prompt + "\n\n" + question


def gsm8k_gold(answer: str) -> float | None:
    """The number after ``####`` (d1 drops a leading ``$`` and thousands commas, not a sign)."""
    match = re.search(r"####\s*\$?([\d,]+(?:\.\d+)?)", answer)
    return float(match.group(1).replace(",", "")) if match else None


def _number_in(text: str, pick: int) -> float | None:
    """``text`` as a float, else its first (pick=0) or last (pick=-1) number."""
    try:
        return float(text)
    except ValueError:
        numbers = NUMBER.findall(text)
        return float(numbers[pick]) if numbers else None


def gsm8k_prediction(completion: str) -> float | None:
    """The first usable ``\\boxed{}`` (not empty, not an ellipsis), else the last number in
    the ``<answer>`` block."""
    for content in re.findall(r"\\boxed{(.*?)}", completion):
        content = content.strip()
        if content and not re.fullmatch(r"\.+", content):
            value = _number_in(content, 0)
            if value is not None:
                return value
    match = ANSWER_TAG.search(completion)
    if match and match.group(1).strip():
        return _number_in(match.group(1).strip(), -1)
    return None


def score_gsm8k(doc: dict, completion: str) -> dict:
    predicted, gold = gsm8k_prediction(completion), gsm8k_gold(doc["answer"])
    return {"answer": predicted, "accuracy": float(predicted is not None and predicted == gold)}


def math_prediction(completion: str) -> str | None:
    """d1's boxed extraction: with no ``\\boxed`` at all the whole text is the answer; with
    unbalanced braces or an empty box, the ``<answer>`` block's content."""
    if "\\boxed " in completion:
        answer: str | None = completion.split("\\boxed ")[-1].split("$")[0]
    elif "\\boxed" not in completion and "\\fbox" not in completion:
        answer = completion
    else:
        answer = _last_braced(completion)
    if not answer:
        match = ANSWER_TAG.search(completion)
        answer = match.group(1).strip() if match else answer
    return answer


def _last_braced(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (a ``\\fbox{...}`` is kept whole, as d1
    does), or None when its braces never close."""
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
    depth = 0
    for end in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if text[end] == "}" and depth == 0:
            boxed = text[start : end + 1]
            return boxed[len("\\boxed{") : -1] if boxed.startswith("\\boxed{") else boxed
    return None


def score_math500(doc: dict, completion: str) -> dict:
    predicted = math_prediction(completion)
    correct = predicted is not None and hendrycks_equiv(predicted, doc["answer"])
    return {"answer": predicted, "accuracy": float(correct)}
