"""Reference rules rewritten in our own code and run beside our samplers on the tiny models:
token for token where the reference computes in the same dtype, on the same inputs.

- EB-Sampler: PC-Sampler's ``generate_with_eb_sampler`` (NEUIR/PC-Sampler src/generate.py
  @ 8b106b09): one region, entropy of ``Categorical(logits)`` over the masked positions
  gathered in position order, in the logits' dtype, ``argsort``, ``cumsum - cummax <= gamma``.
"""
import pytest
import torch
from torch.distributions import Categorical

from boe_bench.models.tiny import build_tiny
from boe_bench.samplers import Schedule, build_sampler

PROMPTS = ["Question: 2+2?\nAnswer:", "Hi", "The cat sat on", "def f(x):\n    return", "Once upon a time,",
           "12*7=", "Name three colours:", "x"]


def no_mask_argmax(logits, mask_id):
    """The reference's greedy token, except that the mask id is never drawn (our one rule that
    differs from every reference, samplers/base.py); confidences still see the mask."""
    return logits.index_fill(-1, torch.tensor([mask_id]), float("-inf")).argmax(-1)


def reference_eb(model, prompt, gen_length, gamma):
    """generate_with_eb_sampler (T = 0, no CFG), batch of one: (generated ids, forwards)."""
    mask_id = model.mask_id
    x = torch.tensor([prompt + [mask_id] * gen_length])
    forwards = 0
    while (x == mask_id).any():
        masked = x == mask_id
        with torch.no_grad():
            logits = model(x)
        forwards += 1
        predicted = no_mask_argmax(logits, mask_id)
        error = Categorical(logits=logits[masked]).entropy()  # in the logits' dtype
        where = masked.nonzero(as_tuple=True)[1]
        ranked = torch.argsort(error)
        walked = error[ranked]
        k = int(((walked.cumsum(0) - walked.cummax(0).values) <= gamma).sum().clamp(1, len(walked)))
        chosen = where[ranked][:k]
        x[0, chosen] = predicted[0, chosen]
    return x[0, len(prompt):].tolist(), forwards


@pytest.mark.parametrize("dtype, rank_dtype", [("float32", "float32"), ("float32", "model"),
                                               ("bfloat16", "model")])
def test_eb_sampler_is_token_exact_against_pc_samplers_rule(dtype, rank_dtype):
    """Greedy, on raw tiny models (near-uniform predictions: entropies tie to ~1e-7, where a
    float64 entropy ordered them unlike the reference's float32 one), with gamma small (one
    token a forward, the order decides) and large (the count decides)."""
    gen_length, runs, exact = 12, 0, 0
    for seed in range(3):
        model = build_tiny("llama", seed=seed, dtype=dtype)
        for text in PROMPTS:
            prompt = model.tokenizer(text)["input_ids"]
            for gamma in (0.01, 4.0, 40.0):
                ids, forwards = reference_eb(model, prompt, gen_length, gamma)
                sampler = build_sampler("eb_sampler", gamma=gamma, rank_dtype=rank_dtype)
                out = sampler.generate(model, [prompt], Schedule(gen_length, gen_length, gen_length))
                runs += 1
                exact += out.tokens[0].tolist() == ids and out.accounting[0].nfe == forwards
    assert exact == runs


# --- the live-row paths return the full forward's logits ---------------------------------------

@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("live_count", [3, 12])  # <= L/4: the written-out route; more: the fused one
def test_live_row_paths_return_the_full_forwards_logits_bit_for_bit(arch, dtype, live_count):
    """Every row the one-pass ``forward_live`` and the two-pass default return as position
    logits is the full forward's, bit for bit (left padding included), whichever route the
    live queries take; the live rows' own logits (with autograd) agree to rounding."""
    from boe_bench.models.base import Denoiser
    from boe_bench.samplers.base import DecodeState
    from boe_bench.samplers.boe import pack_rows

    model = build_tiny(arch, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, seed=5, dtype=dtype)
    prompts = [model.tokenizer(t)["input_ids"] for t in ("Question: 3+4?\nAnswer:", "Q: 1?", "Hi")]
    state = DecodeState.start(model, prompts, 24)
    state.x[:, state.prompt_length:state.prompt_length + 5] = 40  # some decoded generation tokens
    live = state.masked.clone()
    for row in range(live.shape[0]):  # rows with different live counts (padding entries too)
        kept = live[row].nonzero().flatten()[: live_count - row]
        live[row] = False
        live[row, kept] = True
    rows, valid = pack_rows(live, state.seq_len, int(live.sum(-1).max()))
    assert not valid.all()
    dense = rows.shape[1] * model.DENSE_LIVE_FRACTION > state.seq_len
    assert dense == (live_count == 12)
    with torch.no_grad():
        full = model(state.x, attention_mask=state.attention_mask)
        full_rows = model.forward_rows(model.embed(state.x), state.attention_mask)[0]  # live rows are raw rows
    one = model.forward_live(state.x, state.attention_mask, rows)
    two = Denoiser.forward_live(model, state.x, state.attention_mask, rows)
    assert torch.equal(one[0], full) and torch.equal(two[0], full)
    at_live = full_rows.gather(1, rows.clamp(max=state.seq_len - 1)[..., None].expand(-1, -1, full.shape[-1]))
    tolerance = 1e-4 if dtype == "float32" else 0.25
    assert (one[1].detach() - at_live)[valid].abs().max() < tolerance
    assert one[1].requires_grad


# --- LLaDA's padded batch (model padding: reference) -------------------------------------------

def llada_padded_logits(model, ids, attention_mask):
    """LLaDA's forward over a left-padded batch, rewritten in float64 from the model's weights:
    rotary positions 0..L-1 over the whole canvas (pads included, as its RotaryEmbedding
    numbers every slot), padded keys hidden from every query, pre-norm llama blocks."""
    hf = model.hf
    cfg = hf.config
    weights = {name: p.double() for name, p in hf.state_dict().items()}
    x = weights["model.embed_tokens.weight"][ids]
    b, n, width = x.shape
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = width // heads
    theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta") or cfg.rope_theta
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(n, dtype=torch.float64), inv_freq).repeat(1, 2)
    cos, sin = angles.cos(), angles.sin()
    hidden = torch.where(attention_mask.bool(), 0.0, float("-inf"))[:, None, None, :]

    def rms(h, name):
        return weights[name] * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps)

    def rotate(h):
        half = head_dim // 2
        return h * cos + torch.cat([-h[..., half:], h[..., :half]], -1) * sin

    for i in range(cfg.num_hidden_layers):
        w = lambda role: weights[f"model.layers.{i}.{role}.weight"]  # noqa: E731
        h = rms(x, f"model.layers.{i}.input_layernorm.weight")
        q = rotate((h @ w("self_attn.q_proj").T).view(b, n, heads, head_dim).transpose(1, 2))
        k = rotate((h @ w("self_attn.k_proj").T).view(b, n, kv_heads, head_dim).transpose(1, 2))
        v = (h @ w("self_attn.v_proj").T).view(b, n, kv_heads, head_dim).transpose(1, 2)
        k, v = (t.repeat_interleave(heads // kv_heads, 1) for t in (k, v))
        attn = torch.softmax(q @ k.transpose(-1, -2) / head_dim ** 0.5 + hidden, -1) @ v
        x = x + attn.transpose(1, 2).reshape(b, n, width) @ w("self_attn.o_proj").T
        h = rms(x, f"model.layers.{i}.post_attention_layernorm.weight")
        x = x + (torch.nn.functional.silu(h @ w("mlp.gate_proj").T) * (h @ w("mlp.up_proj").T)) @ w("mlp.down_proj").T
    return rms(x, "model.norm.weight") @ weights["lm_head.weight"].T


def padded_batch(model, texts, gen_length):
    from boe_bench.samplers.base import DecodeState

    state = DecodeState.start(model, [model.tokenizer(t)["input_ids"] for t in texts], gen_length)
    return state.x, state.attention_mask


def test_reference_padding_numbers_pads_as_llada_does():
    """``padding: reference`` gives a padded row LLaDA's positions (0..L-1); ``isolated`` its
    own (from its first real token), which in exact arithmetic changes nothing but moves the
    logits by rounding, and in bf16 visibly."""
    reference = build_tiny("llama", seed=1, padding="reference")
    isolated = build_tiny("llama", seed=1)
    ids, mask = padded_batch(reference, ["Question: 2+2?\nAnswer:", "Hi", "The cat"], 8)
    expected = llada_padded_logits(reference, ids, mask)
    real = mask.bool()
    with torch.no_grad():
        ours = reference(ids, attention_mask=mask)
        alone = isolated(ids, attention_mask=mask)
    assert (ours.double() - expected)[real].abs().max() < 1e-5
    assert (alone.double() - expected)[real].abs().max() < 1e-5  # equal in exact arithmetic
    assert not torch.equal(ours[1:][real[1:]], alone[1:][real[1:]])  # padded rows: other roundings
    assert torch.equal(ours[0], alone[0])  # the longest prompt has no padding: nothing moves
    with pytest.raises(Exception, match="padding must be one of"):
        build_tiny("llama", padding="left")


def reference_generate(model, ids, attention_mask, gen_length, steps, block_length):
    """LLaDA's generate.py (low_confidence, T = 0, no CFG) on a left-padded batch, rewritten:
    logits from the padded canvas with its attention mask, softmax in the model's dtype,
    ``topk`` over each padded row (the mask id never drawn, our one rule)."""
    mask_id = model.mask_id
    x = ids.clone()
    prompt_length = x.shape[1] - gen_length
    steps_per_block = steps // (gen_length // block_length)
    for block in range(gen_length // block_length):
        start, end = prompt_length + block * block_length, prompt_length + (block + 1) * block_length
        n_masked = (x[:, start:end] == mask_id).sum(-1)
        counts = [[int(n) // steps_per_block + (s < int(n) % steps_per_block) for s in range(steps_per_block)]
                  for n in n_masked]
        for step in range(steps_per_block):
            masked = x == mask_id
            with torch.no_grad():
                logits = model(x, attention_mask=attention_mask)
            x0 = no_mask_argmax(logits, mask_id)
            x0_p = logits.softmax(-1).gather(-1, x0[..., None]).squeeze(-1)
            x0_p[:, end:] = float("-inf")
            x0 = torch.where(masked, x0, x)
            confidence = torch.where(masked, x0_p, float("-inf"))
            for row in range(x.shape[0]):
                chosen = confidence[row].topk(counts[row][step]).indices
                x[row, chosen] = x0[row, chosen]
    return x[:, prompt_length:]


BATCHES = [["Question: 2+2?\nAnswer:", "Hi", "The cat sat on"], ["x", "def f(x):\n    return", "12*7="],
           ["Once upon a time,", "Name three colours:", "ab"]]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("schedule", [(16, 16, 16), (16, 8, 8), (24, 12, 8)])
def test_rank_dtype_model_reproduces_llada_generate_on_a_padded_bf16_batch(seed, schedule):
    """With the model's ``padding: reference`` and ``rank_dtype: model``, the confidence
    sampler decodes a left-padded bf16 batch token for token as generate.py does (bf16
    confidences tie often; topk over the padded row breaks the ties)."""
    model = build_tiny("llama", seed=seed, dtype="bfloat16", padding="reference")
    gen_length, steps, block_length = schedule
    for texts in BATCHES:
        ids, mask = padded_batch(model, texts, gen_length)
        expected = reference_generate(model, ids, mask, gen_length, steps, block_length)
        prompts = [model.tokenizer(t)["input_ids"] for t in texts]
        out = build_sampler("confidence", rank_dtype="model").generate(
            model, prompts, Schedule(gen_length, steps, block_length))
        assert torch.equal(out.tokens, expected)
        assert [a.nfe for a in out.accounting] == [steps] * len(texts)
