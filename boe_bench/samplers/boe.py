"""Backward-on-Entropy steering (TABES, arXiv 2602.00250, Alg. 1), per design/boe.md.

Each step: one forward gives pi_i and H_i for every masked position; the ``rho`` most
confident masked positions of the current block become candidates C; the soft write
De_i = E^T pi_i - e_m says where revealing i would move its input embedding; one backward
of the surrogate entropy S = sum_{j in T} H_j gives g_i = dS/de_i at the current state, and
TIS_i = -<g_i, De_i> estimates how much revealing i lowers the remaining entropy
(Theorem 3.1). Candidates are ranked by s_i = c_i TIS_i - lambda_t max(h_t - H_i, 0)^2.

Which rows carry gradient (``rows``) and which entropies form S (``targets``):
- ``masked`` (default): live rows = masked rows, targets = masked \\ C. The backward runs
  through a live-row recompute (ActiveQueryAttention): all other rows are frozen keys/values.
- ``candidates``: live rows = C, targets = C with each candidate's own entropy left out of
  its own score (exact leave-one-out through one batched backward per target).
- ``all``: every row live, plain autograd through the whole model (the dense reference,
  the "w/o ActiveQueryAttention" ablation).
Live rows = C with targets outside C is the literal reading of eqs. 11 + 30 and gives
TIS = 0 identically (the zero-gradient trap): it is refused.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from boe_bench.errors import ConfigError
from boe_bench.models.base import Denoiser
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import DecodeState, Sampler, top_per_row

ROWS = ("masked", "candidates", "all")
DEFAULT_TARGETS = {"masked": "rest", "candidates": "candidates", "all": "rest"}


def entropy(logits: Tensor) -> Tensor:
    """Natural-log entropy over the last axis, accumulated in float32 (or float64)."""
    log_probs = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)
    return -(log_probs.exp() * log_probs).nan_to_num(0.0).sum(-1)


def inner(a: Tensor, b: Tensor) -> Tensor:
    """<a, b> over the last axis, in at least float32 (bf16 gradients lose too much)."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    return (a.to(dtype) * b.to(dtype)).sum(-1)


def soft_write_shift(model: Denoiser, probs: Tensor, where: Tensor) -> Tensor:
    """De_i = stopgrad(E^T pi_i) - e_m (eqs. 10, 29) at the ``where`` positions, 0 elsewhere.

    Computed only where needed: E^T pi over the whole canvas would cost a vocabulary-sized
    matmul per row, as much as the LM head itself."""
    delta = torch.zeros(*probs.shape[:2], model.embedding_matrix.shape[1], dtype=model.dtype, device=probs.device)
    delta[where] = probs[where].to(model.dtype) @ model.embedding_matrix - model.mask_embedding
    return delta.detach()


def gated_score(tis: Tensor, ent: Tensor, vocab_size: int, gate: bool, lam: float, floor: float) -> Tensor:
    """Eqs. 15 and 19: confidence-gated TIS minus the anti-collapse penalty."""
    score = tis
    if gate:
        score = (1 - ent / math.log(vocab_size)).clamp(0, 1) * tis
    if lam > 0:
        score = score - lam * (floor - ent).clamp(min=0) ** 2
    return score


@SAMPLERS.register("boe")
class BoESampler(Sampler):
    """BoE steering. Knobs: ``rho`` candidate fraction in (0, 1]; ``rows``/``targets`` as
    above; ``gate``; ``anti_collapse`` {enabled, lam, h_max, floor_schedule
    (decreasing: h_t = h_max t/T | increasing: h_max (1 - t/T)), anneal (none | linear)};
    ``diagnose_dense`` adds the dense TIS to the trace for comparison (not counted)."""

    def __init__(self, rho: float = 0.25, rows: str = "masked", targets: str | None = None, gate: bool = True,
                 anti_collapse: dict | None = None, diagnose_dense: bool = False, **common):
        super().__init__(**common)
        if not 0 < rho <= 1:
            raise ConfigError(f"boe rho must be in (0, 1], got {rho}")
        if rows not in ROWS:
            raise ConfigError(f"boe rows must be one of {', '.join(ROWS)}, got {rows!r}")
        targets = targets or DEFAULT_TARGETS[rows]
        if rows == "candidates" and targets == "rest":
            raise ConfigError(
                "boe rows=candidates with targets outside the candidates gives TIS = 0 everywhere: under "
                "ActiveQueryAttention gradient leaves a target only through its own query (design/boe.md); "
                "use rows=masked, or targets=candidates"
            )
        if (rows, targets) not in {("masked", "rest"), ("all", "rest"), ("candidates", "candidates")}:
            raise ConfigError(f"boe rows={rows} does not support targets={targets!r}")
        anti = {"enabled": True, "lam": 0.1, "h_max": 0.5, "floor_schedule": "decreasing", "anneal": "none",
                **(anti_collapse or {})}
        if anti["floor_schedule"] not in ("decreasing", "increasing") or anti["anneal"] not in ("none", "linear"):
            raise ConfigError(f"boe anti_collapse has an unknown floor_schedule or anneal: {anti}")
        self.rho, self.rows, self.targets, self.gate = rho, rows, targets, gate
        self.anti, self.diagnose_dense = anti, diagnose_dense
        self.total_steps = 1

    def generate(self, model, prompts, schedule, **kwargs):
        # The floor and lambda schedules count steps against the total T.
        self.total_steps = schedule.steps
        return super().generate(model, prompts, schedule, **kwargs)

    def anti_collapse_terms(self, steps_done: int) -> tuple[float, float]:
        """(lambda_t, h_t) with t counting down from T to 1 (Section 3.6)."""
        if not self.anti["enabled"]:
            return 0.0, 0.0
        frac = (self.total_steps - steps_done) / self.total_steps
        floor = self.anti["h_max"] * (frac if self.anti["floor_schedule"] == "decreasing" else 1 - frac)
        lam = self.anti["lam"] * (frac if self.anti["anneal"] == "linear" else 1.0)
        return lam, floor

    def step(self, model: Denoiser, state: DecodeState, window: Tensor, budget: Tensor) -> None:
        steps_done = state.extras.get("boe_steps", 0)
        state.extras["boe_steps"] = steps_done + 1
        ranking = self.rank(model, state, window, budget, steps_done)
        chosen = top_per_row(ranking["score"], ranking["candidates"], budget)
        if state.trace is not None:
            self.record(model, state, chosen, budget, ranking)
        state.commit(chosen, ranking["tokens"])

    def rank(self, model: Denoiser, state: DecodeState, window: Tensor, budget: Tensor, steps_done: int = 0) -> dict:
        """This step's tokens, candidates, entropies, TIS and scores (nothing committed)."""
        allowed = state.candidates(window)
        dense_embeds = dense_rows = frozen = None
        if self.rows == "all":
            dense_embeds = model.embed(state.x).detach().requires_grad_(True)
            dense_rows, _ = model.forward_rows(dense_embeds, state.attention_mask, ids=state.x)
            logits = model.rows_to_positions(dense_rows.detach())
        else:
            logits, frozen = model.forward_with_state(state.x, state.attention_mask)
        state.count_forward()
        tokens = self.draw(model, logits, state)
        conf_logits = self.confidence_logits(model, logits)
        probs = conf_logits.softmax(-1)
        ent = entropy(conf_logits)
        n_candidates = torch.maximum(budget, torch.ceil(self.rho * allowed.sum(-1)).long())
        cand = top_per_row(probs.gather(-1, tokens[..., None]).squeeze(-1), allowed, n_candidates)

        # Rows whose candidates all fit in the budget need no ranking, hence no backward.
        ranked = (cand.sum(-1) > budget) & state.active
        cand_ranked = cand & ranked[:, None]
        targets = cand_ranked if self.targets == "candidates" else state.masked & ranked[:, None] & ~cand
        tis = torch.zeros_like(ent)
        delta = soft_write_shift(model, probs, cand)
        if ranked.any():
            if self.rows == "all":
                tis = self.dense_tis(model, dense_rows, dense_embeds, cand_ranked, targets, delta)
                state.count_forward(full=0, live_rows_bwd=state.attention_mask.sum(-1) * ranked)
            else:
                if model.time_conditioned:
                    # The surrogate at t-1 differs from the step-t forward: run it, and count it.
                    time = state.masked_fraction(budget)
                    with torch.no_grad():
                        _, frozen = model.forward_rows(model.embed(state.x), state.attention_mask, time,
                                                       capture=True, ids=state.x)
                    state.count_forward()
                tis = self.live_tis(model, state, frozen, cand_ranked, targets, delta)
        lam, floor = self.anti_collapse_terms(steps_done)
        score = gated_score(tis, ent, model.vocab_size, self.gate, lam, floor)
        return {"tokens": tokens, "candidates": cand, "targets": targets, "entropy": ent, "tis": tis,
                "score": score, "delta": delta}

    def live_tis(self, model, state, frozen, cand: Tensor, targets: Tensor, delta: Tensor) -> Tensor:
        """[B, L] TIS at candidate positions through the live-row recompute."""
        target_rows = self.prediction_mask(model, targets)
        live = cand | target_rows
        if self.rows == "masked":
            live = live | (state.masked & cand.any(-1, keepdim=True))
        live_rows, valid = pack_rows(live, state.seq_len)
        index = live_rows.clamp(max=state.seq_len - 1)
        live_embeds = model.embed(state.x.gather(1, index)).detach().requires_grad_(True)
        with torch.enable_grad():
            ent_live = entropy(model.live_forward(frozen, live_rows, live_embeds))
        target_entry = target_rows.gather(1, index) & valid
        cand_entry = cand.gather(1, index) & valid
        delta_live = delta.gather(1, index[..., None].expand(-1, -1, delta.shape[-1]))
        n_live = valid.sum(-1)
        if self.targets == "rest":
            (grad,) = torch.autograd.grad((ent_live * target_entry).sum(), live_embeds)
            tis_live = -inner(grad, delta_live)
            state.count_forward(full=0, live_rows_fwd=n_live, live_rows_bwd=n_live)
        else:
            tis_live = self.leave_one_out_tis(model, ent_live, live_embeds, live_rows, target_entry, delta_live)
            state.count_forward(full=0, live_rows_fwd=n_live, live_rows_bwd=n_live * target_entry.sum(-1))
        # One spare column receives the padding entries, so they cannot overwrite a real row.
        tis = tis_live.new_zeros(state.x.shape[0], state.seq_len + 1)
        tis.scatter_(1, live_rows, torch.where(cand_entry, tis_live, 0.0))
        return torch.where(cand, tis[:, :-1], 0.0)

    @staticmethod
    def leave_one_out_tis(model, ent_live, live_embeds, live_rows, target_entry, delta_live) -> Tensor:
        """TIS_i = -sum_{j in C, j != i} <dH_j/de_i, De_i>: one batched backward per target entry."""
        n_entries = live_rows.shape[1]
        basis = torch.eye(n_entries, dtype=ent_live.dtype, device=ent_live.device)[:, None, :]
        basis = basis * target_entry[None].to(ent_live.dtype)
        (grads,) = torch.autograd.grad(ent_live, live_embeds, grad_outputs=basis, is_grads_batched=True)
        pair = inner(grads, delta_live[None])  # [k, B, a]: <dH_k/de_a, De_a>
        predicted_position = (live_rows + model.logit_shift).T[:, :, None]  # entry k predicts this position
        own_term = predicted_position == live_rows[None]
        return -pair.masked_fill(own_term, 0.0).sum(0)

    def dense_tis(self, model, row_logits, embeds, cand, targets, delta) -> Tensor:
        """TIS with every row live: S backpropagated through the unmodified model."""
        objective = (entropy(row_logits) * self.prediction_mask(model, targets)).sum()
        (grad,) = torch.autograd.grad(objective, embeds, retain_graph=True)
        return torch.where(cand, -inner(grad, delta), 0.0)

    @staticmethod
    def prediction_mask(model: Denoiser, positions: Tensor) -> Tensor:
        """[B, L] bool: the output rows holding the predictions for ``positions``."""
        if model.logit_shift == 0:
            return positions
        shifted = torch.zeros_like(positions)
        shifted[:, : -model.logit_shift] = positions[:, model.logit_shift :]
        return shifted

    def record(self, model, state, chosen, budget, ranking: dict) -> None:
        """Per-step trace; the dense comparison here is diagnostic and not counted."""
        ent, tis, cand = ranking["entropy"], ranking["tis"], ranking["candidates"]
        targets, delta = ranking["targets"], ranking["delta"]
        rows = range(tis.shape[0])
        entry = {
            "masked_entropy_total": (ent * state.masked).sum(-1).tolist(),
            "tis_chosen": [tis[b][chosen[b]].tolist() for b in rows],
            "tis_rejected": [tis[b][cand[b] & ~chosen[b]].tolist() for b in rows],
            "chosen_positions": [chosen[b].nonzero().flatten().tolist() for b in rows],
        }
        if self.diagnose_dense and self.rows != "all":
            embeds = model.embed(state.x).detach().requires_grad_(True)
            with torch.enable_grad():
                row_logits, _ = model.forward_rows(embeds, state.attention_mask, ids=state.x)
                dense = self.dense_tis(model, row_logits, embeds, cand, targets, delta)
            entry["dense_cosine"], entry["dense_topb_overlap"] = [], []
            for b in rows:
                live_b, dense_b, k = tis[b][cand[b]], dense[b][cand[b]], min(int(budget[b]), int(cand[b].sum()))
                cosine = torch.nn.functional.cosine_similarity(live_b, dense_b, dim=0) if live_b.numel() else None
                overlap = len(set(live_b.topk(k).indices.tolist()) & set(dense_b.topk(k).indices.tolist())) / max(k, 1)
                entry["dense_cosine"].append(None if cosine is None else float(cosine))
                entry["dense_topb_overlap"].append(overlap)
        state.trace.append(entry)


def pack_rows(live: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """[B, L] bool -> ([B, A] row indices padded with ``length``, [B, A] validity)."""
    counts = live.sum(-1)
    width = max(int(counts.max()), 1)
    order = torch.where(live, torch.arange(length, device=live.device), length).sort(-1).values[:, :width]
    return order, order < length
