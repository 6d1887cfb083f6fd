"""Our GSM8K and MATH-500 scorers against lm-eval 0.4.13's own verdicts.

``fixtures/lmeval_parity.jsonl`` holds completions of every class on which our scorers
disagreed with lm-eval (text past a stop sequence, a new ``Question:``/``Problem:`` with
another answer, a completion that starts with one, lenient LaTeX prefixes, base subscripts,
``\\pm``/``±``, comma lists, pmatrix, ``\\infty``/``\\left``, thousands separators), each with
the verdicts lm-eval gave when run beside ours (its ``postprocess_generated_text`` stop cut,
gsm8k.yaml's filters and exact_match, minerva_math's ``process_results`` with sympy's ANTLR
parser on antlr4 4.11) and the reason for that verdict.
"""
import json
import random
from pathlib import Path

import pytest

from boe_bench.tasks import build_task
from boe_bench.tasks.base import cut_at_stop

FIX = Path(__file__).resolve().parent / "fixtures"
CASES = [json.loads(line) for line in (FIX / "lmeval_parity.jsonl").read_text().splitlines()]
TASKS = {"gsm8k": build_task("gsm8k", data_files=str(FIX / "gsm8k_test.jsonl")),
         "math500": build_task("math500", data_files=str(FIX / "math500_parity.jsonl"))}
DOCS = {name: {d["id"]: d for d in task.docs()} for name, task in TASKS.items()}


@pytest.mark.parametrize("case", CASES, ids=[f"{c['id']}:{c['why'][:40]}" for c in CASES])
def test_scores_as_lm_eval_does(case):
    if "math_verify" in case["lmeval"]:
        pytest.importorskip("math_verify")
    metrics = TASKS[case["task"]].score(DOCS[case["task"]][case["id"]], case["completion"])
    assert {k: metrics[k] for k in case["lmeval"]} == case["lmeval"], case["why"]


def test_every_disagreement_class_is_covered():
    whys = " ".join(c["why"] for c in CASES)
    for phrase in ("</s>", "<|im_end|>", "new Question:", "starts with Question:", "new Problem:",
                   "starts with Problem:", "base subscript", "\\pm", "±", "pmatrix", "\\infty", "\\left",
                   "thousands", "lenient parse"):
        assert phrase in whys, phrase


def test_cut_is_lm_eval_sequential_split():
    # A later stop that straddles an earlier stop's cut no longer matches: lm-eval keeps "x",
    # a cut at the earliest occurrence would keep "".
    assert cut_at_stop("xab", ("ab", "xa")) == "x"
    assert cut_at_stop("a</s>b Question: c", ("Question:", "</s>")) == "a"
    assert cut_at_stop("abc", ("", "z")) == "abc"


def test_cut_matches_lm_eval_on_random_text():
    utils = pytest.importorskip("lm_eval.models.utils")
    rng = random.Random(0)
    for _ in range(2000):
        text = "".join(rng.choice("abxQ:\n") for _ in range(rng.randint(0, 20)))
        until = ["".join(rng.choice("abxQ:\n") for _ in range(rng.randint(0, 3))) for _ in range(rng.randint(0, 3))]
        assert cut_at_stop(text, until) == utils.postprocess_generated_text(text, list(until), None), (text, until)
