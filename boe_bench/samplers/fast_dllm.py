"""Fast-dLLM's parallel decoding (NVlabs/Fast-dLLM, llada/generate.py).

``threshold`` rule: each step commits the most confident masked position of the current
block and every other one whose confidence (probability of the drawn token, float64) is at
least ``threshold``. ``factor`` rule (when ``factor`` is set): with confidences sorted
descending c_1 >= c_2 >= ..., commit the longest prefix with c_n >= 1 - factor / (n + 1)
(n = 1 always passes). The block takes as many forwards as it needs.
"""
import torch

from boe_bench.errors import ConfigError
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import Sampler


def threshold_count(confidence: torch.Tensor, allowed: torch.Tensor, threshold: float) -> torch.Tensor:
    above = ((confidence >= threshold) & allowed).sum(-1)
    return torch.minimum(above.clamp(min=1), allowed.sum(-1))


def factor_count(confidence: torch.Tensor, allowed: torch.Tensor, factor: float) -> torch.Tensor:
    ordered = confidence.masked_fill(~allowed, float("-inf")).sort(-1, descending=True).values
    n = torch.arange(1, ordered.shape[-1] + 1, device=ordered.device, dtype=ordered.dtype)
    passes = ordered >= 1 - factor / (n + 1)
    passes[:, 0] = True
    count = passes.long().cumprod(-1).sum(-1)
    return torch.minimum(count, allowed.sum(-1))


@SAMPLERS.register("fast_dllm")
class FastDLLMSampler(Sampler):
    adaptive = True

    def __init__(self, threshold: float = 0.9, factor: float | None = None, **common):
        super().__init__(**common)
        if factor is None and not 0 < threshold <= 1:
            raise ConfigError(f"fast_dllm threshold must be in (0, 1], got {threshold}")
        self.threshold, self.factor = threshold, factor

    def step(self, model, state, window, budget):
        logits = state.forward(model)
        tokens = self.draw(model, logits, state)
        probs = self.confidence_logits(model, logits).double().softmax(-1)
        confidence = probs.gather(-1, tokens[..., None]).squeeze(-1)
        allowed = state.candidates(window)
        if self.factor is not None:
            count = factor_count(confidence, allowed, self.factor)
        else:
            count = threshold_count(confidence, allowed, self.threshold)
        state.commit_top(confidence, tokens, window, count)
