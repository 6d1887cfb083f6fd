"""LookUM, lookahead unmasking (Lee et al., arXiv 2511.05563, ICML 2026).

The authors' code is not public; this follows the paper's description as summarised in
shared/design/reference-samplers.md §1.7 (abstract, reviews, a paper note). Our reading:

1. One forward on the current canvas; draw a token for every masked position and rank the
   masked positions of the current block by certainty (probability of the drawn token).
2. Pool: the ``pool_size`` most certain of them (N-best, 5 by default; at least the step's
   budget, so a path can always unmask the scheduled count).
3. Path generator: ``num_paths`` (k = 2) distinct unmasking sets, each ``budget`` positions
   drawn uniformly without replacement from the pool.
4. Verifier: fill each set with its drawn tokens and run one lookahead forward on that
   canvas (counted in NFE). Its score is the mean negative entropy over the positions that
   are still masked in the generation region (0 when none are): an erroneous unmask shows
   up as more uncertainty everywhere else.
5. Importance-sampled choice: path j is kept with probability softmax(score / tau)_j
   (``verifier_temperature`` tau; 0 keeps the best-scoring path).

Choices the sources leave open and we fixed: uniform sampling of the sets; the drawn
(argmax at T = 0) tokens fill the lookahead canvas; the entropy mean runs over every
masked position of the answer, not only the current block; tau = 0.1.
The chosen path's lookahead forward *is* the next step's forward (same canvas), so it is
reused and not counted twice: a step costs 1 + k forwards when it follows a step without
lookahead and k otherwise. Steps whose pool admits a single set (the end of a block) skip
the lookahead.
"""
from __future__ import annotations

import itertools
import math

import torch

from boe_bench.samplers import options
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import Sampler, entropy


def mean_negative_entropy(logits: torch.Tensor, still_masked: torch.Tensor) -> torch.Tensor:
    """[B] average of sum_v p log p over ``still_masked`` positions (0 for rows with none)."""
    neg_entropy = -entropy(logits, torch.float64)
    count = still_masked.sum(-1)
    total = (neg_entropy * still_masked).sum(-1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def sample_unmasking_sets(pool: list[int], size: int, num_sets: int, generator) -> list[tuple[int, ...]]:
    """Up to ``num_sets`` distinct ``size``-subsets of ``pool``, each uniform at random."""
    available = math.comb(len(pool), size)
    if available <= num_sets:
        return [tuple(c) for c in itertools.combinations(pool, size)]
    sets: list[tuple[int, ...]] = []
    while len(sets) < num_sets:
        device = generator.device if generator is not None else "cpu"
        order = torch.randperm(len(pool), generator=generator, device=device).tolist()
        chosen = tuple(sorted(pool[i] for i in order[:size]))
        if chosen not in sets:
            sets.append(chosen)
    return sets


@SAMPLERS.register("lookum")
class LookUMSampler(Sampler):
    rank_precision = torch.float64
    def __init__(self, pool_size: int = 5, num_paths: int = 2, verifier_temperature: float = 0.1, **common):
        super().__init__(**common)
        options.lookum(pool_size=pool_size, num_paths=num_paths, verifier_temperature=verifier_temperature)
        self.pool_size, self.num_paths, self.verifier_temperature = pool_size, num_paths, verifier_temperature

    def step(self, model, state, window, budget):
        logits = self._current_logits(model, state)
        tokens = self.draw(model, logits, state)
        probs = self.confidence_logits(model, logits).softmax(-1)
        certainty = probs.gather(-1, tokens[..., None]).squeeze(-1)
        allowed = state.candidates(window)
        budget = torch.minimum(budget.to(allowed.device), allowed.sum(-1))
        pools = state.top_per_row(certainty, allowed, torch.clamp(budget, min=self.pool_size))
        paths = [
            sample_unmasking_sets(pools[row].nonzero().flatten().tolist(), int(budget[row]), self.num_paths,
                                  state.row_generator(row)) if budget[row] > 0 else [()]
            for row in range(state.x.shape[0])
        ]
        kept, next_logits = self._verify(model, state, tokens, paths)
        chosen = torch.zeros_like(allowed)
        for row, positions in enumerate(kept):
            chosen[row, list(positions)] = True
        state.commit(chosen, tokens)
        if next_logits is not None:
            state.extras["lookum_next"] = (state.x.clone(), next_logits)

    def _current_logits(self, model, state) -> torch.Tensor:
        """This canvas's logits: last step's kept lookahead when there was one, else a forward."""
        cached_x, cached = state.extras.pop("lookum_next", (None, None))
        if cached_x is not None and torch.equal(cached_x, state.x):
            return cached
        return state.forward(model)

    def _verify(self, model, state, tokens, paths) -> tuple[list[tuple[int, ...]], torch.Tensor | None]:
        """The kept set of each row and, when lookaheads ran, the logits of the kept canvases."""
        batch = state.x.shape[0]
        most = max(len(p) for p in paths)
        if most == 1:
            return [p[0] for p in paths], None
        gen = slice(state.prompt_length, None)
        scores = torch.full((batch, most), float("-inf"), dtype=torch.float64, device=state.x.device)
        lookahead_logits = []
        for j in range(most):
            canvas = state.x.clone()
            for row, row_paths in enumerate(paths):
                positions = list(row_paths[min(j, len(row_paths) - 1)])
                canvas[row, positions] = tokens[row, positions]
            time = None
            if model.time_conditioned:
                time = (canvas[:, gen] == state.mask_id).sum(-1).float() / max(canvas.shape[1] - state.prompt_length, 1)
            with torch.no_grad():
                logits = model(canvas, attention_mask=state.attention_mask, time=time)
            # A row's j-th canvas is new work only while it has a j-th path; single-path rows
            # pay for j = 0, whose logits then serve as their next step's forward.
            runs = torch.tensor([len(p) > j for p in paths], device=state.x.device)
            self._count(state, runs)
            still_masked = canvas[:, gen] == state.mask_id
            scores[:, j] = torch.where(runs, mean_negative_entropy(logits[:, gen], still_masked), scores[:, j])
            lookahead_logits.append(logits)
        keep = self._choose(scores, self._path_uniforms(state, scores, [len(p) for p in paths]))
        kept = [paths[row][int(keep[row])] for row in range(batch)]
        next_logits = torch.stack([lookahead_logits[int(keep[row])][row] for row in range(batch)])
        return kept, next_logits

    def _choose(self, scores: torch.Tensor, uniform: torch.Tensor | None) -> torch.Tensor:
        """[B] kept path: a draw from softmax(scores / tau) (Gumbel-max on ``uniform``), or the
        argmax at tau = 0."""
        if self.verifier_temperature == 0:
            return scores.argmax(-1)
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
        return (scores / self.verifier_temperature + gumbel).argmax(-1)

    def _path_uniforms(self, state, scores: torch.Tensor, counts: list[int]) -> torch.Tensor | None:
        """U(0, 1) draws for ``_choose``: a row draws one per path it has from its own stream, and
        none with a single path, as it would alone."""
        if self.verifier_temperature == 0:
            return None
        uniform = torch.full(scores.shape, 0.5, dtype=torch.float64, device=scores.device)
        for row, count in enumerate(counts):
            if count > 1 and state.decoding[row]:
                uniform[row, :count] = torch.rand(count, dtype=torch.float64, device=scores.device,
                                                  generator=state.row_generator(row))
        return uniform

    @staticmethod
    def _count(state, rows: torch.Tensor) -> None:
        for row, acc in enumerate(state.accounting):
            if state.active[row] and rows[row]:
                acc.nfe += 1
