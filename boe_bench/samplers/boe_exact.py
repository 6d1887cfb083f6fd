"""``boe_exact``: BoE's ranking with TIS replaced by the exact change it linearises.

TIS_i = -<dS/de_i, De_i> is the first-order estimate (Theorem 3.1) of

    dS_i = S(0) - S(1; i),   S(alpha; i) = sum_{j in T \\ {i}} H_j(x with e_i = e_m + alpha De_i),

the drop of the surrogate entropy S when candidate i alone is fed its soft write
E^T pi_i (eq. 12 at alpha = 1). This sampler computes dS_i itself: one full forward per
candidate, batched, with the candidate's input embedding replaced by its soft write, and
ranks by s_i = c_i^gamma N(dS)_i - lambda_t max(h_t - H_i, 0)^2 exactly as BoE ranks by TIS
(same candidates, targets, soft write, gate, normalisation and anti-collapse terms).

It is an upper bound on what BoE's linearisation can deliver, not a cheap sampler: every
candidate forward is a full-sequence denoiser call and counts one NFE (a step with |C|
candidates to rank costs 1 + |C| NFE; a time-conditioned denoiser pays one more forward at
t - 1 for S(0)). No backward runs, so no live-row work is counted.

``write_entropies`` and ``surrogate_drops`` are also what ``boe_bench.diagnose`` measures
with, so the diagnostic and this sampler share one definition of the exact change.
"""
from __future__ import annotations

import torch
from torch import Tensor

from boe_bench.samplers import options
from boe_bench.models.base import Denoiser
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import DecodeState, entropy
from boe_bench.samplers.boe import BoESampler, soft_write_shift

READING = options.BOE_EXACT_READING


def write_entropies(model: Denoiser, x: Tensor, attention_mask: Tensor, time: Tensor | None, rows: Tensor,
                    positions: Tensor, delta: Tensor | None = None, tokens: Tensor | None = None,
                    chunk: int = 16) -> Tensor:
    """[N, L] position-aligned entropies of N edited copies of the canvas ``x`` [B, L].

    Copy n is row ``rows[n]`` of ``x`` with position ``positions[n]`` either fed the soft
    write (its input embedding plus ``delta[rows[n], positions[n]]``: e_m + De = E^T pi for a
    masked position) or, with ``tokens``, holding the hard token ``tokens[rows[n], positions[n]]``.
    The copies run as batched full forwards of at most ``chunk`` sequences, without autograd.
    ``time`` [B] is the diffusion time of each row (None for a time-independent denoiser)."""
    if (delta is None) == (tokens is None):
        raise ValueError("write_entropies needs exactly one of delta (soft write) and tokens (hard write)")
    out = []
    for start in range(0, len(rows), chunk):
        r, p = rows[start : start + chunk], positions[start : start + chunk]
        copy = torch.arange(len(r), device=x.device)
        ids = x[r].clone()
        if tokens is not None:
            ids[copy, p] = tokens[r, p]
        with torch.no_grad():
            embeds = model.embed(ids)
            if delta is not None:
                embeds[copy, p] = embeds[copy, p] + delta[r, p].to(embeds.dtype)
            row_logits, _ = model.forward_rows(embeds, attention_mask[r], None if time is None else time[r], ids=ids)
            out.append(entropy(model.rows_to_positions(row_logits)))
    if not out:
        return torch.zeros(0, x.shape[1], device=x.device)
    return torch.cat(out)


def surrogate_drops(before: Tensor, after: Tensor, rows: Tensor, positions: Tensor, targets: Tensor) -> Tensor:
    """[N] S(0) - S(1; i) = sum_{j in T \\ {i}} (H_j before - H_j after) for each edited copy.

    before: [B, L] entropies of the unedited canvas; after: [N, L] of the copies
    (``write_entropies``); targets: [B, L] bool, the positions whose entropies form S. The
    written position itself is left out, so the candidates reading (T = C) compares like
    with like, as BoE's leave-one-out does."""
    weights = targets[rows].to(after.dtype)
    weights[torch.arange(len(rows), device=rows.device), positions] = 0
    return ((before[rows].to(after.dtype) - after) * weights).sum(-1)


@SAMPLERS.register("boe_exact")
class BoEExactSampler(BoESampler):
    """BoE with TIS_i replaced by the exact soft-write drop dS_i (see the module docstring).
    Knobs as BoE's (``rho``, ``targets`` rest | candidates, ``gate``, ``gate_exponent``,
    ``soft_write_tau``, ``tis_normalise``, ``anti_collapse``) plus ``chunk``, the most
    candidate copies per batched forward. ``rank`` returns the keys BoE's does; its "tis"
    is dS."""

    def __init__(self, targets: str = "rest", chunk: int = 16, **kwargs):
        options.boe_exact(targets=targets, chunk=chunk, **kwargs)
        super().__init__(rows=READING[targets], targets=targets, cuda_graphs=False, **kwargs)
        self.chunk = chunk

    def rank(self, model: Denoiser, state: DecodeState, window: Tensor, budget: Tensor, steps_done: int = 0) -> dict:
        allowed = state.candidates(window)
        logits = state.forward(model)
        tokens = self.draw(model, logits, state)
        # Candidates exactly as BoESampler.rank picks them: the rho most confident masked
        # positions of the block, never fewer than the budget.
        n_candidates = torch.maximum(budget, torch.ceil(self.rho * allowed.sum(-1)).long())
        cols, probs, ent, confidence, cand = self.read_candidates(model, state, logits, tokens, window, allowed,
                                                                  n_candidates)

        ranked = (cand.sum(-1) > budget) & state.active
        cand_ranked = cand & ranked[:, None]
        targets = cand_ranked if self.targets == "candidates" else state.masked & ranked[:, None] & ~cand
        delta = torch.zeros(*state.x.shape, model.embedding_matrix.shape[1], dtype=model.dtype, device=logits.device)
        delta[:, cols] = soft_write_shift(model, probs, cand[:, cols], self.soft_write_tau)
        tis = torch.zeros_like(ent)
        if ranked.any():
            time, before = None, entropy(logits)
            if model.time_conditioned:
                # S is read at t - 1, as BoE's surrogate forward reads it: one more counted forward.
                time = state.masked_fraction(budget)
                with torch.no_grad():
                    before = entropy(model(state.x, attention_mask=state.attention_mask, time=time))
                state.count_forward(full=ranked.long())
            rows, positions = cand_ranked.nonzero(as_tuple=True)
            after = write_entropies(model, state.x, state.attention_mask, time, rows, positions, delta=delta,
                                    chunk=self.chunk)
            tis[rows, positions] = surrogate_drops(before, after, rows, positions, targets).float()
            state.count_forward(full=cand_ranked.sum(-1))
        score = self.score_of(tis, ent, cand, model.vocab_size, steps_done)
        return {"tokens": tokens, "candidates": cand, "targets": targets, "entropy": ent, "tis": tis, "logits": logits,
                "score": score, "delta": delta}


__all__ = ["BoEExactSampler", "surrogate_drops", "write_entropies"]
