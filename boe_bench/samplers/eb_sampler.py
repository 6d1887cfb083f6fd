"""EB-Sampler (Ben-Hamu et al., arXiv 2505.24857): entropy-bounded parallel unmasking.

There is no official code. Reference read: ``generate_with_eb_sampler`` of
NEUIR/PC-Sampler ``src/generate.py`` l.338-383 @ 8b106b09 (the re-implementation whose
scripts give gamma = 0.01), checked against the rule the paper's abstract states.

Each step ranks the masked positions of the current block by an error proxy (most certain
first), then commits the longest prefix U of that ranking with
sum_{i in U} H_i - max_{i in U} H_i <= gamma, H the entropy of each position's predictive
distribution, and at least one token. The block takes as many forwards as it needs, so NFE
adapts to how certain the model is.

``proxy``: ``entropy`` (the PC-Sampler re-implementation: low entropy first), or the
paper's other error proxies ``confidence`` (probability of the drawn token) and ``margin``
(top-1 minus top-2 probability). The bound is always on entropies.

The reference decodes the whole answer as one region (no blocks); ``block_length =
gen_length`` reproduces it, shorter blocks confine each step to the current block.
"""
import torch

from boe_bench.samplers import options
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import Sampler, entropy_of_log_probs

PROXIES = options.EB_PROXIES


def entropy_bounded_count(entropies: torch.Tensor, certainty: torch.Tensor, allowed: torch.Tensor,
                          gamma: float) -> torch.Tensor:
    """[B] tokens to commit: walking the allowed positions by descending ``certainty``, the
    largest k whose entropy sum minus entropy max stays <= gamma; at least 1 (0 for rows
    with nothing allowed)."""
    # The walk takes the order torch.topk gives, the tie rule of top_per_row (base.py).
    order = certainty.masked_fill(~allowed, float("-inf")).topk(certainty.shape[-1], dim=-1).indices
    walked = entropies.gather(-1, order)
    valid = allowed.gather(-1, order)
    walked = torch.where(valid, walked, torch.zeros_like(walked))
    # Sum minus running max never decreases along the walk, so "within" is a prefix.
    excess = walked.cumsum(-1) - walked.cummax(-1).values
    count = ((excess <= gamma) & valid).long().cumprod(-1).sum(-1)
    return torch.minimum(count.clamp(min=1), allowed.sum(-1))


@SAMPLERS.register("eb_sampler")
class EBSampler(Sampler):
    adaptive = True
    rank_precision = torch.float64

    def __init__(self, gamma: float = 0.01, proxy: str = "entropy", **common):
        super().__init__(**common)
        options.eb_sampler(gamma=gamma, proxy=proxy)
        self.gamma, self.proxy = gamma, proxy

    def step(self, model, state, window, budget):
        logits = state.forward(model)
        tokens = self.draw(model, logits, state)
        log_probs = self.confidence_logits(model, logits).log_softmax(-1)
        probs = log_probs.exp()
        entropies = entropy_of_log_probs(log_probs)
        certainty = self.certainty(probs, entropies, tokens)
        allowed = state.candidates(window)
        count = entropy_bounded_count(entropies, certainty, allowed, self.gamma)
        state.commit(state.top_per_row(certainty, allowed, count), tokens)

    def certainty(self, probs: torch.Tensor, entropies: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if self.proxy == "entropy":
            return -entropies
        if self.proxy == "confidence":
            return probs.gather(-1, tokens[..., None]).squeeze(-1)
        top2 = probs.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
