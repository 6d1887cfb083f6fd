"""The trained text model: its data, its trainer, its checkpoint and what it decodes.

The shipped checkpoint is checked as a user runs it: through the LLaDA loader, in float32
and bf16, with the tasks' own prompts and scorers; a miswired checkpoint (renamed or
transposed weights, a wrong mask or EOS id, another tokenizer) fails the solve floor.
"""
from __future__ import annotations

import json
import random

import pytest
import torch

from boe_bench.models.llada import build_llada
from boe_bench.models.text_mdm import build_text_mdm, shipped_checkpoint
from boe_bench.samplers import Schedule, build_sampler
from boe_bench.samplers.base import StopCriterion
from boe_bench.selfcheck import TEXT_MDM_CELL_FLOOR as CELL_FLOOR, TEXT_MDM_SOLVED_FLOOR as SOLVED_FLOOR
from boe_bench.tasks.countdown import Countdown
from boe_bench.tasks.sudoku import Sudoku
from boe_bench.train import text_data
from boe_bench.train.text_data import countdown_example, sudoku_example, sudoku_solutions
from boe_bench.train.text_mdm import EOS, MASK, collate, main as train_main, task_objects

# Confidence, L=128 (two tokens per step, blocks of 32), on the first 8 puzzles of d1's
# evaluated subsample. The shipped model (step 3000) writes d1's answer format on every one,
# gets 83% of their empty cells right and solves 2 of the 8 (float32 and bf16 alike; 78% and
# 4 of the first 16; chance for a digit 1-4 is 25%); a miswired checkpoint (renamed or
# transposed weights, wrong mask/EOS ids, another tokenizer) writes no parsable grid, so it
# scores 0, and a model that only copies the givens solves nothing. The floor (shared with
# selfcheck): every answer parsed, at least TEXT_MDM_CELL_FLOOR of the cells and
# TEXT_MDM_SOLVED_FLOOR whole puzzles.
TESTBED_SAMPLERS = ["confidence", "margin", "entropy", "pc_sampler", "remdm_llada", "lookum", "boe", "random",
                    "fast_dllm", "eb_sampler", "klass"]


# -- data -------------------------------------------------------------------------------------

def test_sudoku_examples_have_one_solution_eight_givens_and_score_in_full():
    rng, task, grids = random.Random(0), Sudoku(), sudoku_solutions()
    assert grids.shape == (288, 16)
    for _ in range(100):
        example = sudoku_example(rng)
        puzzle = example.doc["puzzle"]
        assert puzzle.count("0") == 8
        given = [i for i, c in enumerate(puzzle) if c != "0"]
        matching = (grids[:, given] == torch.tensor([int(puzzle[i]) for i in given]).numpy()).all(axis=1)
        assert matching.sum() == 1
        assert puzzle not in text_data.sudoku_test_puzzles()
        assert task.score(example.doc, example.response)["solved"] == 1.0


def test_sudoku_generator_skips_test_puzzles(monkeypatch):
    first = sudoku_example(random.Random(7)).doc["puzzle"]
    monkeypatch.setattr(text_data, "sudoku_test_puzzles", lambda: frozenset({first}))
    assert sudoku_example(random.Random(7)).doc["puzzle"] != first


def test_countdown_examples_reach_their_target_in_d1_ranges_and_score_in_full():
    rng, task = random.Random(0), Countdown()
    for _ in range(200):
        example = countdown_example(rng)
        numbers, target = example.doc["numbers"], example.doc["target"]
        assert len(numbers) == 3 and all(1 <= n <= 100 for n in numbers) and 1 <= target <= 100
        assert (tuple(sorted(numbers)), target) not in text_data.countdown_test_problems()
        assert task.score(example.doc, example.response)["accuracy"] == 1.0


def test_countdown_generator_skips_test_problems(monkeypatch):
    doc = countdown_example(random.Random(3)).doc
    banned = frozenset({(tuple(sorted(doc["numbers"])), doc["target"])})
    monkeypatch.setattr(text_data, "countdown_test_problems", lambda: banned)
    again = countdown_example(random.Random(3)).doc
    assert (tuple(sorted(again["numbers"])), again["target"]) not in banned


# -- trainer ----------------------------------------------------------------------------------

TINY_TRAIN = ["--steps", "2", "--batch", "2", "--d-model", "32", "--layers", "1", "--heads", "2", "--mlp-hidden", "64",
              "--vocab", "300", "--tokenizer-corpus", "40", "--save-every", "2", "--save-dtype", "float32"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("text_mdm")
    train_main(["--out", str(out / "a"), *TINY_TRAIN])
    train_main(["--out", str(out / "b"), *TINY_TRAIN])
    return out


def test_training_is_deterministic_under_a_seed(tiny_run):
    a, b = tiny_run / "a" / "step00002", tiny_run / "b" / "step00002"
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    logs = [(tiny_run / r / "train_log.csv").read_text().splitlines() for r in ("a", "b")]
    assert [line.split(",")[:4] for line in logs[0]] == [line.split(",")[:4] for line in logs[1]]


def test_trained_checkpoint_loads_through_the_llada_loader(tiny_run):
    directory = tiny_run / "a" / "step00002"
    config = json.loads((directory / "config.json").read_text())
    assert config["block_type"] == "llama" and config["rope_full_precision"] is True
    model = build_llada(str(directory), dtype="float32", device="cpu")
    assert model.mask_id == model.tokenizer.convert_tokens_to_ids(MASK)
    assert model.eos_ids[0] == model.tokenizer.convert_tokens_to_ids(EOS)
    assert model.token_freq_table is not None
    # Digits are single tokens, so a Sudoku grid is read cell by cell.
    assert len(model.tokenizer("3102200002100320", add_special_tokens=False)["input_ids"]) == 16


def test_sft_batch_masks_only_the_response_and_weights_by_one_over_t(tiny_run):
    from boe_bench.models.hub import load_tokenizer

    tokenizer = load_tokenizer(tiny_run / "a" / "step00002")
    tasks = task_objects()
    rng = random.Random(0)
    examples = [sudoku_example(rng), countdown_example(rng)]
    mask_id, eos_id = tokenizer.convert_tokens_to_ids(MASK), tokenizer.convert_tokens_to_ids(EOS)
    noisy, clean, attention, weights = collate(tasks, tokenizer, examples, 128, mask_id, eos_id,
                                               torch.Generator().manual_seed(0))
    prompt_width = clean.shape[1] - 128
    assert not (noisy[:, :prompt_width] == mask_id).any()
    assert (clean[:, -1] == eos_id).all()  # padded with EOS to the canvas end
    masked = noisy == mask_id
    assert torch.equal(weights > 0, masked)
    # One weight per row: 1 / (t * canvas), t in (0, 1].
    for row in range(2):
        w = weights[row][masked[row]]
        assert torch.allclose(w, w[0].expand_as(w)) and w[0] >= 1 / 128
    assert attention[:, prompt_width:].all()


# -- the shipped model ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    return build_text_mdm(dtype="float32", device="cpu")


def test_shipped_checkpoint_is_small_and_in_llada_layout():
    from pathlib import Path

    directory = Path(shipped_checkpoint())
    assert (directory / "model.safetensors").stat().st_size <= 10e6
    config = json.loads((directory / "config.json").read_text())
    for field in ("d_model", "n_layers", "n_heads", "mlp_hidden_size", "block_type", "rope_theta", "weight_tying"):
        assert field in config
    assert (directory / "README.md").exists()  # the model card


def test_bf16_load_agrees_with_float32(shipped):
    bf16 = build_text_mdm(dtype="bfloat16", device="cpu")
    assert bf16.dtype == torch.bfloat16
    task = Sudoku()
    doc = task.docs()[0]
    prompt = task.prompt_ids(doc, shipped.tokenizer)
    ids = torch.tensor([prompt + [shipped.mask_id] * 64])
    with torch.no_grad():
        full = shipped(ids)[0, len(prompt):]
        half = bf16(ids)[0, len(prompt):].float()
    assert (full.argmax(-1) == half.argmax(-1)).float().mean() >= 0.95
    assert (full.softmax(-1) - half.softmax(-1)).abs().max() < 0.1


def decode(model, task, docs, sampler: str, gen_length: int, **options):
    prompts = [task.prompt_ids(d, model.tokenizer) for d in docs]
    out = build_sampler(sampler, **options).generate(
        model, prompts, Schedule(gen_length=gen_length, steps=gen_length // 2, block_length=32),
        stop=StopCriterion(model.tokenizer, task.until, model.eos_ids), seed=0)
    return out, [task.score(d, text) for d, text in zip(docs, out.texts)]


def test_confidence_meets_the_floor_on_eight_sudoku_puzzles(shipped):
    task = Sudoku()
    _, scores = decode(shipped, task, task.docs()[:8], "confidence", 128)
    assert all(len(s["answer"]) == 16 for s in scores)  # it writes d1's answer format
    cells = sum(s["correct_cells"] for s in scores) / sum(s["empty_cells"] for s in scores)
    assert cells >= CELL_FLOOR, f"confidence got {cells:.2f} of the empty cells of 8 shipped puzzles (floor {CELL_FLOOR})"
    solved = sum(s["solved"] for s in scores)
    assert solved >= SOLVED_FLOOR, f"confidence solved {solved:.0f} of 8 shipped puzzles (floor {SOLVED_FLOOR})"


@pytest.mark.parametrize("sampler", TESTBED_SAMPLERS)
def test_every_testbed_sampler_decodes_both_tasks(shipped, sampler):
    for task in (Sudoku(), Countdown()):
        out, scores = decode(shipped, task, task.docs()[:2], sampler, 64)
        assert len(out.texts) == 2 and all(a.nfe > 0 for a in out.accounting)
        assert all(MASK not in text for text in out.texts)
        assert all("answer" in s for s in scores)
