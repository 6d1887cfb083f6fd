"""The self-trained puzzle model, its grids and the sudoku_grid task."""
import random

import pytest
import torch

from boe_bench.errors import ConfigError
from boe_bench.models import build_model
from boe_bench.models.puzzle import GridShape, PuzzleConfig, PuzzleDenoiser, is_valid_grid, random_grid
from boe_bench.samplers import Schedule, build_sampler
from boe_bench.tasks.sudoku_grid import SudokuGrid


@pytest.mark.parametrize("grid", ["4", "6", "9"])
def test_generated_grids_are_valid_and_deterministic(grid):
    shape = GridShape.named(grid)
    rng, again = random.Random(7), random.Random(7)
    first = [random_grid(shape, rng) for _ in range(50)]
    assert all(is_valid_grid(g, shape) for g in first)
    assert first == [random_grid(shape, again) for _ in range(50)]
    assert len({tuple(g) for g in first}) > 1


def test_validity_check_catches_a_swap():
    shape = GridShape.named("9")
    grid = random_grid(shape, random.Random(0))
    grid[0], grid[1] = grid[1], grid[0]
    assert not is_valid_grid(grid, shape)


def test_live_rows_equal_full_forward_and_ids_equal_embeddings():
    model = PuzzleDenoiser(PuzzleConfig(grid="4", n_layers=2, d_model=32, n_heads=4, d_ff=64)).double()
    ids = torch.randint(1, 6, (2, 16))
    full, state = model.forward_rows(model.embed(ids), capture=True)
    assert torch.equal(model(ids), model(embeds=model.embed(ids)))
    live = torch.tensor([[0, 7, 15], [3, 16, 16]])
    out = model.live_forward(state, live, model.embed(ids.gather(1, live.clamp(max=15))))
    finite = torch.isfinite(full[0, 0])
    assert torch.allclose(out[0][:, finite], full[0, [0, 7, 15]][:, finite], atol=1e-12)
    assert torch.allclose(out[1, 0][finite], full[1, 3][finite], atol=1e-12)
    assert torch.isinf(full[..., model.mask_id]).all()  # MASK is never predicted


def test_task_puzzles_are_held_out_and_scored():
    task = SudokuGrid(empty_cells=40, n_puzzles=5, seed=0)
    doc = task.docs()[0]
    assert sum(v == 0 for v in doc["puzzle"]) == 40 and task.default_schedule["steps"] == 40
    solution = "".join(map(str, doc["solution"]))
    assert task.score(doc, solution)["solved"] == 1.0
    broken = ("1" if solution[0] != "1" else "2") + solution[1:]
    assert task.score(doc, broken)["solved"] == 0.0
    with pytest.raises(ConfigError):
        SudokuGrid(empty_cells=0)


def test_shipped_checkpoint_orders_matter():
    """On the trained model, confidence order solves hard puzzles more often than random order."""
    model = build_model("puzzle_mdm")
    task = SudokuGrid(empty_cells=70, n_puzzles=40, seed=5)
    docs = task.docs()
    init = [task.initial_generation(d, model.tokenizer) for d in docs]
    schedule = Schedule(**task.default_schedule)
    solved = {}
    for name in ("confidence", "random"):
        out = build_sampler(name).generate(model, [[] for _ in docs], schedule, gen_init=init, seed=1)
        solved[name] = sum(task.score(d, t)["solved"] for d, t in zip(docs, out.texts)) / len(docs)
        assert all(c.isdigit() for c in out.texts[0]) and len(out.texts[0]) == 81
    assert solved["confidence"] > solved["random"]
