"""Entropy (Dream's ``entropy``): unmask where the predictive distribution is most certain."""
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import LocalPolicySampler, entropy


@SAMPLERS.register("entropy")
class EntropySampler(LocalPolicySampler):
    def score(self, logits, tokens, state):
        return -entropy(logits, logits.dtype)  # in the ranking dtype (rank_dtype)
