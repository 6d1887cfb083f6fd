"""BoE: Theorem 3.1, ActiveQueryAttention against naive eq. 30, the dense path against plain
autograd, the zero-gradient trap, eqs. 15/19, padding, and accounting (design/boe.md)."""
import math

import pytest

from boe_bench.models.base import padding_bias
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from boe_bench.errors import ConfigError
from boe_bench.models.base import Denoiser, positions_from_mask
from boe_bench.models.tiny import build_tiny
from boe_bench.samplers import Schedule, build_sampler
from boe_bench.samplers.base import DecodeState, entropy
from boe_bench.samplers.boe import BoESampler, gated_score, pack_rows
from boe_bench.samplers.options import cpp_compiler


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model64(request):
    return build_tiny(request.param, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, seed=1, dtype="float64")


def setup_step(model, texts=("Question: 3+4?\nAnswer:",), gen_length=8, n_candidates=3):
    """A decoding state mid-way: prompt, some written tokens, masks, and a candidate set."""
    prompts = [model.tokenizer(t)["input_ids"] for t in texts]
    state = DecodeState.start(model, prompts, gen_length)
    state.x[:, state.prompt_length + 1] = model.tokenizer.convert_tokens_to_ids("7")
    logits, frozen = model.forward_with_state(state.x, state.attention_mask)
    probs = logits.softmax(-1)
    delta = probs @ model.embedding_matrix - model.mask_embedding
    cand = torch.zeros_like(state.masked)
    masked_positions = state.masked[0].nonzero().flatten()
    cand[:, masked_positions[1 : 1 + n_candidates]] = True
    return state, frozen, cand, delta


def assert_same_tis(one, two, rel: float, abs: float) -> None:
    """Two traced decodes gave every ranked candidate the same TIS (within rel/abs), step by
    step and row by row, and at least one candidate was ranked."""
    ranked = 0
    for step_one, step_two in zip(one.trace, two.trace):
        for key in ("tis_chosen", "tis_rejected"):
            for a, b in zip(step_one[key], step_two[key]):
                ranked += len(a)
                assert a == pytest.approx(b, rel=rel, abs=abs)
    assert ranked > 0


def rms(norm, h):
    return norm.weight * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)


def naive_eq30_rows(model, embeds, attention_mask, active):
    """Dense autograd through the stock modules, with eq. 30's stop-gradient on the attention
    output of every inactive query row."""
    hf = model.hf
    positions = positions_from_mask(attention_mask)
    bias = torch.zeros(attention_mask.shape, dtype=embeds.dtype).masked_fill(~attention_mask.bool(), -1e30)
    cos, sin = hf.model.rotary_emb(embeds, positions)
    h = embeds
    b, n, _ = embeds.shape
    for layer in hf.model.layers:
        attn = layer.self_attn
        x = rms(layer.input_layernorm, h)
        q = attn.q_proj(x).view(b, n, -1, model.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, n, -1, model.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, n, -1, model.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        repeat = q.shape[1] // k.shape[1]
        y = F.scaled_dot_product_attention(q, k.repeat_interleave(repeat, 1), v.repeat_interleave(repeat, 1),
                                           attn_mask=bias[:, None, None, :])
        y = attn.o_proj(y.transpose(1, 2).reshape(b, n, -1))
        y = torch.where(active[..., None], y, y.detach())
        h = h + y
        h = h + layer.mlp(rms(layer.post_attention_layernorm, h))
    return hf.lm_head(rms(hf.model.norm, h))


def tis_from_rows_fn(model, state, cand, targets, delta, rows_fn):
    embeds = model.embed(state.x).detach().requires_grad_(True)
    rows = rows_fn(embeds)
    objective = (entropy(rows) * BoESampler.prediction_mask(model, targets)).sum()
    (grad,) = torch.autograd.grad(objective, embeds)
    return torch.where(cand, -(grad * delta).sum(-1), 0.0)


def test_live_row_tis_equals_naive_eq30(model64):
    state, frozen, cand, delta = setup_step(model64)
    sampler = BoESampler(rows="masked")
    targets = state.masked & ~cand
    live_tis = sampler.live_tis(model64, state, frozen, cand, targets, delta)
    # The live set the sampler uses: the masked rows and the rows that predict them.
    active = state.masked | BoESampler.prediction_mask(model64, state.masked)
    naive = tis_from_rows_fn(model64, state, cand, targets, delta,
                             lambda e: naive_eq30_rows(model64, e, state.attention_mask, active))
    assert live_tis[cand].abs().min() > 0
    assert torch.allclose(live_tis.double(), naive, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("fused", [True, False])
def test_one_pass_forward_equals_full_forward_plus_live_recompute(model64, fused, monkeypatch):
    """The step forward that keeps autograd for the live rows only gives the full forward's
    logits and the two-pass recompute's live logits and gradients (left padding included),
    with the live queries' attention fused over one key tensor or written out."""
    monkeypatch.setattr(model64, "DENSE_LIVE_FRACTION", 1e9 if fused else 1e-9)
    state, _, _, _ = setup_step(model64, texts=("Question: 3+4?\nAnswer:", "Q: 1?"))
    live = state.masked.clone()
    live[1, -2:] = False  # rows with different live counts: the second one is padded
    rows, valid = pack_rows(live, state.seq_len, int(live.sum(-1).max()))
    assert not valid.all()
    one = model64.forward_live(state.x, state.attention_mask, rows)
    two = Denoiser.forward_live(model64, state.x, state.attention_mask, rows)
    full = model64(state.x, attention_mask=state.attention_mask)
    assert torch.allclose(one[0], full, rtol=0, atol=1e-12) and torch.allclose(one[0], two[0], rtol=0, atol=1e-12)
    assert torch.allclose(one[1][valid], two[1][valid], rtol=0, atol=1e-12)
    grads = [torch.autograd.grad((entropy(logits) * valid).sum(), leaf)[0][valid] for _, logits, leaf in (one, two)]
    assert grads[0].abs().max() > 0 and torch.allclose(grads[0], grads[1], rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("fused", [True, False])
def test_given_linear_outputs_leave_boe_tokens_unchanged(arch, fused, monkeypatch):
    """``forward_live`` gives the live rows' blocks their linear maps' outputs from the frozen
    pass instead of computing them again, and (written-out route) runs each block's backward
    by hand (``_LiveLayer``); in float32 (the benchmarks' dtype), on both attention routes, a
    BoE decode writes the same tokens, with the same TIS to rounding, as when autograd's
    graph computes every linear map and product itself."""
    from boe_bench.models import transformer

    model = build_tiny(arch, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, seed=11, dtype="float32")
    monkeypatch.setattr(model, "DENSE_LIVE_FRACTION", 1e9 if fused else 1e-9)
    prompts = [model.tokenizer(t)["input_ids"] for t in ("Question: 12+30?\nAnswer:", "Hi")]

    def decode():
        return BoESampler(rows="masked", rho=0.5).generate(model, prompts, Schedule(16, 8, 8), trace=True)

    given = decode()
    with monkeypatch.context() as patch:
        patch.setattr(transformer, "_given", lambda x, value, linear: linear(x))
        patch.setattr(model, "BACKWARD_BY_HAND", False)
        computed = decode()
    assert torch.equal(given.tokens, computed.tokens)
    assert_same_tis(given, computed, rel=1e-4, abs=1e-7)


@pytest.mark.skipif(cpp_compiler() is None, reason="torch.compile on the CPU needs a C++ compiler, and none is on PATH")
@pytest.mark.parametrize("rows, fused", [("masked", False), ("masked", True), ("candidates", False)])
def test_compiled_backward_leaves_boe_tokens_unchanged(rows, fused, monkeypatch):
    """``compile_backward``: the live blocks' backward through torch.compile writes the same
    tokens, with the same TIS to float32 rounding, as the eager one, on both attention routes
    and over ``candidates``' copies; it ran compiled, and only where asked."""
    from boe_bench.models import transformer

    model = build_tiny("llama", n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, seed=11, dtype="float32")
    monkeypatch.setattr(model, "DENSE_LIVE_FRACTION", 1e9 if fused else 1e-9)
    monkeypatch.setattr(model, "KEEP_BUDGET", 1e9)  # candidates' pass takes the kept rows: the by-hand blocks
    calls, real = [], transformer.compiled_block_backward
    monkeypatch.setattr(transformer, "compiled_block_backward", lambda: calls.append(1) or real())
    prompts = [model.tokenizer(t)["input_ids"] for t in ("Question: 12+30?\nAnswer:", "Hi")]

    def decode(compiled: bool):
        sampler = BoESampler(rows=rows, rho=0.5, compile_backward=compiled)
        return sampler.generate(model, prompts, Schedule(16, 8, 8), trace=True)

    torch._dynamo.reset()  # earlier tests' graphs and recompilations do not count here
    counters = torch._dynamo.utils.counters
    counters.clear()
    eager = decode(False)
    assert not calls and not counters["stats"]["unique_graphs"]
    compiled = decode(True)
    # It went through the compiled function, and dynamo compiled graphs of it.
    assert calls and counters["stats"]["unique_graphs"] > 0
    assert torch.equal(eager.tokens, compiled.tokens)
    assert_same_tis(eager, compiled, rel=1e-4, abs=1e-7)


def test_compile_backward_without_a_compiler_is_refused_in_one_sentence(monkeypatch):
    from boe_bench.samplers import options

    monkeypatch.setattr(options, "cpp_compiler", lambda: None)
    with pytest.raises(ConfigError, match=r"compile_backward needs the C\+\+ compiler"):
        BoESampler(compile_backward=True)
    # The runner's config check refuses it too, before the model and the data load.
    with pytest.raises(ConfigError, match=r"compile_backward needs the C\+\+ compiler"):
        options.check_sampler_config({"_target_": "boe_bench.samplers.boe.BoESampler", "compile_backward": True})
    assert not BoESampler(compile_backward=False).compile_backward  # the default needs none


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("rows, one_pass", [("candidates", True), ("masked", False)])
def test_kept_rows_leave_the_live_pass_unchanged(arch, rows, one_pass, monkeypatch):
    """The live pass after the step's forward takes its linear maps' outputs from that
    forward (``kept_rows``, ``KeptRows``) instead of computing them again: a decode writes the
    same tokens with the same TIS as one whose forward keeps nothing, and it did use them."""
    from boe_bench.models import transformer

    model = build_tiny(arch, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, seed=7, dtype="float64")
    prompts = [model.tokenizer(t)["input_ids"] for t in ("Question: 12+30?\nAnswer:", "Hi")]
    used, real = [], transformer._kept_entries

    def spy(*args):
        entries = real(*args)
        used.append(entries is not None)
        return entries

    monkeypatch.setattr(transformer, "_kept_entries", spy)

    def decode(budget):
        used.clear()
        monkeypatch.setattr(model, "KEEP_BUDGET", budget)
        run = BoESampler(rows=rows, rho=0.5, one_pass=one_pass).generate(model, prompts, Schedule(16, 8, 8),
                                                                       trace=True)
        return run, list(used)

    (kept, used_kept), (computed, used_computed) = decode(1e9), decode(0.0)
    assert any(used_kept) and not any(used_computed)
    assert torch.equal(kept.tokens, computed.tokens)
    assert_same_tis(kept, computed, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_kept_rows_in_bf16_follow_the_float32_computation(arch, monkeypatch):
    """In bf16, the dtype users run, the leave-one-out TIS of a pass given the kept values is
    as close to the same weights' float32 TIS as that of a pass computing its own."""
    from boe_bench.samplers.boe_live import LiveInputs, live_tis_pass

    models = {dtype: build_tiny(arch, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=9, dtype=dtype)
              for dtype in ("bfloat16", "float32")}
    for low, high in zip(models["bfloat16"].hf.parameters(), models["float32"].hf.parameters()):
        high.data.copy_(low.float())  # the same weights, computed in float32
    for model in models.values():
        monkeypatch.setattr(model, "KEEP_BUDGET", 1e9)
    model = models["float32"]
    ids = torch.tensor([model.tokenizer("Question: 12+30?\nAnswer:")["input_ids"] + [model.mask_id] * 8])
    rows = torch.arange(ids.shape[1] - 6, ids.shape[1] - 2)[None]
    keep = torch.arange(ids.shape[1] - 8, ids.shape[1])[None]
    delta = torch.randn(1, 4, 64, generator=torch.Generator().manual_seed(0))

    def tis(dtype, keep_rows):
        model = models[dtype]
        _, frozen = model.forward_with_state(ids, keep_rows=keep_rows)
        assert (frozen.kept is None) == (keep_rows is None)
        inputs = LiveInputs(rows, model.embed(ids.gather(1, rows)), delta.to(model.dtype),
                            (~torch.eye(4, dtype=torch.bool))[:, None, :].float())
        return live_tis_pass(model, frozen, inputs).float()

    reference = tis("float32", None)
    error = lambda t: float((t - reference).norm() / reference.norm())  # noqa: E731
    kept, computed = error(tis("bfloat16", keep)), error(tis("bfloat16", None))
    assert reference.abs().max() > 0 and error(tis("float32", keep)) < 1e-5
    assert kept < 0.05 and kept <= 2 * computed + 0.005


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("fused", [False, True])
def test_backward_by_hand_in_bf16_follows_the_float32_computation(arch, fused, monkeypatch):
    """``forward_live``'s hand-written block backward (``_LiveLayer``), in bf16, the dtype users
    run, with the live queries' attention backward written out or (many live rows) the fused
    kernel's own: its live-row gradients are as close to the same weights' float32 gradients
    as those of autograd's graph in bf16; in float32 the two agree to rounding; and it did run."""
    from boe_bench.models import transformer

    models = {dtype: build_tiny(arch, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=9, dtype=dtype)
              for dtype in ("bfloat16", "float32")}
    attention = {}
    for name in ("_attend_fused_backward", "_attend_live_backward"):
        real_attention = getattr(transformer.TransformerDenoiser, name)
        monkeypatch.setattr(transformer.TransformerDenoiser, name,
                            lambda self, *a, _real=real_attention, _name=name, **k:
                            attention.setdefault(_name, []).append(1) or _real(self, *a, **k))
    for each in models.values():
        monkeypatch.setattr(each, "DENSE_LIVE_FRACTION", 1e9 if fused else 1e-9)
    for low, high in zip(models["bfloat16"].hf.parameters(), models["float32"].hf.parameters()):
        high.data.copy_(low.float())  # the same weights, computed in float32
    model = models["float32"]
    prompt = model.tokenizer("Question: 12+30?\nAnswer:")["input_ids"]
    ids = torch.tensor([prompt + [model.mask_id] * 8, [model.pad_id] * 3 + prompt[3:] + [model.mask_id] * 8])
    attention_mask = torch.ones_like(ids)
    attention_mask[1, :3] = 0
    length = ids.shape[1]
    rows = torch.tensor([[length - 8, length - 5, length - 2, length - 1], [length - 7, length - 3, length - 1, length]])
    runs = []
    real = transformer._LiveLayer.backward
    monkeypatch.setattr(transformer._LiveLayer, "backward", staticmethod(lambda ctx, g: runs.append(1) or real(ctx, g)))

    def grads(dtype, by_hand):
        model = models[dtype]
        monkeypatch.setattr(model, "BACKWARD_BY_HAND", by_hand)
        _, live, leaf = model.forward_live(ids, attention_mask, rows)
        objective = (entropy(live.float()) * (rows < length)).sum()
        return torch.autograd.grad(objective, leaf)[0].float()[rows < length]

    reference = grads("float32", False)
    assert not runs
    error = lambda t: float((t - reference).norm() / reference.norm())  # noqa: E731
    assert reference.abs().max() > 0 and error(grads("float32", True)) < 1e-5
    by_hand, autograd = error(grads("bfloat16", True)), error(grads("bfloat16", False))
    assert len(runs) == 2 * 2  # two blocks, in the float32 and bf16 runs by hand
    assert list(attention) == ["_attend_fused_backward" if fused else "_attend_live_backward"]
    assert by_hand < 0.05 and by_hand <= 2 * autograd + 0.005


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_one_pass_decode_equals_two_pass_decode(arch):
    model = build_tiny(arch, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, seed=3, dtype="float64")
    prompts = [model.tokenizer(t)["input_ids"] for t in ("Question: 12+30?\nAnswer:", "Hi")]
    runs = [BoESampler(rows="masked", rho=0.5, one_pass=flag).generate(model, prompts, Schedule(16, 8, 8), trace=True)
            for flag in (True, False)]
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    assert_same_tis(runs[0], runs[1], rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_dense_tis_equals_plain_autograd_of_stock_model(arch):
    # float32: the stock RMSNorm rounds float64 to float32, so compare where both are exact.
    model = build_tiny(arch, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, seed=1)
    state, _, cand, delta = setup_step(model)
    targets = state.masked & ~cand
    embeds = model.embed(state.x).detach().requires_grad_(True)
    rows, _ = model.forward_rows(embeds, state.attention_mask)
    ours = BoESampler(rows="all").dense_tis(model, rows, embeds, cand, targets, delta)
    bias = padding_bias(state.attention_mask.bool(), torch.float32)
    stock = tis_from_rows_fn(model, state, cand, targets, delta, lambda e: model.hf(
        inputs_embeds=e, attention_mask=bias, position_ids=positions_from_mask(state.attention_mask)).logits)
    assert ours[cand].abs().min() > 0
    assert torch.allclose(ours, stock, rtol=1e-4, atol=1e-9)


def test_theorem_3_1_tis_is_the_directional_derivative(model64):
    state, _, cand, delta = setup_step(model64)
    targets = state.masked & ~cand
    embeds = model64.embed(state.x).detach().requires_grad_(True)
    rows, _ = model64.forward_rows(embeds, state.attention_mask)
    tis = BoESampler(rows="all").dense_tis(model64, rows, embeds, cand, targets, delta)
    target_rows = BoESampler.prediction_mask(model64, targets)
    base = model64.embed(state.x).detach()

    def f(i, a):
        e = base.clone()
        e[0, i] = model64.mask_embedding + a * delta[0, i]
        with torch.no_grad():
            return float((entropy(model64.forward_rows(e, state.attention_mask)[0]) * target_rows).sum())

    eps = 1e-4
    for i in cand[0].nonzero().flatten().tolist():
        # Central difference: its error is O(eps^2), far below the tolerance.
        finite_difference = (f(i, -eps) - f(i, eps)) / (2 * eps)
        assert finite_difference == pytest.approx(tis[0, i].item(), rel=1e-5)
        grid = torch.linspace(0, 1, 41).tolist()
        values = [f(i, a) for a in grid]
        h = grid[1] - grid[0]
        second = [abs(values[k - 1] - 2 * values[k] + values[k + 1]) / h**2 for k in range(1, len(grid) - 1)]
        slack = 1.05 * max(second) / 2 + 1e-9
        assert abs((f(i, 0.0) - f(i, 1.0)) - tis[0, i].item()) <= slack


def test_leave_one_out_candidates_match_per_candidate_naive(model64):
    state, frozen, cand, delta = setup_step(model64, n_candidates=4)
    sampler = BoESampler(rows="candidates")
    ours = sampler.live_tis(model64, state, frozen, cand, cand, delta)
    active = cand | BoESampler.prediction_mask(model64, cand)
    for i in cand[0].nonzero().flatten().tolist():
        others = cand.clone()
        others[0, i] = False
        naive = tis_from_rows_fn(model64, state, cand, others, delta,
                                 lambda e: naive_eq30_rows(model64, e, state.attention_mask, active))
        assert ours[0, i].item() == pytest.approx(naive[0, i].item(), rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("copies", [0, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_weighted_entropy_equals_autograd_entropy(dtype, copies):
    """``weighted_entropy`` has the value and the logit gradients of sum w H taken through
    autograd's ``entropy``: over one set of rows (copies = 0, weights [B, A], boolean as
    ``one_pass_tis`` gives them) and over copies of the same logits whose entropies it
    computes once (leave-one-out), forbidden tokens (-inf) included; in bf16 against the same
    logits in float64."""
    from boe_bench.samplers.boe_live import weighted_entropy

    gen = torch.Generator().manual_seed(3)
    base = 4 * torch.randn(2, 5, 11, generator=gen, dtype=torch.float64)
    base[0, 1, 3] = base[1, 4, :5] = -math.inf
    if copies:
        weights = torch.rand(copies, 2, 5, generator=gen, dtype=torch.float64)
        weights[..., 0, 0] = 0.0
        shape = (copies, *base.shape)
    else:
        weights = torch.rand(2, 5, generator=gen) > 0.3
        weights[0, 0] = False
        shape = base.shape

    def run(objective, dt):
        logits = base.to(dt).expand(*shape).clone().requires_grad_(True)
        value = objective(logits)
        (grad,) = torch.autograd.grad(value, logits)
        return value.double(), grad.double()

    reference = run(lambda z: (entropy(z, torch.float64) * weights).sum(), torch.float64)
    ours = run(lambda z: weighted_entropy(z, weights), dtype)
    tol = dict(rel=1e-12, abs=1e-12) if dtype == torch.float64 else dict(rel=2e-2, abs=2e-2)
    assert ours[0].item() == pytest.approx(reference[0].item(), **tol)
    assert torch.isfinite(ours[1]).all() and ours[1][..., 0, 0, :].abs().max() == 0  # weight 0 there
    assert ours[1][..., 1, 4, :5].abs().max() == 0
    assert reference[1].abs().max() > 0
    scale = reference[1].abs().max().item()
    assert (ours[1] - reference[1]).abs().max().item() <= tol["rel"] * scale + tol["abs"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_head_entropy_equals_the_head_then_weighted_entropy(dtype):
    """``_HeadEntropy`` (the leave-one-out objective taking the LM head's input over C copies
    and the logits the model already knows) has the value and the head-input gradients of
    ``weighted_entropy`` over the copies' logits x W^T, each copy with its own weights,
    forbidden tokens (-inf) included; in bf16 against float64."""
    from boe_bench.samplers.boe_live import _HeadEntropy, weighted_entropy

    gen = torch.Generator().manual_seed(5)
    copies, b, a, d, v = 3, 2, 4, 6, 9
    hidden = torch.randn(b, a, d, generator=gen, dtype=torch.float64)
    head = torch.randn(v, d, generator=gen, dtype=torch.float64)
    bias = torch.zeros(v, dtype=torch.float64)
    bias[2] = -math.inf  # a forbidden token: no probability, no gradient
    weights = torch.rand(copies, b, a, generator=gen, dtype=torch.float64)
    weights[1, 0, 2] = 0.0

    def run(objective, dt):
        x = hidden.to(dt).expand(copies, b, a, d).clone().requires_grad_(True)
        # As live_tis_pass gives them: weights in float32 (float64 here in float64).
        value = objective(x, head.to(dt), bias.to(dt), weights.to(torch.promote_types(dt, torch.float32)))
        (grad,) = torch.autograd.grad(value, x)
        return value.double(), grad.double()

    reference = run(lambda x, w, c, s: weighted_entropy(x @ w.T + c, s), torch.float64)
    ours = run(lambda x, w, c, s: _HeadEntropy.apply(x, (x[0] @ w.T + c).detach(), s, w), dtype)
    tol = dict(rel=1e-12, abs=1e-12) if dtype == torch.float64 else dict(rel=3e-2, abs=3e-2)
    assert ours[0].item() == pytest.approx(reference[0].item(), **tol)
    assert reference[1].abs().max() > 0 and ours[1][1, 0, 2].abs().max() == 0
    assert not torch.allclose(reference[1][0], reference[1][1])  # the copies' gradients differ
    scale = reference[1].abs().max().item()
    assert (ours[1] - reference[1]).abs().max().item() <= tol["rel"] * scale + tol["abs"]


def test_zero_gradient_trap_is_real_and_refused(model64):
    state, _, cand, delta = setup_step(model64)
    # Targets whose prediction rows lie outside the live (= candidate) rows; for Dream a
    # target right after a candidate is read at that candidate's row, so it is left out.
    targets = state.masked & ~cand & ~torch.roll(cand, model64.logit_shift, dims=1)
    literal = tis_from_rows_fn(model64, state, cand, targets, delta,
                               lambda e: naive_eq30_rows(model64, e, state.attention_mask, cand))
    assert literal.abs().max() == 0  # eq. 11 targets + eq. 30 with A_t = C_t steer by nothing
    with pytest.raises(ConfigError, match="TIS = 0"):
        BoESampler(rows="candidates", targets="rest")


@pytest.mark.parametrize("rows", ["masked", "candidates", "all"])
def test_default_and_variants_never_give_all_zero_tis(tiny_llada, rows):
    prompt = tiny_llada.tokenizer("Question: 5*5?\nAnswer:")["input_ids"]
    out = build_sampler("boe", rows=rows).generate(tiny_llada, [prompt], Schedule(32, 8, 32), trace=True)
    scored = [v for step in out.trace for v in step["tis_chosen"][0] + step["tis_rejected"][0]]
    assert scored and any(v != 0 for v in scored)


@pytest.mark.parametrize("bad", [dict(rho=0.0), dict(rho=1.5), dict(rows="some"),
                                 dict(anti_collapse={"floor_schedule": "sideways"})])
def test_bad_knobs_are_config_errors(bad):
    with pytest.raises(ConfigError):
        BoESampler(**bad)


def test_gating_prefers_confident_candidates_at_equal_tis():
    vocab = 10
    tis = torch.tensor([1.0, 1.0, 1.2])
    ent = torch.tensor([0.1, 2.0, math.log(vocab)])
    score = gated_score(tis, ent, vocab, gate=True, lam=0.0, floor=0.0)
    assert torch.allclose(score, tis * (1 - ent / math.log(vocab)))
    assert score.argmax() == 0 and score[2] == 0  # a uniform position carries no weight
    assert gated_score(tis, ent, vocab, gate=False, lam=0.0, floor=0.0).argmax() == 2


def test_anti_collapse_penalises_entropy_below_the_floor():
    tis = torch.tensor([1.0, 0.9, 0.8])
    ent = torch.tensor([0.05, 0.6, 1.5])
    score = gated_score(tis, ent, 100, gate=False, lam=2.0, floor=0.5)
    assert torch.allclose(score, tis - 2.0 * torch.tensor([0.45**2, 0.0, 0.0]))
    assert score.argmax() == 1  # the near-deterministic candidate loses its lead early on


def test_floor_and_lambda_schedules():
    sampler = BoESampler(anti_collapse={"lam": 1.0, "h_max": 2.0, "anneal": "linear"})
    sampler.total_steps = 4
    assert sampler.anti_collapse_terms(0) == (1.0, 2.0)  # t = T: high floor early
    assert sampler.anti_collapse_terms(3) == (0.25, 0.5)
    rising = BoESampler(anti_collapse={"h_max": 2.0, "floor_schedule": "increasing"})
    rising.total_steps = 4
    assert rising.anti_collapse_terms(0)[1] == 0.0 and rising.anti_collapse_terms(3)[1] == 1.5
    assert BoESampler(anti_collapse={"enabled": False}).anti_collapse_terms(0) == (0.0, 0.0)


@pytest.mark.parametrize("rows", ["masked", "candidates"])
def test_batched_tis_equals_one_prompt_at_a_time(model64, rows):
    texts = ["a considerably longer prompt", "short"]
    sampler = BoESampler(rows=rows, rho=0.5)
    schedule = Schedule(16, 4, 16)
    prompts = [model64.tokenizer(t)["input_ids"] for t in texts]
    batch = sampler.generate(model64, prompts, schedule, trace=True)
    for row, prompt in enumerate(prompts):
        alone = sampler.generate(model64, [prompt], schedule, trace=True)
        assert torch.equal(batch.tokens[row], alone.tokens[0])
        for step_b, step_a in zip(batch.trace, alone.trace):
            assert step_b["tis_chosen"][row] == pytest.approx(step_a["tis_chosen"][0], rel=1e-6, abs=1e-12)
            assert step_b["tis_rejected"][row] == pytest.approx(step_a["tis_rejected"][0], rel=1e-6, abs=1e-12)


def test_accounting_records_what_ran(tiny_llada):
    prompt = tiny_llada.tokenizer("Question: 1+2?\nAnswer:")["input_ids"]
    schedule = Schedule(32, 16, 16)
    masked = build_sampler("boe").generate(tiny_llada, [prompt], schedule).accounting[0]
    dense = build_sampler("boe", rows="all").generate(tiny_llada, [prompt], schedule).accounting[0]
    assert masked.nfe == dense.nfe == 16  # time-independent: the step forward is the surrogate
    # One pass: the live rows' forward is the step forward itself; only their backward is extra.
    assert masked.live_rows_fwd == 0 and masked.live_rows_bwd > 0
    two_pass = build_sampler("boe", one_pass=False).generate(tiny_llada, [prompt], schedule).accounting[0]
    assert two_pass.live_rows_fwd == two_pass.live_rows_bwd == masked.live_rows_bwd
    assert dense.live_rows_fwd == 0 and dense.live_rows_bwd % (len(prompt) + 32) == 0
    assert masked.cost_fwd_equiv < dense.cost_fwd_equiv


def test_dense_diagnostic_reports_cosine_and_overlap(tiny_llada):
    prompt = tiny_llada.tokenizer("Q: hi\nA:")["input_ids"]
    sampler = build_sampler("boe", diagnose_dense=True, rho=1.0)
    out = sampler.generate(tiny_llada, [prompt], Schedule(16, 4, 16), trace=True)
    ranked = [s for s in out.trace if s["tis_rejected"][0]]
    assert ranked and all(-1 <= s["dense_cosine"][0] <= 1 and 0 <= s["dense_topb_overlap"][0] <= 1 for s in ranked)


@pytest.mark.parametrize("rows", ["masked", "candidates"])
def test_bucketed_live_pass_with_padding_slot_equals_exact_width(model64, rows):
    """The CUDA-graph layout (widths rounded up, padding entries writing into a masked slot
    appended to the frozen state) must not move any real entry's TIS."""
    from boe_bench.samplers.boe import pack_rows
    from boe_bench.samplers.boe_live import LiveInputs, live_tis_pass, padded_frozen

    state, frozen, cand, delta = setup_step(model64, texts=("a longer prompt here", "hi"))
    cand = cand & torch.tensor([[True], [True]])
    targets = cand if rows == "candidates" else state.masked & ~cand
    live = cand | BoESampler.prediction_mask(model64, targets)
    if rows == "masked":
        live = live | state.masked

    def pass_at(width, frozen_state):
        live_rows, valid = pack_rows(live, state.seq_len, width)
        index = live_rows.clamp(max=state.seq_len - 1)
        entry = BoESampler.prediction_mask(model64, targets).gather(1, index) & valid
        if rows == "candidates":
            own = (live_rows + model64.logit_shift)[:, None, :] == live_rows[:, :, None]
            entry = (entry[:, None, :] & ~own).transpose(0, 1)
        inputs = LiveInputs(live_rows, model64.embed(state.x.gather(1, index)),
                            delta.gather(1, index[..., None].expand(-1, -1, delta.shape[-1])), entry.double())
        tis = live_tis_pass(model64, frozen_state, inputs)
        return {(b, int(r)): float(t) for b in range(2) for r, t, ok in zip(live_rows[b], tis[b], valid[b]) if ok}

    exact = pass_at(int(live.sum(-1).max()), frozen)
    padded = pass_at(int(live.sum(-1).max()) + 5, padded_frozen(frozen))
    assert exact.keys() == padded.keys()
    assert all(padded[k] == pytest.approx(v, rel=1e-9, abs=1e-14) for k, v in exact.items())
    assert any(v != 0 for v in exact.values())


@pytest.mark.parametrize("rows", ["masked", "candidates", "all"])
def test_time_conditioned_denoiser_gets_and_counts_its_surrogate_forward(rows):
    from boe_bench.models.mdlm import build_tiny_mdlm

    model = build_tiny_mdlm(time_conditioning=True, seed=3)
    prompt = model.tokenizer("Q: 2+2?\nA:")["input_ids"]
    out = build_sampler("boe", rows=rows).generate(model, [prompt], Schedule(16, 8, 16), trace=True)
    ranked_steps = [step for step in out.trace if step["tis_rejected"][0]]
    assert ranked_steps and any(v != 0 for step in ranked_steps for v in step["tis_rejected"][0])
    # One forward at t per step, plus the surrogate forward at t-1 whenever there was a ranking.
    assert out.accounting[0].nfe == 8 + len(ranked_steps)


def test_time_conditioned_surrogate_reads_the_next_time(monkeypatch):
    """The surrogate forward is at t-1: the masked fraction after this step's reveals."""
    from boe_bench.models.mdlm import build_tiny_mdlm

    model = build_tiny_mdlm(time_conditioning=True, seed=3)
    times = []
    original = model.forward_rows
    monkeypatch.setattr(model, "forward_rows", lambda e, m=None, time=None, **kw: (times.append(time), original(
        e, m, time, **kw))[1])
    prompt = model.tokenizer("Q: 2+2?\nA:")["input_ids"]
    build_sampler("boe").generate(model, [prompt], Schedule(16, 8, 16))
    assert [float(t) for t in times[:2]] == [1.0, pytest.approx(14 / 16)]


@pytest.mark.parametrize("option, expected", [
    ("boe", dict(rows="masked", rho=0.25, gate=True, anti=True)),
    ("boe_no_gate", dict(rows="masked", rho=0.25, gate=False, anti=True)),
    ("boe_no_anticollapse", dict(rows="masked", rho=0.25, gate=True, anti=False)),
    ("boe_no_aqa", dict(rows="all", rho=0.25, gate=True, anti=True)),
    ("boe_rho010", dict(rows="masked", rho=0.10, gate=True, anti=True)),
    ("boe_rho025", dict(rows="masked", rho=0.25, gate=True, anti=True)),
    ("boe_rho050", dict(rows="masked", rho=0.50, gate=True, anti=True)),
])
def test_ablation_configs_compose_into_the_rows_of_the_table(option, expected):
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"sampler={option}"])
    sampler = instantiate(cfg.sampler)
    assert isinstance(sampler, BoESampler)
    got = dict(rows=sampler.rows, rho=sampler.rho, gate=sampler.gate, anti=sampler.anti["enabled"])
    assert got == expected


def forbid_tokens(model, token_ids, floor):
    """Make ``model`` give ``floor`` as the logit of ``token_ids`` in every row, the way a
    checkpoint forbids its MASK or padding token."""
    head = model._head

    def masked_head(h):
        logits = head(h)
        logits[..., token_ids] = floor
        return logits

    model._head = masked_head
    return model


@pytest.mark.parametrize("rows", ["masked", "candidates", "all"])
def test_minus_inf_logits_give_finite_tis_equal_to_a_finite_floor(rows):
    """-inf logits (p = 0 exactly) must add nothing to the entropy's value or gradient: the
    TIS equals the one under a finite floor whose probability also underflows to 0."""
    traces = {}
    for floor in (float("-inf"), -1e5):
        model = build_tiny("llama", n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, seed=3, dtype="float64")
        forbidden = [model.mask_id, model.tokenizer.convert_tokens_to_ids("z")]
        forbid_tokens(model, forbidden, floor)
        prompt = model.tokenizer("Question: 6-2?\nAnswer:")["input_ids"]
        out = BoESampler(rows=rows, rho=0.5).generate(model, [prompt], Schedule(16, 8, 16), trace=True)
        traces[floor] = [v for step in out.trace for v in step["tis_chosen"][0] + step["tis_rejected"][0]]
    with_inf, with_floor = traces[float("-inf")], traces[-1e5]
    assert with_inf and all(math.isfinite(v) for v in with_inf)
    assert any(v != 0 for v in with_inf)
    assert with_inf == pytest.approx(with_floor, rel=1e-9, abs=1e-12)


def test_entropy_of_minus_inf_logits_has_the_value_and_gradient_of_the_finite_part():
    finite = torch.tensor([[1.0, -0.5, 2.0], [0.0, 0.0, 3.0]], dtype=torch.float64, requires_grad=True)
    padded = torch.cat([finite, torch.full((2, 2), float("-inf"), dtype=torch.float64)], -1)
    (grad_padded,) = torch.autograd.grad(entropy(padded).sum(), finite)
    finite_only = finite.detach().requires_grad_(True)
    (grad_finite,) = torch.autograd.grad(entropy(finite_only).sum(), finite_only)
    assert torch.allclose(entropy(padded), entropy(finite_only))
    assert torch.isfinite(grad_padded).all() and torch.allclose(grad_padded, grad_finite)
