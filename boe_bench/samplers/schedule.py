"""LLaDA's semi-autoregressive schedule: blocks, steps per block, tokens per step.

Imports no torch at module level: the runner checks a command's schedule before torch loads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from boe_bench.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class Schedule:
    gen_length: int
    steps: int
    block_length: int

    def __post_init__(self):
        if self.gen_length < 1 or self.steps < 1 or self.block_length < 1:
            raise ConfigError(
                f"gen_length, steps and block_length must be positive, got "
                f"{self.gen_length}, {self.steps}, {self.block_length}"
            )
        if self.gen_length % self.block_length:
            raise ConfigError(
                f"gen_length={self.gen_length} is not divisible by block_length={self.block_length}"
            )
        if self.steps % self.num_blocks:
            raise ConfigError(
                f"steps={self.steps} is not divisible by the number of blocks "
                f"({self.gen_length}/{self.block_length}={self.num_blocks})"
            )
        if self.steps_per_block > self.block_length:
            raise ConfigError(
                f"{self.steps_per_block} steps per block would leave steps with a budget < 1 "
                f"for blocks of {self.block_length} tokens; use steps <= gen_length"
            )

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks


def transfer_counts(n_masked: Tensor, steps: int) -> Tensor:
    """Tokens to unmask at each of ``steps`` steps, per row: [B] -> [B, steps].

    Every step gets floor(n / steps); the remainder goes to the first steps, one each.
    """
    import torch

    n_masked = n_masked.long()
    base = n_masked // steps
    remainder = n_masked % steps
    step_index = torch.arange(steps, device=n_masked.device)
    return base[:, None] + (step_index[None, :] < remainder[:, None]).long()
