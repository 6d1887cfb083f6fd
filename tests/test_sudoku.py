import pytest

from boe_bench.tasks import build_task
from boe_bench.tasks.sudoku import extract_grid

TASK = build_task("sudoku")


def test_d1_subset_order_and_size():
    docs = TASK.docs()
    assert len(docs) == 256 and docs[0]["id"] == "sudoku-361"
    assert all(d["puzzle"].count("0") == 8 for d in docs)


@pytest.mark.parametrize("template", [
    "I filled each row.\n</reasoning>\n<answer>\n{}\n</answer>",
    "reasoning...\n</reasoning>\n<answer>\n{}",          # cut at EOS before </answer>
    "</reasoning>\n<answer>\n```\n{}\n```\n</answer>",
    "The grid is {} and done.",
])
def test_reference_solutions_score_full_marks(template):
    for doc in TASK.docs()[:20]:
        metrics = TASK.score(doc, template.format(doc["solution"]))
        assert metrics["cell_accuracy"] == 1.0 and metrics["solved"] == 1.0


def test_perturbed_solutions_lose_exactly_the_changed_cells():
    doc = TASK.docs()[0]
    empties = [i for i, c in enumerate(doc["puzzle"]) if c == "0"]
    wrong = list(doc["solution"])
    for i in empties[:3]:
        wrong[i] = str(int(wrong[i]) % 4 + 1)
    metrics = TASK.score(doc, "<answer>\n" + "".join(wrong) + "\n</answer>")
    assert metrics["correct_cells"] == 5 and metrics["solved"] == 0.0
    assert TASK.score(doc, "no digits at all")["correct_cells"] == 0


def test_pooled_cell_accuracy():
    docs = TASK.docs()[:2]
    records = [{"metrics": TASK.score(docs[0], docs[0]["solution"])}, {"metrics": TASK.score(docs[1], "")}]
    assert TASK.aggregate(records)["cell_accuracy"] == 0.5 and TASK.aggregate(records)["solved"] == 0.5


def test_prompt_is_d1_chat_with_reasoning_prefill(tiny_llada):
    doc = TASK.docs()[0]
    text = tiny_llada.tokenizer.decode(TASK.prompt_ids(doc, tiny_llada.tokenizer))
    assert text.endswith("<|assistant|><reasoning>")
    assert f"Solve the following Sudoku puzzle: {doc['puzzle']}" in text


def test_short_grids_are_padded_like_d1():
    assert extract_grid("<answer>1234</answer>") == "1234" + "0" * 12
