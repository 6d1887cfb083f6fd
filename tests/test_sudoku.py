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


def test_a_different_valid_solution_is_valid_cell_by_cell_though_d1_scores_it_low():
    """Issue 24: with few givens a puzzle has many solutions; d1's cell accuracy compares with
    the one stored, the validity metrics with the rules."""
    stored, other = "1234341221434321", "2143432112343412"  # both valid 4x4 grids
    doc = {"id": "x", "puzzle": "0" * 16, "solution": stored}
    metrics = TASK.score(doc, f"<answer>\n{other}\n</answer>")
    assert metrics["solved"] == 0.0 and metrics["cell_accuracy"] == 0.0
    assert metrics["valid_cell_accuracy"] == 1.0 and metrics["solved_valid"] == 1.0
    # Cell 0 set to 1: it clashes with cell 1 (row and box) and cell 8 (column); those three fail.
    broken = "1" + other[1:]
    metrics = TASK.score(doc, f"<answer>{broken}</answer>")
    assert metrics["valid_cells"] == 13 and metrics["solved_valid"] == 0.0
    # A given overwritten: the grid may be valid, but it does not solve this puzzle.
    assert TASK.score({**doc, "puzzle": "1" + "0" * 15}, other)["solved_valid"] == 0.0
    assert TASK.score(doc, "<answer>12ab</answer>")["valid_cells"] == 2  # letters are no digits
    records = [{"metrics": TASK.score(doc, other)}, {"metrics": TASK.score(doc, "")}]
    pooled = TASK.aggregate(records)
    assert pooled["valid_cell_accuracy"] == 0.5 and pooled["solved_valid"] == 0.5 and pooled["cell_accuracy"] == 0.0


def test_sudoku_grid_solved_with_a_different_grid_has_full_valid_cell_accuracy():
    import random

    from boe_bench.models.puzzle import GridShape, random_grid
    from boe_bench.tasks.sudoku_grid import SudokuGrid

    task = SudokuGrid(grid=9, empty_cells=81, n_puzzles=1)
    doc = task.docs()[0]
    other = random_grid(GridShape.named(9), random.Random(12345))
    metrics = task.score(doc, "".join(map(str, other)))
    assert metrics["solved"] == 1.0 and metrics["valid_cell_accuracy"] == 1.0
    assert metrics["cell_accuracy"] < 0.5
    assert task.score(doc, "".join(map(str, doc["solution"])))["cell_accuracy"] == 1.0
