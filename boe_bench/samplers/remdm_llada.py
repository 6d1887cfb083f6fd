"""ReMDM-conf carried over to LLaDA's semi-autoregressive confidence decoding.

ReMDM ships no LLaDA version (PC-Sampler's "ReMDM" is a different loop), so this is our
reading of ReMDM-conf's intent on top of LLaDA's schedule: tokens decoded with low
confidence are the likeliest to be taken back, with ReMDM's bound on how much may be taken
back so that the block still finishes on time.

Each step of block b (n tokens, LLaDA's per-step budget k):
1. One forward; draw a token for every masked position (Gumbel-max at the temperature)
   and score it by confidence, the untempered probability of the drawn token.
2. Block-local time: alpha_t = decoded/n before the step and alpha_s = (n - m')/n after
   it, where m' = masked - k is what the schedule leaves masked. ReMDM's bound
   sigma_max = min(1, (1 - alpha_s)/alpha_t) becomes min(1, m'/decoded).
3. ReMDM-conf remask probabilities over the tokens this sampler decoded in the block:
   sigma_i = sigma_max * softmax_j(c_j)_i with c_i = -(confidence of token i when it was
   decoded). Each is remasked independently with probability sigma_i; if more than m'
   come up, the m' with the largest sigma_i are kept, so the block still ends unmasked.
4. The k + r most confident masked positions (r = number remasked) are unmasked, so every
   step still advances the block by exactly k tokens; remasked positions are not
   candidates in the step that remasks them (as in ReMDM, where a decoded token either
   stays or becomes MASK).
The last step of a block has m' = 0, hence no remasking. One forward per step, so NFE
equals steps, as for LLaDA's confidence sampler. Earlier blocks and the prompt are never
remasked: semi-AR decoding treats a finished block as context.
"""
from __future__ import annotations

import torch
from torch import Tensor

from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import DecodeState, Sampler, top_per_row


def llada_remask_probabilities(conf: Tensor, decoded: Tensor, masked_after: Tensor) -> Tensor:
    """[B, L] sigma_i = min(1, m'/decoded) * softmax(conf over decoded)_i, zero elsewhere.

    conf: [B, L] scores (-confidence at decode time); decoded: [B, L] bool, the remaskable
    tokens; masked_after: [B] masks the schedule leaves after this step (m')."""
    n_decoded = decoded.sum(-1)
    bound = (masked_after.double() / n_decoded.clamp(min=1).double()).clamp(max=1.0)
    weights = conf.double().masked_fill(~decoded, float("-inf")).softmax(-1).nan_to_num(0.0)
    return (weights * bound[:, None]).masked_fill(~decoded, 0.0)


@SAMPLERS.register("remdm_llada")
class ReMDMLLaDASampler(Sampler):
    remasks = True

    def step(self, model, state: DecodeState, window: Tensor, budget: Tensor) -> None:
        if "remdm_conf" not in state.extras:
            state.extras["remdm_conf"] = torch.full(state.x.shape, float("-inf"), dtype=torch.float64,
                                                    device=state.x.device)
            # Pre-filled clues are not the sampler's to take back.
            state.extras["remdm_ours"] = torch.zeros_like(state.masked)
        conf_scores, ours = state.extras["remdm_conf"], state.extras["remdm_ours"]
        logits = state.forward(model)
        # The draw never gives MASK (base.py), so every unmask makes exact progress.
        tokens = self.draw(model, logits, state)
        confidence = self.confidence_logits(model, logits).softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)

        candidates = state.candidates(window)
        budget = torch.minimum(budget.to(candidates.device), candidates.sum(-1))
        masked_after = candidates.sum(-1) - budget
        decoded = ours & window[None, :] & state.active[:, None]
        sigma = llada_remask_probabilities(conf_scores, decoded, masked_after)
        draws = state.uniform(sigma.shape, torch.float64)
        # At most m' remasks (those with the largest sigma), so the block still finishes.
        remask = top_per_row(sigma, draws < sigma, masked_after)
        unmask = state.top_per_row(confidence, candidates, budget + remask.sum(-1))

        state.x = torch.where(unmask, tokens, torch.where(remask, state.mask_id, state.x))
        conf_scores = torch.where(unmask, -confidence.double(), conf_scores)
        state.extras["remdm_conf"] = conf_scores.masked_fill(remask, float("-inf"))
        state.extras["remdm_ours"] = (ours | unmask) & ~remask
        if state.trace is not None:
            state.trace.append({"unmasked": unmask.sum(-1).tolist(), "remasked": remask.sum(-1).tolist()})
