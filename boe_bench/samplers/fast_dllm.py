"""Fast-dLLM's parallel decoding without caches (NVlabs/Fast-dLLM, llada/generate.py).

Reference read: ``generate``, ``get_transfer_index`` and ``get_transfer_index_dynamic`` of
``llada/generate.py`` @ f6b35ec3 (the threshold rule is unchanged since 24cc59e7).

``threshold`` rule: each step commits the most confident masked position of the current
block and every other one whose confidence (probability of the drawn token under the
untempered float64 softmax) is at least ``threshold``. ``factor`` rule (when ``factor`` is
set): with the block's masked confidences sorted descending c_1 >= c_2 >= ..., commit the
longest prefix with c_n >= 1 - factor / (n + 1) (n = 1 always passes). The schedule's step
count is ignored; the block takes as many forwards as it needs, each one counted.

Reference quirk kept: the factor rule's loop cannot tell "the last candidate failed" from
"every candidate passed", so when only the last of N >= 2 candidates fails it still
commits all N. ``factor_commits_failed_last: false`` gives the intended rule.
"""
import torch

from boe_bench.samplers import options
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import Sampler


def threshold_count(confidence: torch.Tensor, allowed: torch.Tensor, threshold: float) -> torch.Tensor:
    """[B] tokens to commit: the top-1 plus every other allowed position at or above threshold."""
    above = ((confidence >= threshold) & allowed).sum(-1)
    return torch.minimum(above.clamp(min=1), allowed.sum(-1))


def factor_count(confidence: torch.Tensor, allowed: torch.Tensor, factor: float,
                 commits_failed_last: bool = True) -> torch.Tensor:
    """[B] tokens to commit under the factor rule (see the module docstring)."""
    ordered = confidence.masked_fill(~allowed, float("-inf")).sort(-1, descending=True).values
    n = torch.arange(1, ordered.shape[-1] + 1, device=ordered.device, dtype=ordered.dtype)
    passes = ordered >= 1 - factor / (n + 1)
    passes[:, 0] = True
    n_allowed = allowed.sum(-1)
    count = torch.minimum(passes.long().cumprod(-1).sum(-1), n_allowed)
    if commits_failed_last:
        count = torch.where((count == n_allowed - 1) & (n_allowed >= 2), n_allowed, count)
    return count


@SAMPLERS.register("fast_dllm")
class FastDLLMSampler(Sampler):
    adaptive = True
    rank_precision = torch.float64  # the reference softmaxes logits.to(float64)

    def __init__(self, threshold: float = 0.9, factor: float | None = None,
                 factor_commits_failed_last: bool = True, **common):
        super().__init__(**common)
        options.fast_dllm(threshold=threshold, factor=factor)
        self.threshold, self.factor = threshold, factor
        self.factor_commits_failed_last = factor_commits_failed_last

    def step(self, model, state, window, budget):
        logits = state.forward(model)
        tokens = self.draw(model, logits, state)
        probs = self.confidence_logits(model, logits).softmax(-1)
        confidence = probs.gather(-1, tokens[..., None]).squeeze(-1)
        allowed = state.candidates(window)
        if self.factor is not None:
            count = factor_count(confidence, allowed, self.factor, self.factor_commits_failed_last)
        else:
            count = threshold_count(confidence, allowed, self.threshold)
        state.commit_top(confidence, tokens, window, count)
