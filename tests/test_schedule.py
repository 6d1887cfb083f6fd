import pytest
import torch

from boe_bench.errors import ConfigError
from boe_bench.samplers.schedule import Schedule, transfer_counts


@pytest.mark.parametrize(
    "gen_length, steps, block_length, expected_first_block",
    [
        # 32 tokens per block over 16 steps: two per step.
        (64, 32, 32, [2] * 16),
        # 10 tokens over 4 steps: 10 = 4*2 + 2, remainder to the first two steps.
        (20, 8, 10, [3, 3, 2, 2]),
        # One block, 7 tokens over 3 steps: 3, 2, 2.
        (7, 3, 7, [3, 2, 2]),
        # One token per step.
        (8, 8, 4, [1, 1, 1, 1]),
        # 5 tokens over 5 steps in each of 3 blocks.
        (15, 15, 5, [1, 1, 1, 1, 1]),
    ],
)
def test_transfer_counts_match_hand_computation(gen_length, steps, block_length, expected_first_block):
    schedule = Schedule(gen_length, steps, block_length)
    counts = transfer_counts(torch.tensor([block_length]), schedule.steps_per_block)
    assert counts[0].tolist() == expected_first_block
    assert counts.sum().item() == block_length


def test_transfer_counts_are_per_row():
    counts = transfer_counts(torch.tensor([5, 2, 0]), 3)
    assert counts.tolist() == [[2, 2, 1], [1, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize(
    "gen_length, steps, block_length, message",
    [
        (100, 50, 32, "not divisible by block_length"),
        (64, 3, 32, "not divisible by the number of blocks"),
        (64, 128, 32, "budget < 1"),
        (0, 1, 1, "must be positive"),
    ],
)
def test_impossible_schedules_are_one_clear_error(gen_length, steps, block_length, message):
    with pytest.raises(ConfigError, match=message):
        Schedule(gen_length, steps, block_length)
