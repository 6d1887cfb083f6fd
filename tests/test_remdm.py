"""ReMDM's kernels against their closed forms, and end-to-end generation on tiny models."""
import pytest
import torch

from boe_bench.errors import ConfigError
from boe_bench.models.mdlm import build_tiny_mdlm
from boe_bench.samplers import SAMPLERS, Schedule
from boe_bench.samplers.base import Accounting, DecodeState
from boe_bench.samplers.remdm import ReMDMSampler, nucleus, sample_categorical
from boe_bench.samplers.remdm_llada import ReMDMLLaDASampler, llada_remask_probabilities
from boe_bench.samplers.schedule import transfer_counts

MASK = 4  # hand-built vocabulary of 5 tokens, MASK last
P_MASKED = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0], dtype=torch.float64)  # SUBS: MASK has probability 0


def hand_state(conf=None):
    """Row 0: [masked, decoded 2, decoded 0, masked]; p_x0 one-hot at decoded tokens (SUBS)."""
    x = torch.tensor([[MASK, 2, 0, MASK]])
    p = torch.stack([P_MASKED, torch.eye(5)[2].double(), torch.eye(5)[0].double(), P_MASKED])[None]
    state = DecodeState(x=x, attention_mask=torch.ones_like(x), prompt_length=0, mask_id=MASK,
                        accounting=[Accounting()], active=torch.ones(1, dtype=torch.bool))
    state.extras["remaskable"] = torch.ones_like(x, dtype=torch.bool)
    state.extras["conf"] = torch.full(x.shape, float("-inf"), dtype=torch.float64) if conf is None else conf
    return state, p


def closed_form(sigma_decoded, alpha_t, alpha_s):
    """q(z_s | z_t, x) of ReMDM for the hand state, written out row by row:
    masked:  x0 w.p. (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t) spread as p_x0,
             MASK w.p. (1 - alpha_s - sigma alpha_t) / (1 - alpha_t);
    decoded: itself w.p. 1 - sigma, MASK w.p. sigma.
    sigma_decoded: [sigma at position 0 (unused for masked unless conf), 1, 2, 3]."""
    q = torch.zeros(4, 5, dtype=torch.float64)
    for pos in (0, 3):
        sig = sigma_decoded[pos]
        q[pos] = P_MASKED * (alpha_s - (1 - sig) * alpha_t) / (1 - alpha_t)
        q[pos, MASK] = (1 - alpha_s - sig * alpha_t) / (1 - alpha_t)
    for pos, token in ((1, 2), (2, 0)):
        q[pos, token] = 1 - sigma_decoded[pos]
        q[pos, MASK] = sigma_decoded[pos]
    return q[None]


@pytest.mark.parametrize("t,s", [(1.0, 0.75), (0.6, 0.45), (0.3, 0.2), (0.02, 1e-5)])
def test_cap_rescale_mdlm_kernels_match_closed_forms(t, s):
    state, p = hand_state()
    eta = 0.3
    # log-linear schedule: alpha = 1 - t, and sigma_max = min(1, s / (1 - t)) (1 at t = 1).
    bound = 1.0 if t == 1 else min(1.0, s / (1 - t))
    expected_sigma = {"mdlm": 0.0, "cap": min(eta, bound), "rescale": eta * bound}
    for strategy, sigma in expected_sigma.items():
        q = ReMDMSampler(strategy=strategy, eta=eta).transition(p, state, t, s)
        assert torch.allclose(q, closed_form([sigma] * 4, 1 - t, 1 - s), atol=1e-12), strategy
        assert torch.allclose(q.sum(-1), torch.ones(1, 4, dtype=torch.float64)) and (q >= -1e-15).all()
    # MDLM's own form: masked -> x0 w.p. (t - s)/t, stays MASK w.p. s/t; decoded tokens copied.
    q = ReMDMSampler(strategy="mdlm").transition(p, state, t, s)
    assert torch.allclose(q[0, 0, :4], P_MASKED[:4] * (t - s) / t) and abs(q[0, 0, MASK] - s / t) < 1e-12
    assert q[0, 1, 2] == 1


def test_conf_kernel_softmaxes_decoded_confidences():
    conf = torch.tensor([[float("-inf"), -0.9, -0.2, float("-inf")]], dtype=torch.float64)
    state, p = hand_state(conf)
    t, s = 0.5, 0.4
    bound = min(1.0, s / (1 - t))  # 0.8
    weights = torch.tensor([0.0, torch.exp(torch.tensor(-0.9)), torch.exp(torch.tensor(-0.2)), 0.0])
    weights = weights / weights.sum()
    sigma = (bound * weights).tolist()
    q = ReMDMSampler(strategy="conf").transition(p, state, t, s)
    assert torch.allclose(q, closed_form([0.0, sigma[1], sigma[2], 0.0], 1 - t, 1 - s), atol=1e-12)
    # The less confident token (-0.2 means p = 0.2 at decode time) is the likelier remask.
    assert q[0, 2, MASK] > q[0, 1, MASK]


@pytest.mark.parametrize("t,phase", [(0.8, "ramp"), (0.3, "loop"), (0.04, "finish")])
def test_loop_kernel_phases(t, phase):
    state, p = hand_state()
    s, eta, t_on, t_off, alpha_on = t - 0.01, 0.05, 0.55, 0.05, 0.9
    q = ReMDMSampler(strategy="loop", eta=eta, t_on=t_on, t_off=t_off, alpha_on=alpha_on).transition(p, state, t, s)
    if phase == "ramp":  # MDLM with alpha running 0 -> alpha_on on [1, t_on]
        a_t, a_s, sigma = (1 - t) * alpha_on / (1 - t_on), (1 - s) * alpha_on / (1 - t_on), 0.0
    elif phase == "finish":  # MDLM with alpha running alpha_on -> 1 on [t_off, 0]
        a_t, a_s, sigma = 1 - t * (1 - alpha_on) / t_off, 1 - s * (1 - alpha_on) / t_off, 0.0
    else:  # constant alpha_on; unmask w.p. eta alpha_on / (1 - alpha_on), remask w.p. eta
        a_t = a_s = alpha_on
        sigma = eta
        assert abs(q[0, 0, MASK] - (1 - alpha_on - eta * alpha_on) / (1 - alpha_on)) < 1e-12
    assert torch.allclose(q, closed_form([sigma] * 4, a_t, a_s), atol=1e-12)


def test_nucleus_keeps_the_prefix_within_p_and_renormalises():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    assert torch.allclose(nucleus(probs, 0.9), torch.tensor([[0.0, 0.625, 0.0, 0.375]]))
    assert torch.equal(nucleus(probs, 0.1), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))  # top-1 always kept
    assert torch.equal(nucleus(probs, 1.0), probs)


def test_sample_categorical_follows_the_probabilities():
    q = torch.tensor([0.2, 0.5, 0.3, 0.0], dtype=torch.float64).expand(20000, 4)
    draws = sample_categorical(q, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    assert torch.allclose(freq, q[0], atol=0.015) and freq[3] == 0


def changes_per_step(trace, row):
    return [int(d["unmasked"][row] + d["remasked"][row] > 0) for d in trace]


@pytest.fixture(scope="module")
def tiny_mdlm():
    return build_tiny_mdlm(seed=0)


@pytest.mark.parametrize("strategy,eta",
                         [("mdlm", 0.0), ("cap", 0.05), ("rescale", 0.1), ("conf", 0.0), ("loop", 0.05)])
def test_unconditional_generation_counts_real_forwards_and_leaves_no_mask(tiny_mdlm, strategy, eta):
    steps, length = 40, 12
    sampler = SAMPLERS.build("remdm", strategy=strategy, eta=eta, steps=steps)
    bos = tiny_mdlm.tokenizer.bos_token_id
    out = sampler.generate(tiny_mdlm, [[], [bos]], Schedule(length, length, length), seed=3, trace=True)
    assert out.tokens.shape == (2, length) and not (out.tokens == tiny_mdlm.mask_id).any()
    for row in range(2):
        # First forward, then one more after every step that changed the row (the last such
        # forward is the final denoising step's); unchanged rows reuse p_x0.
        changed = changes_per_step(out.trace, row)
        assert out.accounting[row].nfe == 1 + sum(changed)
        assert out.accounting[row].nfe < steps + 1  # 40 steps over 12 tokens: the cache is used
    remasked = sum(sum(d["remasked"]) for d in out.trace)
    assert (remasked == 0) == (strategy == "mdlm")
    again = sampler.generate(tiny_mdlm, [[], [bos]], Schedule(length, length, length), seed=3)
    assert torch.equal(again.tokens, out.tokens)


def test_bos_prompt_is_never_remasked(tiny_mdlm):
    bos = tiny_mdlm.tokenizer.bos_token_id
    sampler = ReMDMSampler(strategy="rescale", eta=1.0, steps=16)
    state_prompt = sampler.generate(tiny_mdlm, [[bos, bos]], Schedule(8, 8, 8), seed=0, trace=True)
    assert sum(sum(d["remasked"]) for d in state_prompt.trace) > 0  # eta = 1 remasks a lot
    # The generation region only is returned; the prompt must still be there afterwards,
    # which the sampler guarantees by never proposing for prompt positions.
    gen_init = [[tiny_mdlm.mask_id] * 3 + [bos] + [tiny_mdlm.mask_id] * 4]
    clued = sampler.generate(tiny_mdlm, [[]], Schedule(8, 8, 8), seed=0, gen_init=gen_init)
    assert clued.tokens[0, 3] == bos


def test_cap_with_zero_eta_is_mdlm(tiny_mdlm):
    schedule = Schedule(10, 10, 10)
    a = ReMDMSampler(strategy="mdlm", steps=20).generate(tiny_mdlm, [[], []], schedule, seed=5)
    b = ReMDMSampler(strategy="cap", eta=0.0, steps=20).generate(tiny_mdlm, [[], []], schedule, seed=5)
    assert torch.equal(a.tokens, b.tokens) and [x.nfe for x in a.accounting] == [x.nfe for x in b.accounting]


def test_time_conditioned_model_runs_every_step():
    timed = build_tiny_mdlm(seed=1, time_conditioning=True)
    out = ReMDMSampler(strategy="mdlm", steps=20).generate(timed, [[]], Schedule(6, 6, 6), seed=0)
    assert out.accounting[0].nfe == 21 and not (out.tokens == timed.mask_id).any()


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError):
        ReMDMSampler(strategy="nope")
    with pytest.raises(ConfigError):
        ReMDMSampler(strategy="loop", eta=0.5, alpha_on=0.9)  # eta > (1 - alpha_on)/alpha_on
    with pytest.raises(ConfigError):
        ReMDMSampler(nucleus_p=0.0)


# -- remdm_llada -------------------------------------------------------------------------------

def test_llada_remask_probabilities_closed_form():
    conf = torch.tensor([[-0.9, -0.3, -0.6, 0.0, 0.0]], dtype=torch.float64)
    decoded = torch.tensor([[True, True, True, False, False]])
    sigma = llada_remask_probabilities(conf, decoded, torch.tensor([2]))
    # sigma_max = min(1, m'/decoded) = 2/3, spread by softmax over the decoded tokens only.
    e = torch.exp(torch.tensor([-0.9, -0.3, -0.6], dtype=torch.float64))
    assert torch.allclose(sigma[0, :3], (2 / 3) * e / e.sum()) and (sigma[0, 3:] == 0).all()
    assert (llada_remask_probabilities(conf, decoded, torch.tensor([0])) == 0).all()  # last step of a block


def test_remdm_llada_keeps_the_schedule_and_remasks(tiny_llada):
    schedule = Schedule(24, 12, 8)
    prompts = [[1, 20, 21, 22], [1]]
    sampler = ReMDMLLaDASampler(temperature=1.0)
    assert SAMPLERS.get("remdm_llada") is ReMDMLLaDASampler and sampler.remasks
    out = sampler.generate(tiny_llada, prompts, schedule, seed=0, trace=True)
    assert not (out.tokens == tiny_llada.mask_id).any()
    assert [a.nfe for a in out.accounting] == [schedule.steps] * 2
    remasked = sum(sum(d["remasked"]) for d in out.trace)
    assert remasked > 0
    # Every step advances its block by exactly LLaDA's budget, remasks notwithstanding.
    budgets = transfer_counts(torch.tensor([schedule.block_length]), schedule.steps_per_block)[0].tolist()
    for i, d in enumerate(out.trace):
        for row in range(2):
            assert d["unmasked"][row] - d["remasked"][row] == budgets[i % schedule.steps_per_block]


def test_remdm_runs_on_a_denoiser_without_subs(tiny_llada):
    # p_x0 gets SUBS's constraints in the sampler, so decoded tokens never turn into others.
    out = ReMDMSampler(strategy="rescale", eta=0.5, steps=20).generate(
        tiny_llada, [[1, 30]], Schedule(10, 10, 10), seed=1, trace=True)
    assert not (out.tokens == tiny_llada.mask_id).any()
    assert sum(d["replaced"][0] for d in out.trace) == 0 and sum(d["remasked"][0] for d in out.trace) > 0
    assert out.accounting[0].nfe == 1 + sum(changes_per_step(out.trace, 0))
