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
    assert torch.allclose(out[0], full[0, [0, 7, 15]], atol=1e-12)
    assert torch.allclose(out[1, 0], full[1, 3], atol=1e-12)
    probs = full.softmax(-1)
    assert (probs[..., model.mask_id] == 0).all() and (probs[..., model.pad_id] == 0).all()  # never predicted


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


def test_testbed_spearman_and_ragged_entropy_trajectories():
    from boe_bench.experiments import testbed
    a = torch.tensor([0.1, 3.0, 2.0, -1.0])
    assert testbed.spearman(a, a.exp()) == pytest.approx(1.0)
    assert testbed.spearman(a, -a) == pytest.approx(-1.0)

    model = PuzzleDenoiser(PuzzleConfig(grid="4", n_layers=1, d_model=16, n_heads=2, d_ff=32)).double()
    recorder = testbed.EntropyRecorder(model)
    ids = torch.randint(1, 6, (3, 16))
    recorder.start_batch()
    recorder(ids)
    recorder(ids.masked_fill(ids == model.mask_id, 1))  # nothing masked: total entropy 0
    recorder.start_batch()
    recorder(ids[:1])
    logits = model(ids)
    probs = logits.softmax(-1)
    ent = -(probs * logits.log_softmax(-1)).nan_to_num().sum(-1)
    expected_first = (ent * (ids == model.mask_id)).sum(-1)
    trajectory = recorder.mean_trajectory()
    assert len(trajectory) == 2 and trajectory[1] == 0.0
    assert trajectory[0] == pytest.approx((expected_first.mean().item() + expected_first[0].item()) / 2)


def test_boe_tis_is_finite_on_the_puzzle_model():
    """MASK and padding get probability 0; their entropy terms must not turn TIS into NaN."""
    from boe_bench.samplers.base import DecodeState
    from boe_bench.samplers.boe import BoESampler

    model = PuzzleDenoiser(PuzzleConfig(grid="4", n_layers=2, d_model=32, n_heads=4, d_ff=64)).double()
    model.requires_grad_(False)
    task = SudokuGrid(grid=4, empty_cells=10, n_puzzles=1, seed=0)
    state = DecodeState.start(model, [[]], 16, gen_init=[task.initial_generation(task.docs()[0], model.tokenizer)])
    # Half the masked cells are candidates, so the other half form the entropy target.
    sampler = BoESampler(rho=0.5)
    ranking = sampler.rank(model, state, torch.ones(16, dtype=torch.bool), torch.ones(1, dtype=torch.long))
    tis = ranking["tis"][ranking["candidates"]]
    assert tis.numel() == 5 and torch.isfinite(tis).all() and (tis != 0).any()
