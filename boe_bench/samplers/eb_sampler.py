"""EB-Sampler (Ben-Hamu et al., arXiv 2505.24857): entropy-bounded parallel unmasking.

Each step sorts the masked positions of the current block by their error proxy (the
entropy of the predictive distribution), then commits the longest prefix whose summed
entropy minus its largest entropy stays within ``gamma`` (at least one token). The block
takes as many forwards as it needs, so NFE adapts to how certain the model is.
"""
import torch

from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import Sampler


def entropy_bounded_count(entropies: torch.Tensor, allowed: torch.Tensor, gamma: float) -> torch.Tensor:
    """[B] tokens to commit: the largest k with sum_{j<=k} H_(j) - max_{j<=k} H_(j) <= gamma
    over ascending entropies, clamped to [1, #allowed] (0 for rows with nothing allowed)."""
    ordered = entropies.masked_fill(~allowed, float("inf")).sort(-1).values
    finite = torch.isfinite(ordered)
    cumulative = torch.where(finite, ordered, 0.0).cumsum(-1)
    # Ascending order: the running maximum is the current element.
    within = (cumulative - torch.where(finite, ordered, 0.0) <= gamma) & finite
    count = within.long().cumprod(-1).sum(-1)
    return torch.minimum(count.clamp(min=1), allowed.sum(-1))


@SAMPLERS.register("eb_sampler")
class EBSampler(Sampler):
    adaptive = True

    def __init__(self, gamma: float = 0.01, **common):
        super().__init__(**common)
        self.gamma = gamma

    def step(self, model, state, window, budget):
        logits = state.forward(model)
        tokens = self.draw(model, logits, state)
        log_probs = self.confidence_logits(model, logits).log_softmax(-1)
        entropies = -(log_probs.exp() * log_probs).nan_to_num(0.0).sum(-1)
        allowed = state.candidates(window)
        count = entropy_bounded_count(entropies, allowed, self.gamma)
        state.commit_top(-entropies, tokens, window, count)
