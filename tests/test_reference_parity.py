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
