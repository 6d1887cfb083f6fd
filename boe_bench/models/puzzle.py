"""A small masked diffusion model of solved Sudoku grids, trained by us (issue #6).

Each token is one cell: digits 1..N are tokens 1..N, MASK is N + 1 (0 is padding, never
used on a grid). Cells know where they are through learned row, column and box embeddings,
added inside ``forward_rows``: ``embed(ids)`` returns token embeddings only, because BoE's
soft write moves a cell's *token* embedding and leaves its place on the grid alone.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from boe_bench.errors import ConfigError
from boe_bench.models import MODELS
from boe_bench.models.base import Denoiser, FrozenState, frozen_with_padding_slot


FORBIDDEN_LOGIT = -1e4  # exp(-1e4) is 0 even in float64


@dataclass(frozen=True)
class GridShape:
    box_rows: int
    box_cols: int

    @property
    def size(self) -> int:
        return self.box_rows * self.box_cols

    @property
    def cells(self) -> int:
        return self.size**2

    @classmethod
    def named(cls, name: str | int) -> "GridShape":
        shapes = {"4": cls(2, 2), "6": cls(2, 3), "9": cls(3, 3)}
        if str(name) not in shapes:
            raise ConfigError(f"grid size must be one of 4, 6, 9, got {name!r}")
        return shapes[str(name)]

    def box_of(self, row: int, col: int) -> int:
        return (row // self.box_rows) * self.box_rows + col // self.box_cols


def random_grid(shape: GridShape, rng: random.Random) -> list[int]:
    """A solved grid, valid by construction: a pattern grid under validity-preserving shuffles
    (digit relabelling, rows within bands, bands, columns within stacks, stacks)."""
    n, br, bc = shape.size, shape.box_rows, shape.box_cols

    def pattern(r: int, c: int) -> int:
        return (bc * (r % br) + r // br + c) % n

    def shuffled_lines(groups: int, per_group: int) -> list[int]:
        order = rng.sample(range(groups), groups)
        return [g * per_group + i for g in order for i in rng.sample(range(per_group), per_group)]

    rows = shuffled_lines(n // br, br)  # n/br bands of br rows
    cols = shuffled_lines(n // bc, bc)  # n/bc stacks of bc columns
    digits = rng.sample(range(1, n + 1), n)
    return [digits[pattern(r, c)] for r in rows for c in cols]


def is_valid_grid(grid: list[int], shape: GridShape) -> bool:
    n = shape.size
    if len(grid) != n * n or any(not 1 <= v <= n for v in grid):
        return False
    units = [[r * n + c for c in range(n)] for r in range(n)] + [[r * n + c for r in range(n)] for c in range(n)]
    boxes: dict[int, list[int]] = {}
    for r in range(n):
        for c in range(n):
            boxes.setdefault(shape.box_of(r, c), []).append(r * n + c)
    return all(len({grid[i] for i in unit}) == n for unit in units + list(boxes.values()))


class GridTokenizer:
    """Cells as characters: digits for filled cells, '.' for MASK."""

    def __init__(self, size: int):
        self.size = size
        self.mask_token_id = size + 1
        self.pad_token_id = 0
        self.eos_token_id = None

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(str(i) if 1 <= i <= self.size else ("" if skip_special_tokens else ".") for i in ids)

    def __len__(self) -> int:
        return self.size + 2


@dataclass
class PuzzleConfig:
    grid: str = "9"
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512


class Block(nn.Module):
    def __init__(self, cfg: PuzzleConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))
        self.n_heads = cfg.n_heads

    def qkv_heads(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).split(d, dim=-1)
        return tuple(t.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))

    def finish(self, h: Tensor, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        h = h + self.proj(attn.transpose(1, 2).reshape(h.shape))
        return h + self.mlp(self.norm2(h))


class PuzzleDenoiser(Denoiser):
    """Bidirectional pre-norm transformer over the cells of one grid."""

    def __init__(self, cfg: PuzzleConfig = PuzzleConfig()):
        super().__init__()
        self.cfg = cfg
        self.shape = GridShape.named(cfg.grid)
        n = self.shape.size
        self.tokenizer = GridTokenizer(n)
        self.mask_id, self.pad_id, self.eos_ids = n + 1, 0, ()
        self.vocab_size = n + 2
        self.token_emb = nn.Embedding(self.vocab_size, cfg.d_model)
        self.row_emb, self.col_emb, self.box_emb = (nn.Embedding(n, cfg.d_model) for _ in range(3))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, self.vocab_size)
        cells = torch.arange(self.shape.cells)
        rows, cols = cells // n, cells % n
        boxes = torch.tensor([self.shape.box_of(r, c) for r, c in zip(rows.tolist(), cols.tolist())])
        self.register_buffer("cell_index", torch.stack([rows, cols, boxes]), persistent=False)

    @property
    def embedding_matrix(self) -> Tensor:
        return self.token_emb.weight

    def place(self, cells: Tensor) -> Tensor:
        """Row + column + box embeddings of cell indices [B, A] (a canvas is one grid)."""
        cells = cells.clamp(max=self.shape.cells - 1)
        r, c, b = self.cell_index[:, cells]
        return self.row_emb(r) + self.col_emb(c) + self.box_emb(b)

    def logits_from(self, h: Tensor) -> Tensor:
        logits = self.head(self.norm(h))
        # A cell is always a digit: MASK and padding are never predicted. The floor's
        # probability underflows to exactly 0 in every dtype, as -inf's would.
        forbidden = torch.zeros(self.vocab_size, dtype=torch.bool, device=logits.device)
        forbidden[[self.pad_id, self.mask_id]] = True
        return logits.masked_fill(forbidden, FORBIDDEN_LOGIT)

    def _check_length(self, length: int) -> None:
        if length != self.shape.cells:
            raise ConfigError(f"the puzzle model decodes {self.shape.cells}-cell grids, got a canvas of {length} "
                              f"tokens; use task=sudoku_grid with gen_length={self.shape.cells}")

    def forward_rows(self, embeds, attention_mask=None, time=None, capture=False, ids=None):
        b, n, _ = embeds.shape
        self._check_length(n)
        cells = torch.arange(n, device=embeds.device).expand(b, n)
        key_mask = torch.ones(b, n, dtype=torch.bool, device=embeds.device)
        h = embeds + self.place(cells)
        keys, values = [], []
        for block in self.blocks:
            q, k, v = block.qkv_heads(h)
            if capture:
                keys.append(k.detach())
                values.append(v.detach())
            h = block.finish(h, q, k, v, None)
        state = FrozenState(keys, values, cells, key_mask) if capture else None
        return self.logits_from(h), state

    def live_forward(self, state: FrozenState, live_rows: Tensor, live_embeds: Tensor) -> Tensor:
        key_mask, keys, values = frozen_with_padding_slot(state, live_rows)
        bias = torch.zeros(key_mask.shape, dtype=live_embeds.dtype, device=live_embeds.device)
        bias = bias.masked_fill(~key_mask, float("-inf"))[:, None, None, :]
        h = live_embeds + self.place(live_rows)
        head_dim = self.cfg.d_model // self.cfg.n_heads
        slot = live_rows[:, None, :, None].expand(-1, self.cfg.n_heads, -1, head_dim)
        for block, k_frozen, v_frozen in zip(self.blocks, keys, values):
            q, k, v = block.qkv_heads(h)
            h = block.finish(h, q, k_frozen.scatter(2, slot, k), v_frozen.scatter(2, slot, v), bias)
        return self.logits_from(h)

    def checkpoint(self) -> dict:
        return {"config": asdict(self.cfg), "state_dict": self.state_dict()}


DEFAULT_CHECKPOINT = "puzzle_mdm_9x9.pt"


@MODELS.register("puzzle_mdm")
def build_puzzle_mdm(path: str | None = None, device: str = "cpu", dtype: str = "float32") -> PuzzleDenoiser:
    """The shipped checkpoint (``path=None``) or one written by python -m boe_bench.train.puzzle_mdm."""
    source = Path(path) if path else resources.files("boe_bench.data") / DEFAULT_CHECKPOINT
    if not Path(str(source)).exists():
        raise ConfigError(f"puzzle checkpoint {str(source)!r} does not exist; train one with "
                          f"python -m boe_bench.train.puzzle_mdm")
    blob = torch.load(str(source), map_location="cpu", weights_only=True)
    model = PuzzleDenoiser(PuzzleConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.requires_grad_(False)
    return model.to(device=device, dtype=getattr(torch, dtype)).eval()
