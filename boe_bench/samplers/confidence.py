"""Confidence (LLaDA's ``low_confidence`` remasking): unmask where the drawn token is likeliest."""
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import LocalPolicySampler


@SAMPLERS.register("confidence")
class ConfidenceSampler(LocalPolicySampler):
    def score(self, logits, tokens, state):
        # Probability of the drawn token under the untempered, noise-free distribution.
        return logits.softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
