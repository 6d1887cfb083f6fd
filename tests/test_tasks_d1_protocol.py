"""d1's 0-shot chat protocol for GSM8K and MATH-500, selected with ``protocol=d1``."""
from pathlib import Path

import pytest

from boe_bench.errors import ConfigError
from boe_bench.scoring.math import hendrycks_equiv
from boe_bench.tasks import build_task
from boe_bench.tasks.d1_protocol import gsm8k_gold, gsm8k_prediction, math_prediction

FIX = Path(__file__).resolve().parent / "fixtures"
GSM8K_FILES = {"test": str(FIX / "gsm8k_test.jsonl"), "train": str(FIX / "gsm8k_train.jsonl")}


def d1_answer(final: str) -> str:
    """A completion in d1's format (the prompt prefilled "<reasoning>")."""
    return f"\nFirst I work it out step by step.\n</reasoning>\n<answer>\n\\boxed{{{final}}}\n</answer><|eot_id|>"


@pytest.fixture(scope="module")
def gsm8k():
    return build_task("gsm8k", data_files=GSM8K_FILES, protocol="d1")


@pytest.fixture(scope="module")
def math500():
    return build_task("math500", data_files=str(FIX / "math500.jsonl"), protocol="d1")


def test_gsm8k_reference_answers_full_marks_perturbed_zero(gsm8k):
    for doc in gsm8k.docs():
        gold = doc["answer"].split("####")[-1].strip().replace(",", "")
        assert gsm8k.score(doc, d1_answer(gold))["accuracy"] == 1.0, doc["id"]
        assert gsm8k.score(doc, d1_answer(str(int(gold) + 1)))["accuracy"] == 0.0, doc["id"]
        # d1 reads the box, not the rationale: lm-eval's "#### n" earns nothing here.
        assert gsm8k.score(doc, " " + doc["answer"])["accuracy"] == 0.0, doc["id"]


def test_gsm8k_d1_parsers():
    assert gsm8k_gold("so 3 + 4 = 7\n#### $1,234.5") == 1234.5
    assert gsm8k_prediction("\\boxed{...} then \\boxed{ 18 }") == 18.0         # ellipsis box skipped
    assert gsm8k_prediction("\\boxed{x = 12 dollars}") == 12.0                 # first number in the box
    assert gsm8k_prediction("<answer>it is 5, not 7</answer>") == 7.0           # else last number in <answer>
    assert gsm8k_prediction("The answer is 5.") is None


def test_math500_reference_answers_full_marks_perturbed_zero(math500):
    for doc in math500.docs():
        assert math500.score(doc, d1_answer(doc["answer"]))["accuracy"] == 1.0, doc["id"]
        assert math500.score(doc, d1_answer(doc["answer"] + "+1"))["accuracy"] == 0.0, doc["id"]


def test_math500_d1_extraction_and_hendrycks_equality():
    assert math_prediction("so \\boxed{\\frac{1}{2}} and later \\boxed{3}") == "3"
    assert math_prediction("no box at all") == "no box at all"              # d1 keeps the whole text
    assert math_prediction("\\boxed{1 <answer> 7 </answer>") == "7"          # unclosed box: <answer>
    assert hendrycks_equiv("\\dfrac{1}{2}", "0.5") and hendrycks_equiv("x = 3", "3")
    assert hendrycks_equiv("\\left( 1, 2 \\right)", "(1,2)") and hendrycks_equiv("5\\%", "5")
    assert hendrycks_equiv("\\frac12", "1/2") and not hendrycks_equiv("\\frac{1}{3}", "0.5")
    # Two unit markers: d1's canonicaliser raises and the raw strings are compared.
    assert not hendrycks_equiv("1\\text{ m}\\text{ s}", "1")


def test_d1_prompts_are_chat_with_reasoning_prefill(gsm8k, math500, tiny_llada):
    for task, doc_key in ((gsm8k, "question"), (math500, "problem")):
        doc = task.docs()[0]
        tokenizer = tiny_llada.tokenizer
        text = tokenizer.decode(task.prompt_ids(doc, tokenizer))
        # Decoded through the char tokenizer, since characters outside it come back as <|unk|>.
        question = tokenizer.decode(tokenizer(doc[doc_key], add_special_tokens=False)["input_ids"])
        assert text.endswith("\n\n" + question + "<|eot|><|assistant|><reasoning>")
        assert "Wrap the final answer in a \\boxed{}" in text and "Question:" not in text
        assert task.until == () and task.describe()["protocol"] == "d1" and task.describe()["chat"] is True
    assert gsm8k.prompt_text(gsm8k.docs()[0]).startswith("You are a math expert.")
    assert "\\boxed{}. \nRespond" in gsm8k.prompt_text(gsm8k.docs()[0])
    assert "</answer>\" \n\n\n" in math500.prompt_text(math500.docs()[0])


def test_lmeval_protocol_unchanged_by_default():
    task = build_task("gsm8k", data_files=GSM8K_FILES)
    assert task.describe()["protocol"] == "lmeval" and not task.chat and task.until[0] == "Question:"
    assert task.primary_metric == "exact_match_flexible"


def test_unknown_protocol_is_a_config_error():
    with pytest.raises(ConfigError, match="implements protocol 'lmeval' or 'd1', not 'd2'"):
        build_task("gsm8k", protocol="d2")
    with pytest.raises(ConfigError, match="implements protocol 'lmeval' or 'd1', not 'zero-shot'"):
        build_task("math500", protocol="zero-shot")
    # Tasks with one protocol refuse another instead of ignoring it.
    with pytest.raises(ConfigError, match="task countdown implements protocol 'd1', not 'lmeval'"):
        build_task("countdown", protocol="lmeval")
    with pytest.raises(ConfigError, match="task sudoku implements protocol 'd1', not 'lmeval'"):
        build_task("sudoku", protocol="lmeval")
    with pytest.raises(ConfigError, match="task humaneval implements protocol 'lmeval', not 'd1'"):
        build_task("humaneval", protocol="d1")


@pytest.mark.parametrize("task,data", [
    ("gsm8k", [f"task.data_files.test={GSM8K_FILES['test']}", f"task.data_files.train={GSM8K_FILES['train']}"]),
    ("math500", [f"task.data_files={FIX / 'math500.jsonl'}"]),
])
def test_d1_protocol_runs_end_to_end_on_tiny(task, data, tmp_path):
    from hydra import compose, initialize_config_dir

    from boe_bench.runner import run

    with initialize_config_dir(config_dir=str(FIX.parents[1] / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "model=tiny", f"task={task}", "task.protocol=d1", "limit=4", "gen_length=32", "steps=16",
            "block_length=32", "progress=false", f"out_dir={tmp_path}", *data])
    summary = run(cfg)
    assert summary["n"] == 4 and summary["task"]["protocol"] == "d1" and summary["primary_metric"] == "accuracy"
    assert summary["score"] is not None and 0.0 <= summary["score"] <= 1.0
