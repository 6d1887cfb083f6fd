"""Entropy (Dream's ``entropy``): unmask where the predictive distribution is most certain."""
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import LocalPolicySampler


@SAMPLERS.register("entropy")
class EntropySampler(LocalPolicySampler):
    def score(self, logits, tokens, state):
        log_probs = logits.log_softmax(-1)
        # Negative entropy; xlogy-style nan_to_num keeps -inf logits (p = 0) from giving NaN.
        return (log_probs.exp() * log_probs).nan_to_num(0.0).sum(-1)
