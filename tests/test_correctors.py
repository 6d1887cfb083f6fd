"""ReMDM's corrector baselines (forward-backward, DFM) and SEDD's analytic sampler: each step's
transition probabilities against the reference formulas on a hand-built state, the time grids,
and end-to-end generation with honest NFE on tiny MDLM and SEDD models."""
import math

import pytest
import torch

from boe_bench.errors import ConfigError
from boe_bench.models.mdlm import build_tiny_mdlm
from boe_bench.models.sedd import build_tiny_sedd
from boe_bench.samplers import SAMPLERS, Schedule
from boe_bench.samplers.base import Accounting, DecodeState
from boe_bench.samplers.dfm import DFMSampler
from boe_bench.samplers.fb import ForwardBackwardSampler
from boe_bench.samplers.remdm import ReMDMSampler
from boe_bench.samplers.sedd import SEDDAnalyticSampler, analytic_probs

MASK = 4  # hand-built vocabulary of 5 tokens, MASK last
P_MASKED = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0], dtype=torch.float64)


def hand_state():
    """Row 0: [masked, decoded 2, decoded 0, masked]; p_x0 one-hot at decoded tokens (SUBS)."""
    x = torch.tensor([[MASK, 2, 0, MASK]])
    p = torch.stack([P_MASKED, torch.eye(5)[2].double(), torch.eye(5)[0].double(), P_MASKED])[None]
    state = DecodeState(x=x, attention_mask=torch.ones_like(x), prompt_length=0, mask_id=MASK,
                        accounting=[Accounting()], active=torch.ones(1, dtype=torch.bool))
    state.extras["remaskable"] = torch.ones_like(x, dtype=torch.bool)
    return state, p


def kernel(unmask, remask):
    """The expected [1, 4, 5] kernel: masked rows -> token v w.p. p(v)*unmask, MASK otherwise;
    decoded rows -> MASK w.p. remask, themselves otherwise."""
    q = torch.zeros(4, 5, dtype=torch.float64)
    for pos in (0, 3):
        q[pos] = P_MASKED * unmask
        q[pos, MASK] = 1 - unmask
    for pos, token in ((1, 2), (2, 0)):
        q[pos, token] = 1 - remask
        q[pos, MASK] = remask
    return q[None]


# -- forward-backward -----------------------------------------------------------------------


@pytest.mark.parametrize("t,dt", [(0.9, 0.1), (0.5, 0.125), (0.25, 1 / 128)])
def test_fb_kernel_is_the_reference_formula(t, dt):
    # remdm diffusion.py l.686-699: sigma = (alpha_s - alpha_t)/alpha_t; decoded: x w.p. 1 - sigma,
    # MASK w.p. sigma; masked: p_x0 * (alpha_s - (1 - sigma) alpha_t)/(1 - alpha_t), MASK the rest.
    s = t - dt
    alpha_t, alpha_s = 1 - t, 1 - s
    sigma = (alpha_s - alpha_t) / alpha_t
    state, p = hand_state()
    q = ForwardBackwardSampler().transition(p, state, t, s)
    unmask = (alpha_s - (1 - sigma) * alpha_t) / (1 - alpha_t)
    assert torch.allclose(q, kernel(unmask, sigma), atol=1e-12)
    # The same numbers in the log-linear schedule's own terms: remask dt/(1-t), unmask 2dt/t.
    assert math.isclose(sigma, dt / (1 - t)) and math.isclose(unmask, 2 * dt / t)
    assert torch.allclose(q.sum(-1), torch.ones(1, 4, dtype=torch.float64)) and (q >= 0).all()


def test_fb_edge_steps():
    state, p = hand_state()
    fb = ForwardBackwardSampler()
    # t = 1: alpha_t = 0, sigma = 1 (reference); masked tokens unmask w.p. alpha_s = dt.
    q = fb.transition(p, state, 1.0, 0.75)
    assert torch.allclose(q, kernel(0.25, 1.0), atol=1e-12)
    # Right after it (alpha_t = dt): sigma = 1, everything decoded so far is remasked.
    q = fb.transition(p, state, 0.75, 0.5)
    assert torch.allclose(q[0, 1], torch.eye(5, dtype=torch.float64)[MASK])
    # Last step t = eps + dt: sigma > (1 - alpha_s)/alpha_t, the masked row's MASK entry would be
    # negative; the reference's Gumbel draw never picks it, so masked tokens all unmask.
    eps, dt = 1e-5, 0.25
    t = eps + dt
    q = fb.transition(p, state, t, eps)
    sigma = dt / (1 - t)
    assert torch.allclose(q, kernel(1.0, sigma), atol=1e-12)


# -- DFM -------------------------------------------------------------------------------------


def reference_dfm_grid(T, eps=1e-5):
    """kuleshov-group/remdm ``_sample`` with sampling.dfm, written out as the reference does."""
    timestep, grid = 1, []
    while timestep > (1 - eps) / T:
        at = 10 * timestep ** 0.25 * (1 - timestep) ** 0.25 + 1
        bt = at - 1
        dt = 1 / T if timestep == 1 else min(1 / T, 1 / (at / timestep + bt / (1 - timestep)))
        grid.append((timestep, timestep - dt))
        timestep = timestep - dt
    return grid, timestep


@pytest.mark.parametrize("T,count", [(16, 38), (128, 133)])
def test_dfm_grid_is_the_references(T, count):
    points, last = DFMSampler().time_points(T)
    expected, expected_last = reference_dfm_grid(T)
    assert len(points) == count == len(expected) and last == expected_last
    assert all(math.isclose(a, c) and math.isclose(b, d) for (a, b), (c, d) in zip(points, expected))
    assert all(s - t >= -1 / T - 1e-15 for t, s in points)  # no step longer than 1/T


@pytest.mark.parametrize("t,dt", [(0.7, 0.004), (0.3, 0.002), (0.05, 0.005)])
def test_dfm_kernel_is_the_reference_formula(t, dt):
    # remdm diffusion.py l.633-643: masked: p_x0 * a_t (alpha_s - alpha_t)/(1 - alpha_t);
    # decoded: p_x0 * (1 - b_t (alpha_s/alpha_t - 1)), MASK the rest; a_t = 10 t^.25 (1-t)^.25 + 1.
    s = t - dt
    alpha_t, alpha_s = 1 - t, 1 - s
    a = 10 * t ** 0.25 * (1 - t) ** 0.25 + 1
    b = a - 1
    coef1 = a * (alpha_s - alpha_t) / (1 - alpha_t)
    coef2 = 1 - b * (alpha_s / alpha_t - 1)
    state, p = hand_state()
    q = DFMSampler().transition(p, state, t, s)
    assert torch.allclose(q, kernel(coef1, 1 - coef2), atol=1e-12)


def test_dfm_first_step_is_mdlm_and_scale_zero_is_mdlm():
    state, p = hand_state()
    q = DFMSampler().transition(p, state, 1.0, 1 - 1 / 16)
    assert torch.allclose(q, kernel(1 / 16, 0.0), atol=1e-12)
    # Without the corrector (eta_t = 0) every step is MDLM's: unmask (t - s)/t, no remask.
    q = DFMSampler(scale=0.0).transition(p, state, 0.4, 0.3)
    assert torch.allclose(q, kernel(0.1 / 0.4, 0.0), atol=1e-12)
    mdlm = ReMDMSampler(strategy="mdlm").transition(p, state, 0.4, 0.3)
    assert torch.allclose(q, mdlm, atol=1e-12)


def test_dfm_kernel_stays_a_distribution_on_its_grid():
    state, p = hand_state()
    sampler = DFMSampler()
    for t, s in sampler.time_points(32)[0]:
        q = sampler.transition(p, state, t, s)
        assert (q >= -1e-15).all() and (q <= 1 + 1e-12).all(), (t, s)
        assert torch.allclose(q.sum(-1), torch.ones(1, 4, dtype=torch.float64))


# -- SEDD analytic ---------------------------------------------------------------------------


def reference_analytic(score_real, t, s, noise_eps=1e-3):
    """SEDD's AnalyticPredictor on one masked position, with the log-linear noise:
    stag = e^dsigma * score, stag[MASK] += (1 - e^dsigma) * sum(score); times the transposed
    transition (1 - e^-dsigma everywhere, 1 at MASK). score[MASK] = 1."""
    sigma = lambda u: -math.log1p(-(1 - noise_eps) * u)  # noqa: E731
    dsigma = sigma(t) - sigma(s)
    score = torch.cat([score_real, torch.ones(1, dtype=torch.float64)])
    stag = score * math.exp(dsigma)
    stag[-1] += (1 - math.exp(dsigma)) * score.sum()
    transp = torch.full_like(score, 1 - math.exp(-dsigma))
    transp[-1] = 1.0
    return stag * transp, sigma(t)


@pytest.mark.parametrize("t,s,mass", [(1.0, 0.875, 1.0), (0.5, 0.4, 0.9), (0.2, 0.19, 1.3)])
def test_analytic_kernel_matches_sedds_score_form(t, s, mass):
    p_tilde = P_MASKED[:4] * mass  # the model's unnormalised p(x0 | x_t), mass Z
    expected, _ = reference_analytic(p_tilde / math.expm1(sigma_t_of(t)), t, s)
    x = torch.tensor([[MASK, 2]])
    p = torch.stack([torch.cat([p_tilde, torch.zeros(1, dtype=torch.float64)]), torch.eye(5)[2].double()])[None]
    q = analytic_probs(p, x, MASK, t, s)
    assert torch.allclose(q[0, 0], expected.clamp(min=0), atol=1e-12)
    assert torch.allclose(q[0, 0, MASK], torch.tensor(max(0.0, 1 - mass * (t - s) / t), dtype=torch.float64))
    assert torch.equal(q[0, 1], torch.eye(5, dtype=torch.float64)[2])  # a decoded token stays


def sigma_t_of(t, noise_eps=1e-3):
    return -math.log1p(-(1 - noise_eps) * t)


def test_analytic_step_on_a_normalised_denoiser_is_mdlms():
    state, p = hand_state()
    q = analytic_probs(p, state.x, MASK, 0.6, 0.45)
    mdlm = ReMDMSampler(strategy="mdlm").transition(p, state, 0.6, 0.45)
    assert torch.allclose(q, mdlm, atol=1e-12)


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_mdlm():
    return build_tiny_mdlm(seed=0)


@pytest.fixture(scope="module")
def tiny_sedd():
    return build_tiny_sedd(seed=0)


def changes(trace, row):
    return sum(int(d["unmasked"][row] + d["remasked"][row] > 0) for d in trace)


@pytest.mark.parametrize("name", ["fb", "dfm"])
def test_correctors_generate_remask_and_count_real_forwards(tiny_mdlm, name):
    steps, length = 16, 12
    sampler = SAMPLERS.build(name, steps=steps)
    bos = tiny_mdlm.tokenizer.bos_token_id
    out = sampler.generate(tiny_mdlm, [[], [bos]], Schedule(length, length, length), seed=3, trace=True)
    assert out.tokens.shape == (2, length) and not (out.tokens == tiny_mdlm.mask_id).any()
    assert len(out.trace) == len(sampler.time_points(steps)[0])
    assert sum(sum(d["remasked"]) for d in out.trace) > 0  # the corrector does remask
    for row in range(2):
        # MDLM is not time-conditioned: one forward at the start and one after each step that
        # changed the row (the last of them serves the final denoising step).
        assert out.accounting[row].nfe == 1 + changes(out.trace, row)
    again = sampler.generate(tiny_mdlm, [[], [bos]], Schedule(length, length, length), seed=3)
    assert torch.equal(again.tokens, out.tokens)


@pytest.mark.parametrize("name", ["fb", "dfm", "sedd_analytic"])
def test_samplers_on_sedd_run_a_forward_every_step(tiny_sedd, name):
    steps, length = 8, 10
    sampler = SAMPLERS.build(name, steps=steps)
    out = sampler.generate(tiny_sedd, [[]], Schedule(length, length, length), seed=0, trace=True)
    assert not (out.tokens == tiny_sedd.mask_id).any()
    # SEDD is time-conditioned: nothing is cached, one forward per step plus the final one.
    assert out.accounting[0].nfe == len(out.trace) + 1
    if name == "sedd_analytic":
        assert len(out.trace) == steps and sum(d["remasked"][0] for d in out.trace) == 0


def test_sedd_analytic_final_step_samples_where_remdm_takes_the_argmax():
    """SEDD's final ``Denoiser`` step draws from p~ with MASK zeroed; ReMDM's takes the argmax."""
    n = 20000
    x = torch.full((1, n), MASK)
    p = P_MASKED.expand(1, n, 5).clone()
    state = DecodeState(x=x, attention_mask=torch.ones_like(x), prompt_length=0, mask_id=MASK,
                        accounting=[Accounting()], active=torch.ones(1, dtype=torch.bool),
                        generator=torch.Generator().manual_seed(0))
    state.extras.update(p_x0=p * 1.2, argmax=p.argmax(-1))  # unnormalised mass is irrelevant here
    drawn = SEDDAnalyticSampler().final_tokens(state)[0]
    freq = torch.bincount(drawn, minlength=5).double() / n
    assert torch.allclose(freq, P_MASKED, atol=0.015) and freq[MASK] == 0
    assert (ReMDMSampler().final_tokens(state) == 3).all()


def test_bad_corrector_settings_are_config_errors():
    with pytest.raises(ConfigError):
        DFMSampler(scale=-1.0)
    with pytest.raises(ConfigError):
        ForwardBackwardSampler(nucleus_p=0.0)
