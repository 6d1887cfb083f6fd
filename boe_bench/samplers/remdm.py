"""ReMDM (Wang et al., 2025, "Remasking Discrete Diffusion Models with Inference-Time
Scaling"): ancestral MDLM sampling in which already-decoded tokens may be remasked.

Schedule (MDLM's log-linear noise, as in kuleshov-group/remdm ``_sample``): T steps on
t_i = linspace(1, eps, T + 1), eps = 1e-5, s = t - (1 - eps)/T, alpha_t = 1 - t.

Posterior. ReMDM asks for a reverse kernel q_sigma(z_s | z_t, x) whose marginals stay
those of the forward process, q(z_s | x) = Cat(alpha_s x + (1 - alpha_s) m), while a decoded
token returns to the mask m with probability sigma_t:
    z_t = x (decoded):  q = (1 - sigma_t) x + sigma_t m.
    z_t = m (masked):   q = a x + (1 - a) m.
Matching P(z_s = x) = alpha_t (1 - sigma_t) + (1 - alpha_t) a = alpha_s gives
    a = (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t),
    1 - a = (1 - alpha_s - sigma_t alpha_t) / (1 - alpha_t),
which is a probability only while sigma_t <= sigma_max = min(1, (1 - alpha_s) / alpha_t).
Sampling replaces x by the denoiser's p_x0 (SUBS: a decoded token's p_x0 is one-hot at
itself, MASK has probability 0; ``subs_probs`` imposes this on denoisers without SUBS,
such as LLaDA), after nucleus filtering (keep sorted tokens while the
cumulative probability is <= p, always the top one; renormalise). sigma_t = 0 is MDLM.

Strategies (sigma_t; alpha_t = 0 at t = 1 makes sigma_max = 1):
- ``mdlm``:    sigma = 0.
- ``cap``:     sigma = min(eta, sigma_max)            (reference eta = 0.008).
- ``rescale``: sigma = eta * sigma_max                (reference eta = 0.015).
- ``conf``:    sigma_i = sigma_max * softmax_j(c_j)_i over the generation region, 0 at masked
               positions; c_i = -p_x0(x_i) recorded when token i was decoded, -inf until
               then and after a remask (so less certain tokens are likelier to be remasked).
- ``loop``:    t > t_on: MDLM with alpha rescaled to run 0 -> alpha_on,
               alpha = (1 - t) alpha_on / (1 - t_on); t <= t_off: MDLM with
               alpha = 1 - t (1 - alpha_on) / t_off (alpha_on -> 1); in between alpha_t =
               alpha_s = alpha_on and sigma = eta, so masked tokens unmask with probability
               eta alpha_on / (1 - alpha_on) and decoded ones remask with probability eta
               (reference eta = 0.02, t_on = 0.55, t_off = 0.05, alpha_on = 0.9).
After the T steps one more denoising step at t = eps takes the argmax of p_x0 (no
nucleus), so no mask is left.

Caching: a time-independent denoiser's p_x0 is reused while a row's canvas is unchanged
(MDLM's ``ddpm_cache``); only real forwards count as NFE, per row, and only rows whose
cache is stale are run. The final denoising step reuses the cache too when it is valid
(the reference always runs it; the argmax is the same).

Deliberate differences from the reference: prompt and pre-filled tokens are never
remasked (the reference generates unconditionally, with no prompt); the ``conf`` scores
are kept in float64 (the reference stores them in bfloat16); in the ``loop`` strategy
alpha is clipped to [0, 1], which the reference can overshoot when steps are coarse.
ReMDM works on the whole generation region at once: the schedule's blocks are ignored.
An empty prompt (unconditional generation) is a prompt list ``[]``; a BOS-only prompt
``[bos]`` works the same way and is never remasked.
"""
from __future__ import annotations

import time as clock

import torch
from torch import Tensor

from boe_bench.samplers import options
from boe_bench.models.base import Denoiser
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import DecodeState, GenerationOutput, Sampler, StopCriterion, row_generators
from boe_bench.samplers.schedule import Schedule

STRATEGIES = options.REMDM_STRATEGIES


def nucleus(probs: Tensor, top_p: float) -> Tensor:
    """Keep the most likely tokens while their cumulative probability is <= top_p (always
    the first), renormalised. top_p >= 1 leaves ``probs`` as they are."""
    if top_p >= 1:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep = sorted_probs.cumsum(-1) <= top_p
    keep[..., 0] = True
    kept = sorted_probs * keep
    kept = kept / kept.sum(-1, keepdim=True)
    return torch.zeros_like(probs).scatter_(-1, order, kept)


def subs_probs(logits: Tensor, x: Tensor, mask_id: int) -> Tensor:
    """p_x0 with MDLM's SUBS constraints whatever the denoiser: MASK has probability 0 and a
    decoded token is one-hot at itself. A no-op on MDLM's own output; it lets ReMDM run on
    denoisers without SUBS (LLaDA, Dream). In float32 or wider: nucleus filtering sorts and
    sums 50k probabilities."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    logits = logits.masked_fill(torch.arange(logits.shape[-1], device=logits.device) == mask_id, float("-inf"))
    probs = logits.softmax(-1)
    decoded = torch.nn.functional.one_hot(x, probs.shape[-1]).to(probs.dtype)
    return torch.where((x != mask_id)[..., None], decoded, probs)


def sample_categorical(q: Tensor, generator: torch.Generator | None = None, uniform: Tensor | None = None) -> Tensor:
    """Gumbel-max on unnormalised probabilities in float64 (the reference's form); ``uniform``:
    the U(0, 1) draws to use (``DecodeState.uniform``), else drawn here from ``generator``."""
    q = q.double()
    if uniform is None:
        uniform = torch.rand(q.shape, dtype=torch.float64, device=q.device, generator=generator)
    return (q / (1e-10 - (uniform + 1e-10).log())).argmax(-1)


def sigma_max(alpha_t: float, alpha_s: float) -> float:
    """The largest remask probability that keeps the marginals: min(1, (1 - alpha_s)/alpha_t)."""
    return 1.0 if alpha_t <= 0 else min(1.0, (1 - alpha_s) / alpha_t)


def transition_probs(p_x0: Tensor, x: Tensor, mask_id: int, alpha_t: float, alpha_s: float,
                     sigma: Tensor | float) -> Tensor:
    """q(z_s | z_t = x, x0 ~ p_x0) [B, L, V] in float64; ``sigma`` scalar or [B, L]."""
    p = p_x0.double()
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=p.device)
    if sigma.dim() == 2:
        sigma = sigma[..., None]
    mask_column = torch.arange(p.shape[-1], device=p.device) == mask_id
    decoded = torch.where(mask_column, sigma, p * (1 - sigma))
    # Clipped to [0, 1]: a no-op while sigma <= sigma_max (every ReMDM strategy); the
    # forward-backward corrector's sigma exceeds it on the last step, where the reference's
    # Gumbel draw never picks the negative MASK entry, i.e. unmasks with probability one.
    unmask = ((alpha_s - (1 - sigma) * alpha_t) / (1 - alpha_t)).clamp(0.0, 1.0)
    masked = torch.where(mask_column, 1 - unmask, p * unmask)
    return torch.where((x == mask_id)[..., None], masked, decoded)


@SAMPLERS.register("remdm")
class ReMDMSampler(Sampler):
    """ReMDM (strategy cap | rescale | conf | loop) or plain MDLM (strategy mdlm)."""

    remasks = True

    def __init__(self, strategy: str = "rescale", eta: float = 0.015, t_on: float = 0.55, t_off: float = 0.05,
                 alpha_on: float = 0.9, nucleus_p: float = 0.9, steps: int | None = None, eps: float = 1e-5,
                 final_denoise: bool = True):
        super().__init__(temperature=0.0, stop_early=False)
        options.remdm(strategy=strategy, eta=eta, t_on=t_on, t_off=t_off, alpha_on=alpha_on, nucleus_p=nucleus_p,
                      steps=steps)
        self.strategy, self.eta = strategy, float(eta)
        self.t_on, self.t_off, self.alpha_on = float(t_on), float(t_off), float(alpha_on)
        self.nucleus_p, self.steps, self.eps = float(nucleus_p), steps, float(eps)
        self.final_denoise = final_denoise

    @property
    def name(self) -> str:
        return f"remdm-{self.strategy}"

    # -- the kernel of one step ---------------------------------------------------------------

    def coefficients(self, t: float, s: float) -> tuple[float, float, float | None]:
        """(alpha_t, alpha_s, sigma) of the step t -> s; sigma None means per token (conf)."""
        alpha_t, alpha_s = 1 - t, 1 - s
        if self.strategy == "mdlm":
            return alpha_t, alpha_s, 0.0
        if self.strategy == "cap":
            return alpha_t, alpha_s, min(self.eta, sigma_max(alpha_t, alpha_s))
        if self.strategy == "rescale":
            return alpha_t, alpha_s, self.eta * sigma_max(alpha_t, alpha_s)
        if self.strategy == "conf":
            return alpha_t, alpha_s, None
        clip = lambda a: min(1.0, max(0.0, a))  # noqa: E731
        if t > self.t_on:
            ramp = self.alpha_on / (1 - self.t_on)
            return clip((1 - t) * ramp), clip((1 - s) * ramp), 0.0
        if t <= self.t_off:
            ramp = (1 - self.alpha_on) / self.t_off
            return clip(1 - t * ramp), clip(1 - s * ramp), 0.0
        return self.alpha_on, self.alpha_on, self.eta

    def conf_sigma(self, conf: Tensor, masked: Tensor, remaskable: Tensor, alpha_t: float, alpha_s: float) -> Tensor:
        """[B, L] ReMDM-conf remask probabilities: sigma_max * softmax(conf) over the
        remaskable region, zero at masked positions (not renormalised, as in ReMDM)."""
        weights = conf.masked_fill(~remaskable, float("-inf")).softmax(-1).nan_to_num(0.0)
        return (weights * sigma_max(alpha_t, alpha_s)).masked_fill(masked, 0.0)

    def transition(self, p_x0: Tensor, state: DecodeState, t: float, s: float) -> Tensor:
        alpha_t, alpha_s, sigma = self.coefficients(t, s)
        if sigma is None:
            sigma = self.conf_sigma(state.extras["conf"], state.masked, state.extras["remaskable"], alpha_t, alpha_s)
        return transition_probs(p_x0, state.x, state.mask_id, alpha_t, alpha_s, sigma)

    # -- the loop -----------------------------------------------------------------------------

    def denoise(self, model: Denoiser, logits: Tensor, x: Tensor, mask_id: int) -> tuple[Tensor, Tensor]:
        """(p_x0 the kernel samples from, its argmax for the final step): SUBS-constrained,
        nucleus-filtered; the argmax is taken before filtering."""
        probs = subs_probs(logits, x, mask_id)
        return nucleus(probs, self.nucleus_p), probs.argmax(-1)

    def time_points(self, steps: int) -> tuple[list[tuple[float, float]], float]:
        """The (t, s) pairs of the steps and the time of the final denoising step: MDLM's grid
        t_i = linspace(1, eps, steps + 1), s = t - (1 - eps)/steps."""
        times = torch.linspace(1, self.eps, steps + 1, dtype=torch.float64).tolist()
        dt = (1 - self.eps) / steps
        return [(times[i], times[i] - dt) for i in range(steps)], times[-1]

    def final_tokens(self, state: DecodeState) -> Tensor:
        """What the final denoising step writes at the remaskable positions: the argmax of p_x0."""
        return state.extras["argmax"]

    def refresh(self, model: Denoiser, state: DecodeState, t: float) -> None:
        """Run the denoiser on the rows whose cached p_x0 is stale; one NFE for each."""
        stale = state.extras["stale"] & state.active
        rows = stale.nonzero().flatten()
        if rows.numel() == 0:
            return
        time = torch.full((rows.numel(),), t, device=state.x.device)
        with torch.no_grad():
            log_probs = model(state.x[rows], attention_mask=state.attention_mask[rows], time=time)
        probs, argmax = self.denoise(model, log_probs, state.x[rows], state.mask_id)
        cache = state.extras.get("p_x0")
        if cache is None:
            cache = probs.new_zeros(*state.x.shape, probs.shape[-1])
            state.extras["argmax"] = torch.zeros_like(state.x)
        cache[rows] = probs
        state.extras["p_x0"] = cache
        state.extras["argmax"][rows] = argmax
        for row in rows.tolist():
            state.accounting[row].nfe += 1
        state.extras["stale"] = state.extras["stale"] & ~stale

    def step_to(self, model: Denoiser, state: DecodeState, t: float, s: float) -> None:
        self.refresh(model, state, t)
        p_x0 = state.extras["p_x0"]
        q = self.transition(p_x0, state, t, s)
        proposal = sample_categorical(q, uniform=state.uniform(q.shape, torch.float64))
        remaskable = state.extras["remaskable"] & state.active[:, None]
        new_x = torch.where(remaskable, proposal, state.x)
        unmasked = state.masked & (new_x != state.mask_id)
        remasked = ~state.masked & (new_x == state.mask_id)
        if self.strategy == "conf":
            conf = state.extras["conf"]
            picked = p_x0.gather(-1, new_x[..., None]).squeeze(-1).double()
            conf = torch.where(unmasked, -picked, conf)
            state.extras["conf"] = conf.masked_fill(remasked, float("-inf"))
        changed = (new_x != state.x).any(-1)
        state.extras["stale"] = state.extras["stale"] | changed | model.time_conditioned
        if state.trace is not None:
            replaced = ~state.masked & (new_x != state.mask_id) & (new_x != state.x)
            state.trace.append({"t": t, "s": s, "unmasked": unmasked.sum(-1).tolist(),
                                "remasked": remasked.sum(-1).tolist(), "replaced": replaced.sum(-1).tolist()})
        state.x = new_x

    def generate(self, model: Denoiser, prompts: list[list[int]], schedule: Schedule,
                 stop: StopCriterion | None = None, seed: int = 0, trace: bool = False,
                 gen_init: list[list[int]] | None = None) -> GenerationOutput:
        state = DecodeState.start(model, prompts, schedule.gen_length, row_generators(model, seed, len(prompts)),
                                  trace, gen_init)
        steps = self.steps or schedule.steps
        batch = state.x.shape[0]
        # Only what the sampler itself filled may be remasked: never prompt, padding or clues.
        state.extras.update(remaskable=state.masked.clone(),
                            stale=torch.ones(batch, dtype=torch.bool, device=state.x.device),
                            conf=torch.full(state.x.shape, float("-inf"), dtype=torch.float64,
                                            device=state.x.device))
        started = clock.perf_counter()
        points, t_final = self.time_points(steps)
        for t, s in points:
            self.step_to(model, state, t, s)
        if self.final_denoise:
            self.refresh(model, state, t_final)
            state.x = torch.where(state.extras["remaskable"] & state.active[:, None], self.final_tokens(state),
                                  state.x)
        elapsed = clock.perf_counter() - started
        for acc in state.accounting:
            acc.wall_s = elapsed / batch
        return self._output(model, state, stop)

