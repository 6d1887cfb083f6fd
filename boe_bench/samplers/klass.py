"""KLASS (shkim0116/KLASS): unmask tokens that are both confident and KL-stable.

Reference read: ``stable_confident_decode`` of ``src/model/llada_klass.py`` @ ad87ecbe
(l.43-218, ``alg="klass"``, ``unmask_strategy="all"``) and ``scripts/llada_*.sh``.

Every forward gives each position a distribution p_t (untempered softmax, float64) and the
drawn token's probability c_t. KL_t = KL(p_t || p_{t-1}) is computed at every position and
the last ``kl_history_length`` values are kept (the history runs across blocks; before the
first forward the previous distribution is "none", so the first KL is infinite). A masked
position of the current block is ready when c_t > conf_threshold and all kept KLs are
< kl_threshold; from the (kl_history_length - 1)-th step of a block on. If a row has ready
positions, all of them are unmasked; otherwise the row falls back to the LLaDA schedule's
count for this step, by confidence. A block ends as soon as it has no masks, so NFE (the
reference's ``used_steps``) is at most ``steps``.

Deviations, all invisible in the reference's scripts (T = 0, steps = gen_length):
- When steps < gen_length, a ready step may commit fewer tokens than the schedule, and the
  reference then runs out of steps with masks left in the block (they stay MASK in its
  output). Here the block keeps stepping with the same rule, the fallback repeating the
  schedule's last count, until it is full; these forwards are counted.
- When steps < gen_length, a ready step may also commit more tokens than the schedule, so
  that a later fallback asks for more positions than are still masked. The reference's
  ``topk(confidence, k)`` then also returns -inf positions, i.e. already decoded tokens or
  positions of later blocks, and writes its argmax there: it overwrites decoded tokens and
  fills later blocks early. Here a fallback commits at most the block's masked positions
  (``top_per_row``), so a decoded token never changes and no block is written before its
  turn.
- At T > 0 the reference softmaxes its Gumbel-perturbed *probabilities* (``exp(l)/g^T``)
  to get both the token and the distributions; here the token is drawn by Gumbel-max and
  confidence and KL come from the untempered distribution, as in LLaDA.
"""
import torch

from boe_bench.samplers import options
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import Sampler
from boe_bench.samplers.schedule import transfer_counts


def kl_divergence(p_curr: torch.Tensor, p_prev: torch.Tensor | None) -> torch.Tensor:
    """KL(p_curr || p_prev) over the last axis; the reference's 1e-12 guard inside both logs."""
    if p_prev is None:
        return torch.full(p_curr.shape[:-1], float("inf"), dtype=p_curr.dtype, device=p_curr.device)
    eps = 1e-12
    return (p_curr * (torch.log(p_curr + eps) - torch.log(p_prev + eps))).sum(-1)


@SAMPLERS.register("klass")
class KLASSSampler(Sampler):
    adaptive = True
    rank_precision = torch.float64

    def __init__(self, conf_threshold: float = 0.9, kl_threshold: float = 0.01, kl_history_length: int = 2,
                 **common):
        super().__init__(**common)
        options.klass(kl_history_length=kl_history_length)
        self.conf_threshold, self.kl_threshold = conf_threshold, kl_threshold
        self.kl_history_length = kl_history_length

    def step(self, model, state, window, budget):
        step_in_block, fallback = self._pace(state, window)
        logits = state.forward(model)
        tokens = self.draw(model, logits, state)
        gen = slice(state.prompt_length, None)
        p_curr = self.confidence_logits(model, logits[:, gen]).softmax(-1)
        confidence = torch.full(state.x.shape, float("-inf"), dtype=p_curr.dtype, device=state.x.device)
        confidence[:, gen] = p_curr.gather(-1, tokens[:, gen, None]).squeeze(-1)

        # Only generation positions can ever be ready, so only they keep a history. A row's
        # history and previous distribution move only on the forwards that serve it (decoding),
        # as they would if it ran alone.
        decoding = state.decoding
        p_prev = state.extras.get("klass_p_prev")
        kl = kl_divergence(p_curr, p_prev).double()  # history in float64, as the reference
        history = state.extras.get("klass_history")
        if history is None:
            history = torch.zeros(*kl.shape, self.kl_history_length, dtype=torch.float64, device=kl.device)
        moved = torch.cat([history[..., 1:], kl[..., None]], dim=-1)
        history = torch.where(decoding[:, None, None], moved, history)
        p_curr = p_curr if p_prev is None else torch.where(decoding[:, None, None], p_curr, p_prev)
        state.extras["klass_history"], state.extras["klass_p_prev"] = history, p_curr

        allowed = state.candidates(window)
        ready = torch.zeros_like(allowed)
        ready[:, gen] = (history < self.kl_threshold).all(-1)
        ready &= (step_in_block >= self.kl_history_length - 1)[:, None]
        ready &= (confidence > self.conf_threshold) & allowed
        has_ready = ready.any(-1, keepdim=True)
        chosen = torch.where(has_ready, ready, state.top_per_row(confidence, allowed, fallback))
        state.commit(chosen, tokens)

    def _pace(self, state, window) -> tuple[torch.Tensor, torch.Tensor]:
        """[B] each row's step index within its block (counting the forwards that served it),
        and [B] the schedule's fallback count for that step."""
        block_start = int(window.nonzero()[0])
        if state.extras.get("klass_block_start") != block_start:
            steps = state.extras["schedule"].steps_per_block
            state.extras["klass_block_start"] = block_start
            state.extras["klass_step"] = torch.zeros(state.x.shape[0], dtype=torch.long, device=state.x.device)
            state.extras["klass_counts"] = transfer_counts(state.candidates(window).sum(-1), steps)
        step, counts = state.extras["klass_step"], state.extras["klass_counts"]
        state.extras["klass_step"] = step + state.decoding.long()
        # Past the schedule (steps < gen_length, a ready step committed fewer), its last count again.
        last = counts.shape[1] - 1
        fallback = torch.where(step <= last, counts.gather(1, step.clamp(max=last)[:, None]).squeeze(1),
                               counts[:, -1].clamp(min=1))
        return step, fallback
