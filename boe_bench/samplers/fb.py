"""The forward-backward (FB) corrector, ReMDM's baseline (Wang et al., 2025, after Campbell
et al., 2022): MDLM ancestral sampling in which every step first re-noises decoded tokens
with the forward process's own remask probability, then predicts.

It is the ReMDM kernel (``boe_bench.samplers.remdm``, same grid, nucleus, caching, final
argmax step and NFE accounting) with the remask probability of a decoded token set to

    sigma_t = (alpha_s - alpha_t) / alpha_t          (sigma_t = 1 where alpha_t = 0),

(kuleshov-group/remdm ``diffusion.py``, ``_ddpm_caching_update``, branch
``sampler == 'forward-backward'``, l. 686-699). With MDLM's log-linear schedule
alpha = 1 - t and s = t - dt this is sigma_t = dt / (1 - t): a decoded token is remasked at
the rate at which the reverse step decodes (alpha_s - alpha_t, relative to the decoded
fraction alpha_t), so masked tokens unmask at twice MDLM's rate. The kernel of one step
t -> s, for a position holding x_t:

    x_t decoded:  x_t w.p. 1 - sigma_t,  MASK w.p. sigma_t;
    x_t = MASK:   token v w.p. p_x0(v) * a,  MASK w.p. 1 - a,
                  a = (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t) = 2 dt / t.

On the last step (t = eps + dt) sigma_t exceeds ReMDM's bound (1 - alpha_s)/alpha_t, so a
would be > 1 and the MASK entry negative; the reference's Gumbel draw never picks a
negative entry, so a masked token unmasks with probability one. ``transition_probs`` clips a
to 1, which is the same distribution. Right after the first step (t = 1 - dt, alpha_t = dt)
sigma_t = 1: every token decoded at t = 1 is remasked, as in the reference.
"""
from __future__ import annotations

from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.remdm import ReMDMSampler


def fb_sigma(alpha_t: float, alpha_s: float) -> float:
    """The forward-backward remask probability (alpha_s - alpha_t)/alpha_t (1 at alpha_t = 0)."""
    return 1.0 if alpha_t <= 0 else (alpha_s - alpha_t) / alpha_t


@SAMPLERS.register("fb")
class ForwardBackwardSampler(ReMDMSampler):
    """MDLM + forward-backward corrector (ReMDM's ``forward-backward`` sampler)."""

    def __init__(self, nucleus_p: float = 0.9, steps: int | None = None, eps: float = 1e-5,
                 final_denoise: bool = True):
        super().__init__(strategy="mdlm", eta=0.0, nucleus_p=nucleus_p, steps=steps, eps=eps,
                         final_denoise=final_denoise)

    @property
    def name(self) -> str:
        return "fb"

    def coefficients(self, t: float, s: float) -> tuple[float, float, float]:
        alpha_t, alpha_s = 1 - t, 1 - s
        return alpha_t, alpha_s, fb_sigma(alpha_t, alpha_s)


__all__ = ["ForwardBackwardSampler", "fb_sigma"]
