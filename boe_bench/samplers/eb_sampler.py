"""EB-Sampler (Ben-Hamu et al., arXiv 2505.24857): entropy-bounded parallel unmasking.

There is no official code. Reference read: ``generate_with_eb_sampler`` of
NEUIR/PC-Sampler ``src/generate.py`` l.338-383 @ 8b106b09 (the re-implementation whose
scripts give gamma = 0.01), checked against the rule the paper's abstract states.

Each step sorts the masked positions of the current block by an error proxy (most certain
first), then commits the longest prefix U of that order with
sum_{i in U} H_i - max_{i in U} H_i <= gamma, H the entropy of each position's predictive
distribution, and at least one token. The block takes as many forwards as it needs, so NFE
adapts to how certain the model is.

Computed as the reference computes it, so that its choices are reproduced token for token:
H is ``torch.distributions.Categorical(logits=...).entropy()`` of the row's candidate
positions gathered in position order, in the dtype of the ranking logits (float32 by
default, the model's under ``rank_dtype: model``: bf16 for a bf16 model, as the reference
run on one); the order is ``argsort`` of the proxy over that gathered vector (its tie
order, not topk's over the canvas); sum and running max are taken in H's dtype and k counts
the positions within gamma. One row at a time, so a row chooses what it would alone.

``proxy``: ``entropy`` (the PC-Sampler re-implementation: low entropy first), or the
paper's other error proxies ``confidence`` (probability of the drawn token) and ``margin``
(top-1 minus top-2 probability), high first. The bound is always on entropies.

The reference decodes the whole answer as one region (no blocks); ``block_length =
gen_length`` reproduces it, shorter blocks confine each step to the current block.
"""
import torch
from torch.distributions import Categorical

from boe_bench.samplers import options
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import Sampler

PROXIES = options.EB_PROXIES


def entropy_bounded_order(entropies: torch.Tensor, error: torch.Tensor, gamma: float) -> tuple[torch.Tensor, int]:
    """(order, k) for one row's candidates: ``order`` sorts them by ascending ``error`` (1-D,
    in position order; ``argsort``'s tie rule), k the number whose entropy sum minus running
    max along that order is <= gamma, between 1 and the number of candidates."""
    order = torch.argsort(error)
    walked = entropies[order]
    # Sum minus running max never decreases along the walk, so the positions within form a prefix.
    within = int(((walked.cumsum(0) - walked.cummax(0).values) <= gamma).sum())
    return order, min(max(within, 1), walked.numel())


@SAMPLERS.register("eb_sampler")
class EBSampler(Sampler):
    adaptive = True
    rank_precision = torch.float32  # the reference's Categorical runs in the logits' dtype

    def __init__(self, gamma: float = 0.01, proxy: str = "entropy", **common):
        super().__init__(**common)
        options.eb_sampler(gamma=gamma, proxy=proxy)
        self.gamma, self.proxy = gamma, proxy

    def step(self, model, state, window, budget):
        logits = state.forward(model)
        tokens = self.draw(model, logits, state)
        rank_logits = self.confidence_logits(model, logits)
        allowed = state.candidates(window)
        chosen = torch.zeros_like(allowed)
        for row in range(allowed.shape[0]):
            positions = allowed[row].nonzero().flatten()
            if positions.numel() == 0:
                continue
            candidate_logits = rank_logits[row, positions]
            entropies = Categorical(logits=candidate_logits, validate_args=False).entropy()
            order, k = entropy_bounded_order(entropies, self.error(candidate_logits, entropies,
                                                                   tokens[row, positions]), self.gamma)
            chosen[row, positions[order[:k]]] = True
        state.commit(chosen, tokens)

    def error(self, logits: torch.Tensor, entropies: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The error proxy of each candidate, low first."""
        if self.proxy == "entropy":
            return entropies
        probs = logits.softmax(-1)
        if self.proxy == "confidence":
            return -probs.gather(-1, tokens[..., None]).squeeze(-1)
        top2 = probs.topk(2, dim=-1).values
        return top2[..., 1] - top2[..., 0]
