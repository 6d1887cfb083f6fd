"""LLaDA's ``rope_full_precision``: in bf16 the reference rotates queries and keys in
float32 and casts back; stock Llama (and Dream's reference) rotate in bf16.

The reference forward below is written from LLaDA's remote ``modeling_llada.py`` for a
``block_type: llama`` model (RMSNorm with float32 statistics, float32 rotary tables built
from ``arange`` positions, rotate-half, SDPA without a mask, SwiGLU), over the weights of
a tiny bf16 model with LLaDA's head size (128), where bf16 rotation visibly matters.
"""
import json

import pytest
import torch
import torch.nn.functional as F

from boe_bench.errors import ConfigError
from boe_bench.models.llada import DEFAULTS_THAT_DIFFER, llama_config_from_llada
from boe_bench.models.tiny import build_tiny
from boe_bench.models.transformer import TransformerDenoiser

HEAD_DIM = 128


def llada_reference_logits(hf, ids: torch.Tensor, rotate_in_float32: bool) -> torch.Tensor:
    """Logits [B, L, V] the way LLaDA's remote code computes them (unpadded, bidirectional)."""
    cfg = hf.config
    dtype = hf.model.embed_tokens.weight.dtype
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = cfg.hidden_size // n_heads
    theta = cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else cfg.rope_theta
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    angles = torch.einsum("i,j->ij", torch.arange(ids.shape[1], dtype=torch.float), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    sin, cos = angles.sin()[None, None], angles.cos()[None, None]

    def rms(norm, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight * h.to(x.dtype)

    def rotary(t):
        t_ = t.float() if rotate_in_float32 else t
        half = head_dim // 2
        rotated = torch.cat((-t_[..., half:], t_[..., :half]), dim=-1)
        return (t_ * cos.type_as(t_) + rotated * sin.type_as(t_)).type_as(t)

    x = hf.model.embed_tokens(ids)
    b, n, _ = x.shape
    for layer in hf.model.layers:
        h = rms(layer.input_layernorm, x)
        attn = layer.self_attn
        q = attn.q_proj(h).view(b, n, n_heads, head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(b, n, n_kv, head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(b, n, n_kv, head_dim).transpose(1, 2)
        q, k = rotary(q), rotary(k)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False)
        x = x + attn.o_proj(out.transpose(1, 2).reshape(b, n, -1))
        h = rms(layer.post_attention_layernorm, x)
        x = x + layer.mlp.down_proj(F.silu(layer.mlp.gate_proj(h)) * layer.mlp.up_proj(h))
    return hf.lm_head(rms(hf.model.norm, x)).to(dtype)


@pytest.fixture(scope="module")
def bf16_llada():
    model = build_tiny("llama", n_layers=2, d_model=2 * HEAD_DIM, n_heads=2, seed=5, dtype="bfloat16")
    assert model.rope_full_precision and model.head_dim == HEAD_DIM
    # Larger weights than the default init, so that queries and keys are O(1) as in a trained model.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.hf.named_parameters():
            if not name.endswith("norm.weight"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.08)
    return model


@pytest.fixture(scope="module")
def ids():
    return torch.randint(8, 100, (2, 160), generator=torch.Generator().manual_seed(1))


def bf16_rotary_twin(model):
    """The same weights with the rotation in the model's dtype (stock Llama)."""
    return TransformerDenoiser(model.hf, model.tokenizer, model.mask_id, model.eos_ids, name="bf16-rotary",
                               rope_full_precision=False)


def test_bf16_llada_rotates_in_float32_like_the_reference(bf16_llada, ids):
    with torch.no_grad():
        ours = bf16_llada(ids)
        reference = llada_reference_logits(bf16_llada.hf, ids, rotate_in_float32=True)
        bf16_reference = llada_reference_logits(bf16_llada.hf, ids, rotate_in_float32=False)
        stock = bf16_rotary_twin(bf16_llada)(ids)
    assert ours.dtype == torch.bfloat16
    assert torch.equal(ours, reference)
    # The bf16 rotation is a different computation, and the toggle gives exactly it.
    assert torch.equal(stock, bf16_reference)
    assert (stock.float() - reference.float()).abs().max() > 0.05
    assert (stock.argmax(-1) != reference.argmax(-1)).any()


def first_layer_live_keys(model, ids, live):
    """The live-row recompute's first-layer keys (after rotation), and the full forward's state
    and logits. The first layer's input is the embedding itself, so those keys must equal the
    full forward's at the live rows bit for bit when both rotate the same way."""
    seen = []
    heads = model._heads

    def spy(*args):
        out = heads(*args)
        seen.append(out[1])
        return out

    with torch.no_grad():
        full, state = model.forward_rows(model.embed(ids), capture=True)
        model._heads = spy
        try:
            out = model.live_forward(state, live, model.embed(ids.gather(1, live)))
        finally:
            del model._heads
    return seen[0], state, full, out


def test_bf16_live_rows_rotate_as_the_full_forward(bf16_llada, ids):
    """The live-row recompute (BoE) shares the rotary code: its rotated keys equal the full
    forward's bit for bit, and they would not with bf16 rotation. Its attention is written
    out (scores and softmax in float32, see ``_attend_live``), so its logits agree with the
    full forward's to bf16 rounding, not bit for bit."""
    live = torch.tensor([[3, 77, 150], [0, 64, 159]])
    slots = live[:, None, :, None].expand(-1, bf16_llada.n_kv_heads, -1, HEAD_DIM)
    keys, state, full, out = first_layer_live_keys(bf16_llada, ids, live)
    assert torch.equal(keys, state.keys[0].gather(2, slots))
    expected = full.gather(1, live[..., None].expand(-1, -1, full.shape[-1]))
    assert (out.float() - expected.float()).abs().max() < 0.1
    assert torch.equal(out.argmax(-1), expected.argmax(-1))
    twin_keys, *_ = first_layer_live_keys(bf16_rotary_twin(bf16_llada), ids, live)
    assert not torch.equal(twin_keys, keys)


def test_float32_rotary_choice_changes_nothing_in_float32():
    model = build_tiny("llama", d_model=2 * HEAD_DIM, n_heads=2, seed=5)
    ids = torch.randint(8, 100, (1, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(ids), bf16_rotary_twin(model)(ids))


def test_dream_keeps_its_reference_bf16_rotation():
    assert not build_tiny("qwen2", n_kv_heads=2).rope_full_precision


def test_llada_config_leaving_a_differing_default_unset_is_refused():
    from tests.test_models import LLADA_8B_CONFIG

    assert llama_config_from_llada(LLADA_8B_CONFIG).num_hidden_layers == 32
    for name in DEFAULTS_THAT_DIFFER:
        config = {k: v for k, v in LLADA_8B_CONFIG.items() if k != name}
        with pytest.raises(ConfigError, match=f"does not set \\['{name}'\\]") as err:
            llama_config_from_llada(config)
        assert "\n" not in str(err.value)
    # rope_full_precision's default (true) is the released value: leaving it out is fine.
    config = {k: v for k, v in LLADA_8B_CONFIG.items() if k != "rope_full_precision"}
    assert llama_config_from_llada(config).hidden_size == 4096


def test_llada_loader_honours_rope_full_precision(tmp_path):
    """A checkpoint whose config says false rotates in the model's dtype; absent means true."""
    from tests.test_models import LLADA_8B_CONFIG, llama_key_to_llada, save_sharded
    from transformers import LlamaForCausalLM

    from boe_bench.models import build_model
    from boe_bench.models.tiny import build_char_tokenizer, tiny_config

    tokenizer = build_char_tokenizer()
    source = LlamaForCausalLM(tiny_config("llama", n_layers=1, d_model=32, n_heads=2, vocab_size=len(tokenizer)))
    save_sharded({llama_key_to_llada(k): v for k, v in source.state_dict().items()}, tmp_path)
    tokenizer.save_pretrained(str(tmp_path))
    base = dict(LLADA_8B_CONFIG, d_model=32, n_heads=2, n_kv_heads=2, n_layers=1, mlp_hidden_size=128,
                embedding_size=len(tokenizer), vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
                eos_token_id=tokenizer.eos_token_id)
    for setting, expected in [(False, False), (None, True)]:
        config = dict(base, rope_full_precision=setting)
        if setting is None:
            del config["rope_full_precision"]
        (tmp_path / "config.json").write_text(json.dumps(config))
        model = build_model("llada", path=str(tmp_path), device="cpu", dtype="bfloat16", eot_token="<|eot|>")
        assert model.rope_full_precision is expected
