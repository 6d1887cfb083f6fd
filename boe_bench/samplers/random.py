"""Random order (LLaDA's ``random`` remasking): every masked position equally likely next."""

from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import LocalPolicySampler


@SAMPLERS.register("random")
class RandomSampler(LocalPolicySampler):
    score_per_position = False  # one uniform per canvas position, as the reference draws them

    def score(self, logits, tokens, state):
        return state.uniform(tokens.shape)
