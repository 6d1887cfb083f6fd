"""SEDD's own sampler for the absorbing graph: the analytic ("Tweedie" tau-leaping) predictor
(louaaron/Score-Entropy-Discrete-Diffusion ``sampling.py`` ``AnalyticPredictor`` and
``Denoiser``, ``graph_lib.Absorbing.staggered_score`` / ``transp_transition``; the same code in
kuleshov-group/remdm ``diffusion.py`` ``_analytic_update`` / ``_denoiser_update`` l. 961-993,
which ReMDM's SEDD baseline runs: ``scripts/sedd.sh``, ``sampling.predictor=analytic``, no
nucleus). Table 4's "SEDD (absorb)" row is this sampler on a SEDD checkpoint.

Derivation. At a masked position with scores s_y (y real) and s_MASK = 1, total noise
sigma_t and dsigma = sigma_t - sigma_s, the reference forms
stag = e^dsigma s, stag_MASK += (1 - e^dsigma) sum(s) and multiplies by the transposed
transition (1 - e^-dsigma for every y, 1 for MASK):

    P(y)    = s_y (e^dsigma - 1),             P(MASK) = 1 - S (e^dsigma - 1),   S = sum_y s_y.

With s_y = p~(y) / (e^sigma_t - 1) (``models/sedd.py``: p~ = exp(logits), the model's
unnormalised p(x0 | x_t), mass Z = sum_y p~(y)) and the log-linear noise
e^sigma(t) = 1 / (1 - (1 - 1e-3) t), (e^dsigma - 1)/(e^sigma_t - 1) = (t - s)/t exactly, so

    P(y) = p~(y) (t - s)/t,                   P(MASK) = 1 - Z (t - s)/t,

MDLM's ancestral step on the unnormalised denoiser. A decoded token stays (its transposed
transition is e^-dsigma at itself and 0 elsewhere). The reference draws by Gumbel-max on these
unnormalised entries, which never picks a negative one, so P(MASK) is clipped at 0 and the row
renormalised; ``sample_categorical`` does the same. Final step (``Denoiser``, at t = eps, with
dsigma = sigma): MASK's entry is zeroed and a token is *sampled* from p~ (not the argmax).

Grid t_i = linspace(1, eps = 1e-5, T + 1), one forward per step (SEDD is time-conditioned, so
nothing is cached) plus the final one: NFE = T + 1. On a denoiser with normalised outputs
(``unnormalised_p_x0`` unset) Z = 1 and this is MDLM's sampler without nucleus filtering and
with a sampled final step. SEDD's Euler predictor is not implemented (Table 4 uses analytic).
"""
from __future__ import annotations

import torch
from torch import Tensor

from boe_bench.models.base import Denoiser
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import DecodeState
from boe_bench.samplers.remdm import ReMDMSampler, sample_categorical, subs_probs


def unnormalised_p_x0(logits: Tensor, x: Tensor, mask_id: int) -> Tensor:
    """exp(logits) in float64 with MASK at 0 and decoded rows one-hot at their token."""
    p = logits.double().exp()
    p = p.masked_fill(torch.arange(p.shape[-1], device=p.device) == mask_id, 0.0)
    decoded = torch.nn.functional.one_hot(x, p.shape[-1]).to(p.dtype)
    return torch.where((x != mask_id)[..., None], decoded, p)


def analytic_probs(p: Tensor, x: Tensor, mask_id: int, t: float, s: float) -> Tensor:
    """[B, L, V] unnormalised kernel of one analytic step t -> s (see the module docstring)."""
    ratio = (t - s) / t
    mass = p.sum(-1, keepdim=True)
    mask_column = torch.arange(p.shape[-1], device=p.device) == mask_id
    masked = torch.where(mask_column, (1 - mass * ratio).clamp(min=0.0), p * ratio)
    return torch.where((x == mask_id)[..., None], masked, p)


@SAMPLERS.register("sedd_analytic")
class SEDDAnalyticSampler(ReMDMSampler):
    """SEDD's analytic predictor plus its final denoising step."""

    def __init__(self, steps: int | None = None, eps: float = 1e-5, final_denoise: bool = True):
        super().__init__(strategy="mdlm", eta=0.0, nucleus_p=1.0, steps=steps, eps=eps, final_denoise=final_denoise)

    @property
    def name(self) -> str:
        return "sedd_analytic"

    def denoise(self, model: Denoiser, logits: Tensor, x: Tensor, mask_id: int) -> tuple[Tensor, Tensor]:
        if getattr(model, "unnormalised_p_x0", False):
            p = unnormalised_p_x0(logits, x, mask_id)
        else:
            p = subs_probs(logits, x, mask_id).double()
        return p, p.argmax(-1)

    def transition(self, p_x0: Tensor, state: DecodeState, t: float, s: float) -> Tensor:
        return analytic_probs(p_x0, state.x, state.mask_id, t, s)

    def final_tokens(self, state: DecodeState) -> Tensor:
        p_x0 = state.extras["p_x0"]
        return sample_categorical(p_x0, uniform=state.uniform(p_x0.shape, torch.float64))


__all__ = ["SEDDAnalyticSampler", "analytic_probs", "unnormalised_p_x0"]
