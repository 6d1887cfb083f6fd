"""Random order (LLaDA's ``random`` remasking): every masked position equally likely next."""

from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import LocalPolicySampler


@SAMPLERS.register("random")
class RandomSampler(LocalPolicySampler):
    def score(self, logits, tokens, state):
        return state.uniform(tokens.shape)
