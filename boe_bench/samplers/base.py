"""The sampler protocol every unmasking policy shares.

A sampler fills the masked generation region of a batch of left-padded prompts block by
block (LLaDA's semi-autoregressive schedule). Each step it asks the denoiser for logits,
draws a token for every masked position (Gumbel-max in float64), ranks the masked
positions of the current block and commits the best ``budget`` of them. Policies differ
only in the ranking (``score``) or, for adaptive samplers, in ``step``.

Rules every sampler shares (deviations from some references, chosen once here):
- The mask id is never drawn as a token (``Sampler.draw``). LLaDA's, Fast-dLLM's,
  PC-Sampler's and KLASS's scripts draw over the whole vocabulary, so a position can be
  "filled" with MASK and stay masked (LLaDA revisits it in a later block; an adaptive loop
  can spin on it). Here the draw is over the other tokens; the confidence of the drawn
  token is still read from the full distribution, so whenever MASK is not the draw the
  result is the reference's.
- Ranking precision (``rank_dtype``): ``float32`` (default) reads confidences, margins and
  entropies from the logits in float32, or float64 where the sampler's reference computes
  in float64 (Fast-dLLM, KLASS); ``model`` computes them in the model's own dtype, as
  LLaDA's generate.py and PC-Sampler's scripts do (softmax of bf16 logits). In bf16,
  confidences then tie constantly and the order follows the tie rule below.
- Ties: ``top_per_row`` keeps what ``torch.topk`` returns for each row, called as the
  references call it (canvas-wide scores, -inf off the candidates, k = the row's budget).
  torch documents no tie order and it differs between kernels (CPU vs CUDA, sizes), so
  only this reproduces the references' choices, and at exact ties the result is as
  device-dependent as theirs. The canvas is each row's own (unpadded), so a padded batch
  ties as each prompt alone; under the model's ``padding: reference`` it is the padded
  row, as generate.py's topk over a left-padded batch.
- Batch invariance (``DecodeState``): each row draws from its own random stream and is
  charged only the forwards that serve it, so NFE per row is what the row costs alone; the
  rows of a batch share each forward's compute (wall_s is the batch's time split evenly).
- Adaptive loops (a block takes as many forwards as the sampler needs) stop with
  ``SamplerStalled`` after block_length + steps_per_block forwards on one block, which no
  sampler committing a token per forward can reach.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from boe_bench.models.base import Denoiser
from boe_bench.samplers import options
from boe_bench.samplers.options import RANK_DTYPES  # noqa: F401 (re-exported)
from boe_bench.samplers.schedule import Schedule, transfer_counts
from boe_bench.tasks.base import cut_at_stop




class SamplerStalled(RuntimeError):
    """An adaptive sampler's block did not fill within its forward cap (a bug, never a
    setting): it stops the run instead of looping for ever."""


@dataclass
class Accounting:
    """What one example cost. Forwards and live-row work are counted as they run."""

    nfe: int = 0
    live_rows_fwd: int = 0
    live_rows_bwd: int = 0
    seq_len: int = 1
    wall_s: float = 0.0

    @property
    def cost_fwd_equiv(self) -> float:
        # A.3.4: a live-row pass over A rows costs A/L of a full forward, its backward 2A/L.
        return self.nfe + (self.live_rows_fwd + 2 * self.live_rows_bwd) / self.seq_len

    def to_dict(self) -> dict:
        return {**asdict(self), "cost_fwd_equiv": self.cost_fwd_equiv}


@dataclass
class GenerationOutput:
    tokens: Tensor  # [B, gen_length], generated region, MASK where never filled
    texts: list[str]
    accounting: list[Accounting]
    trace: list[dict] | None = None


def sample_tokens(logits: Tensor, temperature: float, generator: torch.Generator | None = None,
                  uniform: Tensor | None = None, forbidden: list[int] | tuple[int, ...] = ()) -> Tensor:
    """Gumbel-max at temperature T in float64 (LLaDA's sampler); T=0 is argmax. ``uniform``:
    the U(0, 1) draws to use (``DecodeState.uniform``), else drawn here from ``generator``.
    ``forbidden``: token ids never drawn, as if their logits were -inf.

    The maximum is read with ``max`` (its index is the first maximal one, as ``argmax``'s):
    on the CPU ``argmax`` over the last axis is about three times slower than ``max``, and
    at T=0 the forbidden ids are skipped by taking the maximum of the slices between them,
    not by writing -inf into a copy of the logits ([B, L, V], 16 MB per step on the bench
    model). The tokens are those of argmax over the logits with -inf written in, to the
    index (ties, NaN)."""
    if temperature == 0:
        return _first_max_outside(logits, sorted(set(forbidden)))
    logits = logits.to(torch.float64, copy=bool(forbidden))
    if forbidden:
        logits[..., list(forbidden)] = float("-inf")
    if uniform is None:
        uniform = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
    return (logits + temperature * gumbel).max(-1).indices


def _first_max_outside(logits: Tensor, skip: list[int]) -> Tensor:
    """The index of the first maximum over the last axis, ids in ``skip`` (sorted) left out:
    each stretch between them is reduced on its own, and the first stretch holding the largest
    maximum wins, so ties and NaN resolve as one ``argmax`` over the whole axis would."""
    width = logits.shape[-1]
    bounds = [-1] + [i for i in skip if 0 <= i < width] + [width]
    values, indices = [], []
    for before, after in zip(bounds[:-1], bounds[1:]):
        if after > before + 1:
            found = logits[..., before + 1:after].max(-1)
            values.append(found.values)
            indices.append(found.indices + (before + 1))
    if not values:  # every id left out: argmax over -inf everywhere is the first index
        return torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
    if len(values) == 1:
        return indices[0]
    pick = torch.stack(values, -1).max(-1, keepdim=True).indices
    return torch.stack(indices, -1).gather(-1, pick).squeeze(-1)


def entropy(logits: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Natural-log entropy over the last axis, computed in at least ``dtype``.

    A token the model forbids (logit -inf, p = 0) adds 0 to the value and to the gradient.
    p log p is taken with log p zeroed there: left at -inf, the product's backward multiplies
    0 by -inf and every gradient through the entropy (BoE's TIS) turns NaN.
    """
    return entropy_of_log_probs(logits.to(torch.promote_types(logits.dtype, dtype)).log_softmax(-1))


def entropy_of_log_probs(log_probs: Tensor) -> Tensor:
    """``entropy`` for a caller that already holds the log-probabilities (and needs them)."""
    p, safe = probs_and_safe_log_probs(log_probs)
    return -(p * safe).sum(-1)


def probs_and_safe_log_probs(log_probs: Tensor) -> tuple[Tensor, Tensor]:
    """(p, log p with 0 where p = 0): the two factors of p log p with forbidden tokens (log p =
    -inf) contributing 0 to it and to its gradient (see ``entropy``)."""
    # Three elementwise passes (exp(-inf) is 0 already, NaN goes to 0); isfinite() and two
    # masked fills took eight, 1.1 ms against 0.3 ms for a BoE step's 64 x 4096 entropies on
    # the CPU. The gradient is 0 at -inf as before; at NaN (a row with no finite logit) it is NaN.
    return log_probs.exp().nan_to_num(0.0, 0.0, 0.0), log_probs.nan_to_num(0.0, 0.0, 0.0)


class StopCriterion:
    """``generate_until``: a row is done once every token up to a stop sequence or an EOS
    token is unmasked, since nothing after it can change the truncated answer."""

    def __init__(self, tokenizer, until: list[str] | tuple[str, ...] = (), eos_ids=()):
        self.tokenizer = tokenizer
        self.until = [s for s in until if s]
        self.eos_ids = set(eos_ids)

    def settled_prefix(self, gen_row: Tensor, mask_id: int) -> list[int]:
        ids = gen_row.tolist()
        return ids[: ids.index(mask_id)] if mask_id in ids else ids

    def truncate(self, ids: list[int]) -> tuple[str, bool]:
        """Decoded text cut at the first EOS, then at the stop sequences as lm-eval cuts
        (``cut_at_stop``, which the task's scorer applies again), and whether either was seen."""
        cut = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
        stopped = cut is not None
        text = self.tokenizer.decode(ids[:cut], skip_special_tokens=True)
        short = cut_at_stop(text, self.until)
        if short != text:
            text, stopped = short, True
        return text, stopped

    def done(self, gen_row: Tensor, mask_id: int) -> bool:
        return self.truncate(self.settled_prefix(gen_row, mask_id))[1]


@dataclass
class DecodeState:
    """The canvas of one batch: left-padded prompts followed by the generation region.

    Batch invariance: a row decodes as it would alone. Each row draws its randomness from its
    own stream (``generator`` a list, one per row, seeded ``seed + row`` or as given), over
    its own unpadded positions (``uniform``); rows the current forward does not serve
    (finished, or ``waiting`` for the other rows to fill an adaptive block) draw nothing, are
    charged no NFE and keep their sampler state. A single generator (or None) draws for the
    whole batch at once, as tests that build a state by hand do."""

    x: Tensor  # [B, L] token ids
    attention_mask: Tensor  # [B, L], 0 on left padding
    prompt_length: int  # P, padded prompt length; generation is x[:, P:]
    mask_id: int
    accounting: list[Accounting]
    active: Tensor  # [B] bool; finished rows are never written or counted again
    generator: torch.Generator | list[torch.Generator] | None = None
    trace: list[dict] | None = None
    extras: dict = field(default_factory=dict)  # per-batch scratch space of stateful samplers
    waiting: Tensor | None = None  # [B] bool; rows whose adaptive block is full while others' is not
    # Ties over the padded row, as the references' topk (the model's ``padding: reference``).
    padded_ties: bool = False

    @classmethod
    def start(cls, model: Denoiser, prompts: list[list[int]], gen_length: int,
              generator: torch.Generator | list[torch.Generator] | None = None, trace: bool = False,
              gen_init: list[list[int]] | None = None) -> "DecodeState":
        """``gen_init`` pre-fills the generation region (MASK where the sampler decides), for
        infilling tasks such as puzzles whose clues sit among the unknowns."""
        batch, prompt_length = len(prompts), max((len(p) for p in prompts), default=0)
        length = prompt_length + gen_length
        x = torch.full((batch, length), model.mask_id, dtype=torch.long)
        attention_mask = torch.ones(batch, length, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            pad = prompt_length - len(prompt)
            x[row, :pad] = model.pad_id
            attention_mask[row, :pad] = 0
            x[row, pad:prompt_length] = torch.tensor(prompt, dtype=torch.long)
            if gen_init is not None:
                if len(gen_init[row]) != gen_length:
                    raise ValueError(f"gen_init row {row} has {len(gen_init[row])} tokens, expected {gen_length}")
                x[row, prompt_length:] = torch.tensor(gen_init[row], dtype=torch.long)
        return cls(
            x=x.to(model.device),
            attention_mask=attention_mask.to(model.device),
            prompt_length=prompt_length,
            mask_id=model.mask_id,
            accounting=[Accounting(seq_len=length) for _ in prompts],
            active=torch.ones(batch, dtype=torch.bool, device=model.device),
            generator=generator,
            trace=[] if trace else None,
            padded_ties=getattr(model, "padding", "isolated") == "reference",
        )

    @property
    def seq_len(self) -> int:
        return self.x.shape[1]

    @property
    def decoding(self) -> Tensor:
        """[B] bool: the rows this step's forward serves (active and not waiting)."""
        return self.active if self.waiting is None else self.active & ~self.waiting

    def row_generator(self, row: int) -> torch.Generator | None:
        return self.generator[row] if isinstance(self.generator, list) else self.generator

    def uniform(self, shape, dtype: torch.dtype = torch.float32, canvas: bool = True) -> Tensor:
        """U(0, 1) draws of ``shape`` [B, ...]. With per-row streams each decoding row draws
        from its own, over its unpadded positions when ``canvas`` (axis 1 is the canvas), so
        it draws what it would alone; other entries are 0.5 and never read."""
        if not isinstance(self.generator, list):
            return torch.rand(shape, dtype=dtype, device=self.x.device, generator=self.generator)
        out = torch.full(shape, 0.5, dtype=dtype, device=self.x.device)
        pads = (self.attention_mask == 0).sum(-1).tolist() if canvas else [0] * len(self.generator)
        for row in self.decoding.nonzero().flatten().tolist():
            out[row, pads[row]:] = torch.rand((shape[1] - pads[row], *shape[2:]), dtype=dtype,
                                              device=self.x.device, generator=self.generator[row])
        return out

    @property
    def masked(self) -> Tensor:
        return self.x == self.mask_id

    def block_window(self, block: int, block_length: int) -> Tensor:
        """[L] bool: the positions of generation block ``block``."""
        window = torch.zeros(self.seq_len, dtype=torch.bool, device=self.x.device)
        start = self.prompt_length + block * block_length
        window[start : start + block_length] = True
        return window

    def candidates(self, window: Tensor) -> Tensor:
        """[B, L] bool: masked positions of the current block in rows still decoding."""
        return self.masked & window[None, :] & self.active[:, None]

    def count_forward(self, full: Tensor | int = 1, live_rows_fwd: Tensor | int = 0, live_rows_bwd: Tensor | int = 0):
        """Charge a batch forward to each row it serves (``decoding``): a row's NFE is what it
        would cost alone, whatever batch it ran in."""
        decoding = self.decoding
        for row, acc in enumerate(self.accounting):
            if decoding[row]:
                acc.nfe += int(full[row]) if torch.is_tensor(full) else full
                acc.live_rows_fwd += int(live_rows_fwd[row]) if torch.is_tensor(live_rows_fwd) else live_rows_fwd
                acc.live_rows_bwd += int(live_rows_bwd[row]) if torch.is_tensor(live_rows_bwd) else live_rows_bwd

    def masked_fraction(self, unmasked_next: Tensor | int = 0) -> Tensor:
        """[B] diffusion time t of each row: the masked fraction of its generation region
        (after ``unmasked_next`` more tokens are revealed, for a lookahead at t - 1)."""
        gen_masked = self.masked[:, self.prompt_length :].sum(-1) - unmasked_next
        return gen_masked.float() / max(self.seq_len - self.prompt_length, 1)

    def forward(self, model: Denoiser, time: Tensor | None = None) -> Tensor:
        """Logits for the whole canvas, counted as one NFE for every active row."""
        if time is None and model.time_conditioned:
            time = self.masked_fraction()
        with torch.no_grad():
            logits = model(self.x, attention_mask=self.attention_mask, time=time)
        self.count_forward()
        return logits

    def commit(self, chosen: Tensor, tokens: Tensor) -> None:
        """Write ``tokens`` at the ``chosen`` [B, L] positions (masked, active rows only)."""
        chosen = chosen & self.masked & self.active[:, None]
        self.x = torch.where(chosen, tokens, self.x)

    def top_per_row(self, scores: Tensor, allowed: Tensor, budget: Tensor) -> Tensor:
        """``top_per_row`` on each row's unpadded canvas (its ties as the row alone has them), or
        on the padded row under the model's ``padding: reference`` (ties as generate.py's)."""
        starts = None if self.padded_ties else (self.attention_mask == 0).sum(-1)
        return top_per_row(scores, allowed, budget, starts=starts)

    def commit_top(self, scores: Tensor, tokens: Tensor, window: Tensor, budget: Tensor) -> Tensor:
        """Commit the ``budget[b]`` best-scoring candidates of each row; returns the choice."""
        chosen = self.top_per_row(scores, self.candidates(window), budget)
        self.commit(chosen, tokens)
        return chosen


def top_per_row(scores: Tensor, allowed: Tensor, budget: Tensor, starts: Tensor | None = None) -> Tensor:
    """[B, L] bool: the ``budget[b]`` highest ``scores`` among ``allowed`` in each row.

    Ties go as ``torch.topk`` breaks them, called per row on the canvas-wide scores with
    -inf off ``allowed`` and k = the row's budget: the call LLaDA's generate.py, Fast-dLLM,
    PC-Sampler and KLASS make, so their choices are reproduced at ties too (see the module
    docstring). topk's tie order depends on the vector's length, so ``starts`` [B] (the
    left padding of each row; ``DecodeState.top_per_row`` passes it) cuts each row to its
    own unpadded canvas: a padded batch then chooses what each prompt would alone, and
    what the references choose. Allowed positions scored -inf themselves come after every
    finite score (topk's pick, else the lowest indices), so a row always gets its budget."""
    masked_scores = scores.masked_fill(~allowed, float("-inf"))
    budget = torch.minimum(budget.to(allowed.device), allowed.sum(-1))
    starts = [0] * allowed.shape[0] if starts is None else starts.tolist()
    chosen = torch.zeros_like(allowed)
    for row, k in enumerate(budget.tolist()):
        if k > 0:
            chosen[row, masked_scores[row, starts[row]:].topk(k).indices + starts[row]] = True
    chosen &= allowed
    short = budget - chosen.sum(-1)
    if (short > 0).any():
        spare = allowed & ~chosen
        chosen |= spare & (spare.cumsum(-1) <= short[:, None])
    return chosen


def row_generators(model: Denoiser, seed: int | list[int], rows: int) -> list[torch.Generator]:
    """One random stream per row: seeded ``seed + row``, or by ``seed[row]`` (the runner
    passes each document's own seed), so a row's draws do not depend on its batch."""
    seeds = [seed + row for row in range(rows)] if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != rows:
        raise ValueError(f"{len(seeds)} seeds for {rows} prompts")
    return [torch.Generator(device=model.device).manual_seed(s) for s in seeds]


class Sampler(ABC):
    """Base of every sampler.

    temperature: Gumbel-max temperature for the token drawn at each position.
    suppress_eos: forbid EOS/EoT as sampled tokens (LLaDA's ``logits_eos_inf``).
    eos_confidence_zero: rank positions whose token is EOS/EoT last (the intended
        behaviour of LLaDA's ``confidence_eos_eot_inf``, for both EOS and EoT).
    stop_early: with a stop criterion, stop a row once its answer is settled.
    rank_dtype: ``float32`` (default) or ``model``: the precision rankings are computed in
        (module docstring). ``model`` reproduces the reference scripts' bf16 ranking.
    """

    registry_name = "sampler"
    # Whether committed tokens can change later (remasking); such samplers cannot stop early.
    remasks = False
    # Whether ``score`` may be computed at the current block's columns only (``step``).
    score_per_position = False
    # Whether ``step`` picks its own number of tokens (budget None); NFE then varies.
    adaptive = False
    # The precision of the sampler's reference ranking when rank_dtype is not ``model``.
    rank_precision = torch.float32

    def __init__(self, temperature: float = 0.0, suppress_eos: bool = False,
                 eos_confidence_zero: bool = False, stop_early: bool = True, rank_dtype: str = "float32"):
        options.common(temperature=temperature, rank_dtype=rank_dtype)
        self.rank_dtype = rank_dtype
        self.temperature = float(temperature)
        self.suppress_eos = suppress_eos
        self.eos_confidence_zero = eos_confidence_zero
        self.stop_early = stop_early

    @property
    def name(self) -> str:
        return self.registry_name

    def generate(self, model: Denoiser, prompts: list[list[int]], schedule: Schedule,
                 stop: StopCriterion | None = None, seed: int | list[int] = 0, trace: bool = False,
                 gen_init: list[list[int]] | None = None) -> GenerationOutput:
        state = DecodeState.start(model, prompts, schedule.gen_length, row_generators(model, seed, len(prompts)),
                                  trace, gen_init)
        # Adaptive samplers that still pace by the schedule (KLASS's fallback) read it here.
        state.extras["schedule"] = schedule
        started = time.perf_counter()
        for block in range(schedule.num_blocks):
            window = state.block_window(block, schedule.block_length)
            if self.adaptive:
                # The sampler decides how many tokens each step commits (at least one, or a
                # schedule's count), so the block takes as many forwards as it needs, within a cap.
                cap = schedule.block_length + schedule.steps_per_block
                forwards = 0
                while state.candidates(window).any():
                    if forwards == cap:
                        left = int(state.candidates(window).sum())
                        raise SamplerStalled(
                            f"{self.name} stalled at step {forwards + 1} of block {block}: {left} masked "
                            f"positions left after {cap} forwards (block_length + steps per block), "
                            f"which a sampler that commits a token per forward cannot reach")
                    state.waiting = ~state.candidates(window).any(-1)
                    self.step(model, state, window, None)
                    forwards += 1
                    if stop is not None and self.stop_early:
                        self._retire_finished(state, stop)
                state.waiting = None
                continue
            budgets = transfer_counts(state.candidates(window).sum(-1), schedule.steps_per_block)
            for step in range(schedule.steps_per_block):
                if not state.active.any():
                    break
                self.step(model, state, window, budgets[:, step])
                if stop is not None and self.stop_early and not self.remasks:
                    self._retire_finished(state, stop)
        self.finish(model, state)
        elapsed = time.perf_counter() - started
        for acc in state.accounting:
            acc.wall_s = elapsed / len(prompts)
        return self._output(model, state, stop)

    def step(self, model: Denoiser, state: DecodeState, window: Tensor, budget: Tensor) -> None:
        """One forward, then commit the best ``budget`` positions by ``score``. A score that
        reads each position's own logits and token only (``score_per_position``) is computed
        at the current block's columns, the only ones a step may commit: the same scores
        there, -inf elsewhere (which ``commit_top`` gives every position off the block
        anyway), hence the same choice, ties included. Over the whole canvas it would run a
        softmax over L x V logits per step, about 0.02 (L = 1028) to 0.05 (L = 384) of a
        step on ``cpu-bench``, that BoE's step, reading the block only, does not pay."""
        logits = state.forward(model)
        tokens = self.draw(model, logits, state)
        if self.score_per_position:
            cols = window.nonzero().flatten()
            part = self.score(self.confidence_logits(model, logits[:, cols]), tokens[:, cols], state)
            scores = part.new_full(tokens.shape, float("-inf"))
            scores[:, cols] = part
        else:
            scores = self.score(self.confidence_logits(model, logits), tokens, state)
        state.commit_top(scores, tokens, window, budget)

    def finish(self, model: Denoiser, state: DecodeState) -> None:
        """Hook after the last step (e.g. ReMDM's final denoising)."""

    def score(self, logits: Tensor, tokens: Tensor, state: DecodeState) -> Tensor:
        """[B, L] ranking, higher unmasks first. Local policies override this."""
        raise NotImplementedError(f"{type(self).__name__} must implement score() or step()")

    def draw(self, model: Denoiser, logits: Tensor, state: DecodeState) -> Tensor:
        """A token for every position; never the mask id (nor EOS/EoT under suppress_eos)."""
        forbidden = [state.mask_id] if 0 <= state.mask_id < logits.shape[-1] else []
        if self.suppress_eos:
            forbidden += list(model.eos_ids)
        uniform = state.uniform(logits.shape, torch.float64) if self.temperature > 0 else None
        return sample_tokens(logits, self.temperature, uniform=uniform, forbidden=forbidden)

    def confidence_logits(self, model: Denoiser, logits: Tensor) -> Tensor:
        """Untempered logits that confidence-like scores are read from: in the model's dtype
        under ``rank_dtype: model``, else in ``rank_precision`` (float32, or float64 for
        samplers whose reference computes in float64). Scores computed from them stay in
        their dtype."""
        logits = logits if self.rank_dtype == "model" else logits.to(self.rank_precision)
        if (self.eos_confidence_zero or self.suppress_eos) and model.eos_ids:
            logits = logits.clone()
            logits[..., list(model.eos_ids)] = float("-inf")
        return logits

    def _retire_finished(self, state: DecodeState, stop: StopCriterion) -> None:
        gen = state.x[:, state.prompt_length :]
        for row in range(gen.shape[0]):
            if state.active[row] and stop.done(gen[row], state.mask_id):
                state.active[row] = False

    def _output(self, model: Denoiser, state: DecodeState, stop: StopCriterion | None) -> GenerationOutput:
        gen = state.x[:, state.prompt_length :].cpu()
        stop = stop or StopCriterion(model.tokenizer, (), model.eos_ids)
        texts = [stop.truncate(stop.settled_prefix(row, model.mask_id))[0] for row in gen]
        return GenerationOutput(gen, texts, state.accounting, state.trace)


class LocalPolicySampler(Sampler):
    """A sampler whose ranking needs only this step's logits (confidence, margin, ...).
    ``score_per_position``: position i's score reads row i of the logits and token i alone
    (no position index, no random draw), so ``step`` scores the current block only."""

    score_per_position = True

    @abstractmethod
    def score(self, logits: Tensor, tokens: Tensor, state: DecodeState) -> Tensor: ...
