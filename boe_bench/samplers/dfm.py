"""The Discrete Flow Models (DFM) corrector, ReMDM's baseline (Campbell et al., 2024,
"Generative Flows on Discrete State-Spaces", Appendix D; kuleshov-group/remdm ``diffusion.py``
``_dfm_caching_update`` l. 595-656 and the ``sampling.dfm`` loop in ``_sample`` l. 865-871).

DFM adds to the masked-diffusion reverse CTMC a corrector of weight eta_t: masked tokens
unmask at (1 + eta_t) times the predictor's rate and decoded tokens remask at eta_t times the
forward process's rate. With MDLM's log-linear schedule (t = masked fraction, alpha_t = 1 - t)
and the reference's hard-coded schedule

    a_t = 1 + eta_t,  b_t = eta_t = 10 t^0.25 (1 - t)^0.25,

one Euler step t -> s = t - dt has, for a position holding x_t,

    x_t = MASK:   token v w.p. p_x0(v) * a_t (alpha_s - alpha_t)/(1 - alpha_t) = p_x0(v) a_t dt / t,
                  MASK w.p. 1 - a_t dt / t;
    x_t decoded:  MASK w.p. b_t (alpha_s / alpha_t - 1) = b_t dt / (1 - t), else x_t,

and on the first step (t = 1) the plain MDLM step (v w.p. p_x0(v) dt, MASK w.p. 1 - dt).
This is exactly ReMDM's kernel with remask probability sigma_t = b_t (alpha_s - alpha_t)/alpha_t,
i.e. ``b_t`` times the forward-backward corrector's: ReMDM's masked-row probability
(alpha_s - (1 - sigma_t) alpha_t)/(1 - alpha_t) = (dt + b_t dt)/t = a_t dt / t, since
a_t = 1 + b_t. So the kernel is ``transition_probs`` with that sigma, and nucleus filtering,
p_x0 caching, NFE accounting and the final argmax step are ReMDM's.

Time grid (the difference from FB): adaptive, as in the reference. t starts at 1 with
dt = 1/T; afterwards dt = min(1/T, 1 / (a_t/t + b_t/(1 - t))), which keeps both
probabilities above in [0, 1] (their sum a_t dt/t + b_t dt/(1 - t) <= 1). The loop runs while
t > (1 - eps)/T, and the final denoising step is taken at the last t reached. The number of
steps therefore exceeds T (the corrector shrinks dt near t = 0 and t = 1): 38 for T = 16,
133 for T = 128, 1025 for T = 1024; each step costs one forward unless the canvas is unchanged.
"""
from __future__ import annotations

from boe_bench.samplers import options
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.remdm import ReMDMSampler


@SAMPLERS.register("dfm")
class DFMSampler(ReMDMSampler):
    """MDLM + DFM corrector with the reference's stochasticity schedule
    eta_t = scale * t^power * (1 - t)^power (scale 10, power 0.25)."""

    def __init__(self, nucleus_p: float = 0.9, steps: int | None = None, eps: float = 1e-5,
                 final_denoise: bool = True, scale: float = 10.0, power: float = 0.25):
        super().__init__(strategy="mdlm", eta=0.0, nucleus_p=nucleus_p, steps=steps, eps=eps,
                         final_denoise=final_denoise)
        options.dfm(scale=scale, power=power)
        self.scale, self.power = float(scale), float(power)

    @property
    def name(self) -> str:
        return "dfm"

    def corrector(self, t: float) -> tuple[float, float]:
        """(a_t, b_t) = (1 + eta_t, eta_t)."""
        eta = self.scale * t ** self.power * (1 - t) ** self.power
        return 1.0 + eta, eta

    def step_size(self, t: float, steps: int) -> float:
        if t >= 1:
            return 1.0 / steps
        a, b = self.corrector(t)
        return min(1.0 / steps, 1.0 / (a / t + b / (1 - t)))

    def time_points(self, steps: int) -> tuple[list[tuple[float, float]], float]:
        points, t = [], 1.0
        while t > (1 - self.eps) / steps:
            s = t - self.step_size(t, steps)
            points.append((t, s))
            t = s
        return points, t

    def coefficients(self, t: float, s: float) -> tuple[float, float, float]:
        alpha_t, alpha_s = 1 - t, 1 - s
        if t >= 1:  # the reference's first step is MDLM's
            return alpha_t, alpha_s, 0.0
        _, b = self.corrector(t)
        return alpha_t, alpha_s, b * (alpha_s - alpha_t) / alpha_t


__all__ = ["DFMSampler"]
