"""Backward-on-Entropy steering (TABES, arXiv 2602.00250, Alg. 1), per design/boe.md.

Each step: one forward gives pi_i and H_i for every masked position; the ``rho`` most
confident masked positions of the current block become candidates C; the soft write
De_i = E^T pi_i - e_m says where revealing i would move its input embedding; one backward
of the surrogate entropy S = sum_{j in T} H_j gives g_i = dS/de_i at the current state, and
TIS_i = -<g_i, De_i> estimates how much revealing i lowers the remaining entropy
(Theorem 3.1). Candidates are ranked by s_i = c_i TIS_i - lambda_t max(h_t - H_i, 0)^2.

Which rows carry gradient (``rows``) and which entropies form S (``targets``):
- ``masked`` (default): live rows = masked rows (and, for a logit-shifted model, the rows
  that predict them), targets = masked \\ C. The live set depends on the masked set only, so
  it is known before the step's forward, and that forward is the only one (``one_pass``):
  it computes every other row without autograd and hands their keys/values to the live
  rows detached (ActiveQueryAttention, eq. 30), keeping a graph over the live rows alone;
  the step then costs one forward plus a backward over |M| rows. ``one_pass: false`` runs
  the earlier two-pass form (a no-grad forward, then a live-row recompute; same TIS within
  float rounding, and replayable as a CUDA graph).
- ``candidates``: live rows = C, targets = C with each candidate's own entropy left out of
  its own score (exact leave-one-out: the live rows over C run forward as |C| copies, and
  one backward gives copy c the gradient of S without the entries that predict c; see
  ``live_tis_pass``). C is chosen by the step's forward, so here the live rows are
  recomputed after it: |C|^2 rows forward and backward (charged |C| + 2|C|^2). That forward
  keeps its linear maps' outputs at the rows C can come from (``kept_rows``), and the
  recompute is given them, so its forward is the blocks' residual sums and the copies'
  entropies, computed once; the backward is written by hand (``_LiveLayer``) and reads every
  value once for all copies, the LM head's input gradient included (``_HeadEntropy``).
- ``all``: every row live, plain autograd through the whole model (the dense reference,
  the "w/o ActiveQueryAttention" ablation).
Live rows = C with targets outside C is the literal reading of eqs. 11 + 30 and gives
TIS = 0 identically (the zero-gradient trap): it is refused.

Why ``masked`` is the default (decided on accuracy and cost together, on both trained
models; results/bench/boe_readings.md, boe_readings_text.md, boe_decode.md). ``candidates``
has the paper's live set A_t := C_t, so its cost grows with rho as Table 5's does;
``masked``'s live set is the masked rows whatever rho is, and rho only decides which steps
rank at all (a step whose |C| = max(b_t, ceil(rho |M_block|)) fits the budget needs no
backward), so its cost rises with rho only through how many steps rank. The numbers:
- Cost, the GSM8K-shaped job (900-token prompt, L = 128, one token per step, blocks of 32,
  random ``cpu-bench`` weights, thread CPU time, the decodes side by side step by step, freed
  memory kept as jobs keep it; results/bench/boe_decode.md), rho 0.10 / 0.25 / 0.50, the four
  latest all-variant runs (AMD EPYC host, dec22 / dec23 / dec25 / dec28, the last two with
  Confidence scoring the block only, as this sampler reads it): ``masked`` 1.10 / 1.11 / 1.12x,
  1.10 / 1.13 / 1.15x, 1.08 / 1.11 / 1.12x and 1.13 / 1.15 / 1.16x Confidence (accounted 1.09 /
  1.11 / 1.12), ``candidates`` 1.04 / 1.06 / 1.13x, 1.04 / 1.07 / 1.14x, 1.04 / 1.06 / 1.12x
  and 1.06 / 1.10 / 1.17x (accounted 1.01 / 1.05 / 1.19; Table 5: 1.06 / 1.08 / 1.15). Both
  rise with rho, ``masked``'s only through how many steps rank. At rho 0.25 over seven runs
  on that host ``masked`` reads 1.110-1.147x and ``candidates`` 1.051-1.097x (above 1.08x
  once, dec28, a slower day); on an Intel Xeon host, three runs, 1.156-1.169x and
  1.073-1.086x. The bare matrix products of each ranking step's live pass (the product bound,
  dec28) would put the decode at 1.08x (``masked``) and 1.04x (``candidates``): what lies
  above is the rest of the pass (about 2,400 operators in a ``candidates`` pass, their
  dispatch and elementwise work, and the cache a step finds in a decode), which the
  row-counting accounting does not charge; on the AMD host the live rows' work mostly costs
  less than its charge and pays for it, on the Intel host not (there the default misses 1.15x
  by 0.006-0.019). ``compile_backward: true`` (CPU) takes part of that cost away, 0.007-0.024
  of the ratio on the Intel host (where it meets 1.15x) and nothing measurable on the AMD
  one; it compiles for seconds to a minute and needs a C++ compiler, so it stays an option
  (boe_profile_notes.md). ``candidates`` at rho 0.50 reads 0.02-0.07 under its accounting,
  which charges the leave-one-out pass |C|^2 rows backward while the copies share their
  values and the LM head's product. At blocks of 32 ``candidates`` is the cheaper reading and
  the one whose cost follows rho as Table 5's does.
- Text model (``text_mdm``, d1's Sudoku, first 128 puzzles, blocks of 32, two tokens per
  step), rho 0.10 / 0.25 / 0.50: solved 28 / 28 / 29 (L = 128) and 30 / 30 / 27 (L = 256)
  with ``masked``, 28 / 28 / 27 and 30 / 30 / 26 with ``candidates``; at rho <= 0.25 the two
  readings solve exactly the same puzzles, and both solve exactly Confidence's (BoE's
  steering changes a few digits, not an outcome); at rho 0.50 ``masked`` solves 4 (L=128)
  and 3 (L=256) puzzles ``candidates`` does not, against 2 and 2. Cost in forward-equivalents
  per puzzle (Confidence 16): ``masked`` 23.3 / 29.9 / 31.9 and 25.1 / 33.8 / 36.6 (rising
  with rho: more steps rank), ``candidates`` 16.7 / 20.3 / 31.4 and 16.4 / 18.6 / 25.4.
- Puzzle model (150 9x9 puzzles with 70 empty cells, the grid as one 81-cell block):
  ``candidates`` never solved more, 0.900 vs 0.940 at 70 steps (paired difference -0.040 ±
  0.058), 0.387 vs 0.400 at 56, 0.127 vs 0.127 at 35; and there its |C|^2 backward rows make
  it twice as expensive (270 vs 131 forward-equivalents at 70 steps).
So the text model cannot tell the readings apart on accuracy at rho <= 0.25 (both write
Confidence's outcomes) and only weakly at 0.50, and the only trained model on which BoE's
ranking changes outcomes at the default rho points, weakly, to ``masked``, which is also
the cheaper reading when a block is the whole canvas.
The default stays ``masked``, the reading with the better accuracy where accuracy differs;
for cost at blocks of 32 and a cost that follows rho as in Table 5, ``rows: candidates``
(on the text model at rho <= 0.25 it answers as ``masked`` does, at a third or less of
``masked``'s cost above Confidence's; results/bench/boe_readings_text.md). A
model on which ``candidates`` matches ``masked`` where BoE changes outcomes would make it the
default. ``candidates`` stays a knob, as does ``all`` (the ablation without
ActiveQueryAttention).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from boe_bench.models.base import Denoiser
from boe_bench.models.transformer import compiled_backward
from boe_bench.samplers import options
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import DecodeState, Sampler, entropy
from boe_bench.samplers.boe_live import (
    LiveInputs, LivePassGraphs, bucket_width, inner, live_tis_pass, weighted_entropy,
)

ROWS, DEFAULT_TARGETS = options.BOE_ROWS, options.BOE_DEFAULT_TARGETS
__all__ = ["BoESampler", "entropy", "gated_score", "normalise_tis", "soft_write_shift"]


def soft_write_shift(model: Denoiser, probs: Tensor, where: Tensor, tau: float = 1.0) -> Tensor:
    """De_i = stopgrad(E^T pi_i) - e_m (eqs. 10, 29) at the ``where`` positions, 0 elsewhere.

    ``tau`` is the soft-write temperature the paper leaves open: the write is E^T q_i with
    q_i = pi_i^(1/tau) / sum_v pi_iv^(1/tau) (the renormalised sharpened distribution, as one
    public implementation of BoE does). tau = 1 is eq. 10 exactly (pi untouched); tau -> 0
    tends to the embedding of the argmax token (the hard write); tau > 1 flattens towards
    the mean embedding. Computed only where needed: E^T pi over the whole canvas would cost a
    vocabulary-sized matmul per row, as much as the LM head itself."""
    delta = torch.zeros(*probs.shape[:2], model.embedding_matrix.shape[1], dtype=model.dtype, device=probs.device)
    write = probs[where]
    if tau != 1.0:
        # log 0 = -inf stays a zero weight after the softmax.
        write = (write.double().log() / tau).softmax(-1).to(probs.dtype)
    delta[where] = write.to(model.dtype) @ model.embedding_matrix - model.mask_embedding
    return delta.detach()


NORMALISE = options.BOE_NORMALISE


def normalise_tis(tis: Tensor, candidates: Tensor, how: str = "none") -> Tensor:
    """TIS normalised over each row's candidates, which the paper leaves open.

    ``none``: TIS as it is (the paper's reading). ``minmax``: (TIS_i - min_C TIS) / (max_C TIS
    - min_C TIS) over the row's candidates C, so scores lie in [0, 1]: the gate then scales
    a non-negative number (a raw negative TIS times a high confidence ranks a confident
    position lower, the opposite of what eq. 15 intends) and the penalty of eq. 19 meets
    TIS on a fixed scale. A row whose candidates tie gets 0 everywhere; 0 off the candidates."""
    if how == "none":
        return tis
    lo = tis.masked_fill(~candidates, float("inf")).amin(-1, keepdim=True)
    hi = tis.masked_fill(~candidates, float("-inf")).amax(-1, keepdim=True)
    span = hi - lo
    scaled = (tis - lo) / torch.where(span > 0, span, 1.0)
    return torch.where(candidates & (span > 0), scaled, 0.0)


def gated_score(tis: Tensor, ent: Tensor, vocab_size: int, gate: bool, lam: float, floor: float,
                gate_exponent: float = 1.0, normalise: str = "none", candidates: Tensor | None = None) -> Tensor:
    """Eqs. 15 and 19: confidence-gated TIS minus the anti-collapse penalty,
    s_i = c_i^gamma * N(TIS)_i - lambda_t max(h_t - H_i, 0)^2 with c_i = clip(1 - H_i / log|V|, 0, 1).

    gamma (``gate_exponent``) = 1 is eq. 15; 0 removes the gate; > 1 leans harder on
    confidence. N is ``normalise_tis`` over ``candidates`` (identity by default)."""
    score = normalise_tis(tis, candidates, normalise) if normalise != "none" else tis
    if gate:
        gate_value = (1 - ent / math.log(vocab_size)).clamp(0, 1)
        score = (gate_value if gate_exponent == 1.0 else gate_value ** gate_exponent) * score
    if lam > 0:
        score = score - lam * (floor - ent).clamp(min=0) ** 2
    return score


@SAMPLERS.register("boe")
class BoESampler(Sampler):
    """BoE steering (``rank`` returns the step's pieces; ``entropy`` there is H_i inside the
    current block, 0 elsewhere). Knobs: ``rho`` candidate fraction in (0, 1]; ``rows``/``targets`` as
    above; ``gate``; ``anti_collapse`` {enabled, lam, h_max, floor_schedule
    (decreasing: h_t = h_max t/T | increasing: h_max (1 - t/T)), anneal (none | linear)};
    ``soft_write_tau``, ``tis_normalise`` (none | minmax), ``gate_exponent``: the choices the
    public descriptions leave open (``soft_write_shift``, ``normalise_tis``, ``gated_score``),
    each defaulting to the paper's reading (1, none, 1);
    ``diagnose_dense`` adds the dense TIS to the trace for comparison (not counted);
    ``cuda_graphs`` replays the live-row pass as a CUDA graph on GPUs (same numbers, no
    per-kernel launch cost; see boe_live.py) where there is a separate pass (``candidates``,
    or ``one_pass: false``); ``one_pass`` (``masked`` only) folds the live rows' autograd into
    the step forward; ``compile_backward`` (CPU) runs the live blocks' hand-written backward
    (LLaDA/Dream-architecture models; the others have none, and it changes nothing there)
    through ``torch.compile`` (``compiled_backward`` in models/transformer.py: the same math to
    rounding, fewer operators; it compiles once per process and needs a C++ compiler)."""

    def __init__(self, rho: float = 0.25, rows: str = "masked", targets: str | None = None, gate: bool = True,
                 anti_collapse: dict | None = None, diagnose_dense: bool = False, cuda_graphs: bool = True,
                 soft_write_tau: float = 1.0, tis_normalise: str = "none", gate_exponent: float = 1.0,
                 one_pass: bool = True, compile_backward: bool = False, **common):
        super().__init__(**common)
        options.boe(rho=rho, rows=rows, targets=targets, soft_write_tau=soft_write_tau,
                    tis_normalise=tis_normalise, gate_exponent=gate_exponent, anti_collapse=anti_collapse,
                    compile_backward=compile_backward)
        self.soft_write_tau, self.tis_normalise = float(soft_write_tau), tis_normalise
        self.gate_exponent = float(gate_exponent)
        targets = targets or DEFAULT_TARGETS[rows]
        anti = {"enabled": True, "lam": 0.1, "h_max": 0.5, "floor_schedule": "decreasing", "anneal": "none",
                **(anti_collapse or {})}
        self.rho, self.rows, self.targets, self.gate = rho, rows, targets, gate
        self.anti, self.diagnose_dense, self.cuda_graphs = anti, diagnose_dense, cuda_graphs
        self.one_pass = one_pass
        self.compile_backward = bool(compile_backward)
        self.graphs = LivePassGraphs()
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

    def score_of(self, tis: Tensor, ent: Tensor, cand: Tensor, vocab_size: int, steps_done: int) -> Tensor:
        """s_i of eq. 19 with this sampler's gate, normalisation and anti-collapse schedule."""
        lam, floor = self.anti_collapse_terms(steps_done)
        return gated_score(tis, ent, vocab_size, self.gate, lam, floor, self.gate_exponent, self.tis_normalise, cand)

    def step(self, model: Denoiser, state: DecodeState, window: Tensor, budget: Tensor) -> None:
        steps_done = state.extras.get("boe_steps", 0)
        state.extras["boe_steps"] = steps_done + 1
        with compiled_backward(self.compile_backward and not state.x.is_cuda):
            ranking = self.rank(model, state, window, budget, steps_done)
        chosen = state.top_per_row(ranking["score"], ranking["candidates"], budget)
        if state.trace is not None:
            self.record(model, state, chosen, budget, ranking)
        state.commit(chosen, ranking["tokens"])

    def read_candidates(self, model: Denoiser, state: DecodeState, logits: Tensor, tokens: Tensor, window: Tensor,
                        allowed: Tensor, n_candidates: Tensor) -> tuple:
        """pi (the window's probabilities), H and the drawn token's confidence c at the window's
        columns, and the candidate set C_t: the ``n_candidates`` most confident allowed
        positions of each row. Read in the current block only, not over the whole canvas (at a
        126k vocabulary each full pass over L rows costs a millisecond)."""
        cols = window.nonzero().flatten()
        conf_logits = self.confidence_logits(model, logits[:, cols])
        probs = conf_logits.softmax(-1)
        ent = torch.zeros(state.x.shape, dtype=torch.float32, device=logits.device)
        ent[:, cols] = entropy(conf_logits).float()
        confidence = torch.zeros_like(ent)
        confidence[:, cols] = probs.gather(-1, tokens[:, cols, None]).squeeze(-1).float()
        return cols, probs, ent, confidence, state.top_per_row(confidence, allowed, n_candidates)

    def rank(self, model: Denoiser, state: DecodeState, window: Tensor, budget: Tensor, steps_done: int = 0) -> dict:
        """This step's tokens, candidates, entropies, TIS and scores (nothing committed)."""
        allowed = state.candidates(window)
        # A time-independent denoiser's surrogate forward "at t-1" (alpha = 0) is the step
        # forward itself; a time-conditioned one needs a second forward at t-1.
        reuse = not model.time_conditioned
        dense_embeds = dense_rows = frozen = live_pass = None
        # How many candidates each row will have is known before the forward (top-r of the
        # allowed positions), hence which rows will be ranked and, for rows: masked, the live set.
        n_candidates = torch.maximum(budget, torch.ceil(self.rho * allowed.sum(-1)).long())
        ranked = (torch.minimum(n_candidates, allowed.sum(-1)) > budget) & state.active
        one_pass = reuse and self.one_pass and self.rows == "masked" and bool(ranked.any())
        if one_pass:
            live = self.masked_live(model, state, ranked)
            live_rows, valid = pack_rows(live, state.seq_len, int(live.sum(-1).max()))
            logits, live_logits, live_embeds = model.forward_live(state.x, state.attention_mask, live_rows)
            live_pass = (live_rows, valid, live_logits, live_embeds)
            state.count_forward()
        elif reuse and self.rows == "all":
            dense_embeds, dense_rows = self.dense_forward(model, state, None)
            logits = model.rows_to_positions(dense_rows.detach())
            state.count_forward()
        elif reuse:
            logits, frozen = model.forward_with_state(state.x, state.attention_mask,
                                                      keep_rows=self.kept_rows(model, state, allowed, ranked))
            state.count_forward()
        else:
            logits = state.forward(model)
        tokens = self.draw(model, logits, state)
        cols, probs, ent, confidence, cand = self.read_candidates(model, state, logits, tokens, window, allowed,
                                                                  n_candidates)

        # Rows whose candidates all fit in the budget need no ranking, hence no backward.
        cand_ranked = cand & ranked[:, None]
        targets = cand_ranked if self.targets == "candidates" else state.masked & ranked[:, None] & ~cand
        tis = torch.zeros_like(ent)
        delta = torch.zeros(*state.x.shape, model.embedding_matrix.shape[1], dtype=model.dtype, device=logits.device)
        delta[:, cols] = soft_write_shift(model, probs, cand[:, cols], self.soft_write_tau)
        if ranked.any():
            surrogate_time = None if reuse else state.masked_fraction(budget)
            if self.rows == "all":
                if not reuse:
                    dense_embeds, dense_rows = self.dense_forward(model, state, surrogate_time)
                    state.count_forward()
                tis = self.dense_tis(model, dense_rows, dense_embeds, cand_ranked, targets, delta)
                state.count_forward(full=0, live_rows_bwd=state.attention_mask.sum(-1) * ranked)
            elif live_pass is not None:
                tis = self.one_pass_tis(model, state, live_pass, cand_ranked, targets, delta)
            else:
                if not reuse:
                    _, frozen = model.forward_with_state(state.x, state.attention_mask, surrogate_time)
                    state.count_forward()
                tis = self.live_tis(model, state, frozen, cand_ranked, targets, delta)
        score = self.score_of(tis, ent, cand, model.vocab_size, steps_done)
        return {"tokens": tokens, "candidates": cand, "targets": targets, "entropy": ent, "tis": tis, "logits": logits,
                "score": score, "delta": delta}

    @staticmethod
    def dense_forward(model: Denoiser, state: DecodeState, time: Tensor | None) -> tuple[Tensor, Tensor]:
        """(input embeddings with grad, row logits) of a plain autograd forward of every row."""
        embeds = model.embed(state.x).detach().requires_grad_(True)
        with torch.enable_grad():
            row_logits, _ = model.forward_rows(embeds, state.attention_mask, time, ids=state.x)
        return embeds, row_logits

    def masked_live(self, model, state, ranked: Tensor) -> Tensor:
        """[B, L] rows: masked's live set in ``ranked`` rows: the masked rows and the rows that
        predict them (the same rows unless the model shifts its logits)."""
        return (state.masked | self.prediction_mask(model, state.masked)) & ranked[:, None]

    def kept_rows(self, model: Denoiser, state: DecodeState, allowed: Tensor, ranked: Tensor) -> Tensor | None:
        """[B, T] rows (padded with L) that hold every live row ``live_tis`` may take after this
        step's forward, known before it: the candidates come from the allowed positions, the
        targets from them too (``targets: candidates``) or from the masked ones, plus the rows
        predicting them. The model may keep its values there (``forward_with_state``) so that
        the live pass need not compute them again. None where nothing ranks or the pass is
        replayed as a CUDA graph (which reads only its own buffers)."""
        if not bool(ranked.any()) or (self.cuda_graphs and state.x.is_cuda):
            return None
        positions = allowed if self.rows == "candidates" and self.targets == "candidates" else state.masked
        rows = (positions | self.prediction_mask(model, positions)) & ranked[:, None]
        return pack_rows(rows, state.seq_len, int(rows.sum(-1).max()))[0]

    def one_pass_tis(self, model, state, live_pass: tuple, cand: Tensor, targets: Tensor, delta: Tensor) -> Tensor:
        """[B, L] TIS at candidate positions from the step forward's own live-row graph: the
        live rows were computed with autograd in that forward, so only the backward remains."""
        live_rows, valid, live_logits, live_embeds = live_pass
        index = live_rows.clamp(max=state.seq_len - 1)
        weights = self.prediction_mask(model, targets).gather(1, index) & valid
        (grad,) = torch.autograd.grad(weighted_entropy(live_logits, weights), live_embeds)
        tis_live = -inner(grad, delta.gather(1, index[..., None].expand(-1, -1, delta.shape[-1])))
        state.count_forward(full=0, live_rows_bwd=valid.sum(-1))
        return scatter_live(tis_live, live_rows, valid & cand.gather(1, index), cand)

    def live_tis(self, model, state, frozen, cand: Tensor, targets: Tensor, delta: Tensor) -> Tensor:
        """[B, L] TIS at candidate positions through the live-row recompute."""
        target_rows = self.prediction_mask(model, targets)
        live = cand | target_rows
        if self.rows == "masked":
            live = live | self.masked_live(model, state, cand.any(-1))
        graphed = self.cuda_graphs and state.x.is_cuda and not model.time_conditioned
        width = int(live.sum(-1).max())
        live_rows, valid = pack_rows(live, state.seq_len, bucket_width(width) if graphed else width)
        index = live_rows.clamp(max=state.seq_len - 1)
        target_entry = target_rows.gather(1, index) & valid
        if self.targets == "candidates":
            # Copy c leaves out the entries that predict entry c's own position (exact leave-one-out).
            predicts_own = (live_rows + model.logit_shift)[:, None, :] == live_rows[:, :, None]
            weights = (target_entry[:, None, :] & ~predicts_own).transpose(0, 1)
        else:
            weights = target_entry
        inputs = LiveInputs(rows=live_rows, embeds=model.embed(state.x.gather(1, index)).detach(),
                            delta=delta.gather(1, index[..., None].expand(-1, -1, delta.shape[-1])),
                            weights=weights.to(torch.float32))
        tis_live = (self.graphs if graphed else live_tis_pass)(model, frozen, inputs)
        # Count each example's own live rows (backward: per leave-one-out objective), not the padding.
        n_live = valid.sum(-1)
        state.count_forward(full=0, live_rows_fwd=n_live,
                            live_rows_bwd=n_live * n_live if inputs.leave_one_out else n_live)
        return scatter_live(tis_live, live_rows, cand.gather(1, index) & valid, cand)

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
        tis, cand = ranking["tis"], ranking["candidates"]
        targets, delta = ranking["targets"], ranking["delta"]
        rows = range(tis.shape[0])
        entry = {
            "masked_entropy_total": (entropy(self.confidence_logits(model, ranking["logits"])) * state.masked)
            .sum(-1).tolist(),
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


def scatter_live(tis_live: Tensor, live_rows: Tensor, keep: Tensor, cand: Tensor) -> Tensor:
    """[B, A] TIS of live entries -> [B, L], zero outside the candidates. One spare column
    receives the padding entries, so they cannot overwrite a real row."""
    tis = tis_live.new_zeros(cand.shape[0], cand.shape[1] + 1)
    tis.scatter_(1, live_rows, torch.where(keep, tis_live, 0.0))
    return torch.where(cand, tis[:, :-1], 0.0)


def pack_rows(live: Tensor, length: int, width: int) -> tuple[Tensor, Tensor]:
    """[B, L] bool -> ([B, width] row indices padded with ``length``, [B, width] validity)."""
    width = max(width, 1)
    if width > length:  # a bucketed width may exceed the canvas: all extra entries are padding
        live = torch.cat([live, live.new_zeros(live.shape[0], width - length)], dim=1)
    index = torch.arange(live.shape[1], device=live.device).clamp(max=length)
    order = torch.where(live, index, length).sort(-1).values[:, :width]
    return order, order < length
