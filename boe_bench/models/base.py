"""The one interface every denoiser offers to every sampler.

Positions vs rows: a denoiser maps input rows (one per token) to output rows. Most models
predict position p at output row p; Dream, initialised from an AR model, predicts position
p at row p - 1 (``logit_shift = 1``). ``forward`` returns position-aligned logits, while
the live-row API works on raw rows, since which rows must be recomputed depends on it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from boe_bench.errors import ConfigError

# How a left-padded batch is computed (``Denoiser.padding``).
PADDING_MODES = ("isolated", "reference")


@dataclass
class FrozenState:
    """What a no-grad full forward leaves behind for live-row recompute.

    keys/values: per layer, [B, H_kv, L, D] after rotary embedding (or the model's
    equivalent), detached. positions: [B, L] position ids. key_mask: [B, L], True for real
    tokens (False for left padding). time: the time conditioning used, if any. kept: what
    the model kept at the ``keep_rows`` of ``forward_with_state`` (model-specific; None when
    it kept nothing).
    """

    keys: list[Tensor]
    values: list[Tensor]
    positions: Tensor
    key_mask: Tensor
    time: Tensor | None = None
    kept: object | None = None


class Denoiser(nn.Module, ABC):
    """A bidirectional masked-diffusion denoiser.

    Attributes every implementation sets: ``tokenizer``, ``mask_id``, ``eos_ids`` (token
    ids that end a text: EOS and EoT), ``pad_id``, ``vocab_size``, ``logit_shift`` and
    ``time_conditioned`` (True when logits depend on the diffusion time, as in MDLM with
    time conditioning; such a model needs a fresh forward for BoE's surrogate step).
    """

    tokenizer = None
    mask_id: int
    pad_id: int
    eos_ids: tuple[int, ...] = ()
    vocab_size: int
    logit_shift: int = 0
    time_conditioned: bool = False
    # PC-Sampler's background token-frequency table for this model's tokenizer, when the
    # checkpoint ships one (a path); None: the sampler needs ``freq_table``.
    token_freq_table: str | None = None
    # ``isolated`` (default): every row of a left-padded batch is computed and decoded as it
    # would be alone (rotary positions from its first real token; samplers break ties on its
    # unpadded canvas), so results do not depend on batch size or company, and each equals the
    # references' batch-of-one runs. ``reference``: as the model's reference code runs a
    # padded batch (LLaDA: positions 0..L-1, pads included; ties by topk over the padded row,
    # as LLaDA's generate.py), to reproduce its batched runs token for token.
    padding: str = "isolated"

    @property
    def device(self) -> torch.device:
        return self.embedding_matrix.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding_matrix.dtype

    @property
    @abstractmethod
    def embedding_matrix(self) -> Tensor:
        """E, [V, d]: row v embeds token v."""

    @property
    def mask_embedding(self) -> Tensor:
        """e_m, [d]."""
        return self.embedding_matrix[self.mask_id]

    def embed(self, ids: Tensor) -> Tensor:
        return nn.functional.embedding(ids, self.embedding_matrix)

    @abstractmethod
    def forward_rows(
        self,
        embeds: Tensor,
        attention_mask: Tensor | None = None,
        time: Tensor | None = None,
        capture: bool = False,
        ids: Tensor | None = None,
    ) -> tuple[Tensor, FrozenState | None]:
        """Row logits [B, L, V] from input embeddings [B, L, d].

        attention_mask: [B, L] with 1 for real tokens, 0 for left padding. With
        ``capture`` the per-layer keys/values come back (detached) for ``live_forward``.
        ``ids`` may be given alongside embeddings by models whose output depends on them
        (e.g. MDLM's SUBS parameterisation copies unmasked inputs).
        """

    @abstractmethod
    def live_forward(self, state: FrozenState, live_rows: Tensor, live_embeds: Tensor) -> Tensor:
        """Recompute only ``live_rows`` [B, A] with autograd.

        Their queries attend over the frozen keys/values of every row in ``state``, with
        the live rows' own keys/values recomputed from ``live_embeds`` [B, A, d] and
        written back into their slots. Entries equal to L pad rows with fewer live rows:
        they are computed, nothing attends to them, and their outputs mean nothing.
        Returns row logits [B, A, V]. With live_embeds
        equal to the embeddings the state was captured from, the result equals the full
        forward's logits at those rows.
        """

    def live_forward_copies(self, state: FrozenState, live_rows: Tensor, live_embeds: Tensor) -> Tensor:
        """``live_forward`` for C independent copies of the same live rows at once:
        ``live_embeds`` [C, B, A, d], C copies of the same embeddings, -> row logits
        [C, B, A, V], each copy with its own graph (its fresh keys/values meet no other
        copy's, so no gradient passes between copies). One backward
        of sum_c S_c through it gives each copy the gradient of its own objective S_c, which
        is how BoE's exact leave-one-out gets C gradients from one backward of plain
        operators. This default runs the copies as C x B batch entries of ``live_forward``
        over the state repeated C times; a model may fold them into fewer operations."""
        copies, b = live_embeds.shape[:2]
        repeat = lambda t: t.repeat(copies, *[1] * (t.dim() - 1)) if isinstance(t, Tensor) else t  # noqa: E731
        parts = {f.name: getattr(state, f.name) for f in fields(state) if f.name != "kept"}
        repeated = type(state)(**{name: [repeat(t) for t in value] if isinstance(value, list) else repeat(value)
                                  for name, value in parts.items()})
        out = self.live_forward(repeated, live_rows.repeat(copies, 1), live_embeds.flatten(0, 1))
        return out.view(copies, b, *out.shape[1:])

    def live_head_copies(self, state: FrozenState, live_rows: Tensor, live_embeds: Tensor) -> tuple | None:
        """``live_forward_copies`` stopped before a linear LM head, where the model knows the
        head's output at the live rows without computing it: (the head's input [C, B, A, d]
        with graph, the logits there [B, A, V], the same for every copy, the head's weight
        [V, d]); None where it does not (this default). BoE's leave-one-out objective then
        takes the head's input gradient over the A rows once, not over the C*A rows of the
        copies (``samplers/boe_live.py``)."""
        return None

    def forward(
        self,
        ids: Tensor | None = None,
        embeds: Tensor | None = None,
        attention_mask: Tensor | None = None,
        time: Tensor | None = None,
    ) -> Tensor:
        """Position-aligned logits [B, L, V] from token ids or input embeddings."""
        if embeds is None:
            embeds = self.embed(ids)
        rows, _ = self.forward_rows(embeds, attention_mask, time, ids=ids)
        return self.rows_to_positions(rows)

    def forward_with_state(
        self, ids: Tensor, attention_mask: Tensor | None = None, time: Tensor | None = None,
        keep_rows: Tensor | None = None,
    ) -> tuple[Tensor, FrozenState]:
        """Position-aligned logits plus the frozen state for a live-row recompute.

        ``keep_rows`` [B, T] (entries equal to L pad): the rows a later live pass will take
        its live rows from, at these same inputs. A model may keep its own values there
        (``FrozenState.kept``) so that the pass need not compute them again; this default
        keeps nothing."""
        with torch.no_grad():
            rows, state = self.forward_rows(self.embed(ids), attention_mask, time, capture=True, ids=ids)
        return self.rows_to_positions(rows), state

    def forward_live(
        self, ids: Tensor, attention_mask: Tensor | None, live_rows: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One step's forward that keeps autograd for ``live_rows`` [B, A] only (entries equal
        to L pad rows with fewer live rows): (position-aligned logits [B, L, V], detached;
        live row logits [B, A, V] with autograd; their input embeddings [B, A, d], the leaf).

        Eq. 30 restricted to what live-row gradients need: every other row is computed
        without autograd and its keys/values enter the live rows' attention detached, so
        gradient reaches a live embedding only through live queries. This default runs two
        passes (``forward_with_state``, then ``live_forward`` over the live rows);
        a model that splits its layers' rows overrides it with one pass over L rows.
        Time-independent denoisers only (no time argument)."""
        logits, state = self.forward_with_state(ids, attention_mask)
        index = live_rows.clamp(max=ids.shape[1] - 1)
        embeds = self.embed(ids.gather(1, index)).detach().requires_grad_(True)
        with torch.enable_grad():
            live = self.live_forward(state, live_rows, embeds)
        return logits, live, embeds

    def rows_to_positions(self, row_logits: Tensor) -> Tensor:
        if self.logit_shift == 0:
            return row_logits
        # Dream's convention: position 0 reuses row 0 (it is always a prompt token).
        return torch.cat([row_logits[:, :1], row_logits[:, :-1]], dim=1)

    def prediction_rows(self, positions: Tensor) -> Tensor:
        """The output rows holding the predictions for ``positions``."""
        return (positions - self.logit_shift).clamp(min=0)


def frozen_with_padding_slot(state: FrozenState, live_rows: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """(key_mask, keys, values) of ``state``, with one extra masked slot when ``live_rows``
    holds padding entries (== L): they write there, and no query attends to it, so they
    open no gradient path between the real live rows. During CUDA-graph capture no value
    can be read back, so there the caller must pass a state that already holds such a slot."""
    if live_rows.is_cuda and torch.cuda.is_current_stream_capturing():
        return state.key_mask, state.keys, state.values
    if not (live_rows == state.key_mask.shape[1]).any():
        return state.key_mask, state.keys, state.values
    key_mask = torch.cat([state.key_mask, state.key_mask.new_zeros(state.key_mask.shape[0], 1)], dim=1)
    pad = lambda t: torch.cat([t, t.new_zeros(*t.shape[:2], 1, t.shape[3])], dim=2)  # noqa: E731
    return key_mask, [pad(k) for k in state.keys], [pad(v) for v in state.values]


def canvas_masks(embeds: Tensor, attention_mask: Tensor | None,
                 pads_take_positions: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """(key_mask [B, L] bool, position ids [B, L], additive attention bias [B, 1, 1, L]) of a
    left-padded canvas; no attention mask means no padding. Positions count from each row's
    first real token, or from the canvas start with ``pads_take_positions`` (LLaDA's reference
    numbers every slot, pads included)."""
    b, n, _ = embeds.shape
    if attention_mask is None:
        attention_mask = torch.ones(b, n, dtype=torch.long, device=embeds.device)
    key_mask = attention_mask.bool()
    if pads_take_positions:
        positions = torch.arange(n, device=embeds.device).expand(b, n)
    else:
        positions = positions_from_mask(attention_mask)
    return key_mask, positions, padding_bias(key_mask, embeds.dtype)


def checked_padding(padding: str) -> str:
    if padding not in PADDING_MODES:
        raise ConfigError(f"model padding must be one of {', '.join(PADDING_MODES)}, got {padding!r}")
    return padding


def padding_bias(key_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive bias [B, 1, 1, L] that hides padded keys from every query."""
    bias = torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device)
    bias.masked_fill_(~key_mask, torch.finfo(dtype).min)
    return bias[:, None, None, :]


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """Position ids that ignore left padding, so a padded prompt sees what it would alone."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
