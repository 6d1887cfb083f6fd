"""Margin (Dream's ``topk_margin``): unmask where the top-1 probability leads the top-2 most."""
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import LocalPolicySampler


@SAMPLERS.register("margin")
class MarginSampler(LocalPolicySampler):
    def score(self, logits, tokens, state):
        top2 = logits.softmax(-1).topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
