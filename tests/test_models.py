"""Denoisers: loading through the real checkpoint path, bidirectionality, Dream's shift,
padding, and the live-row forward."""
import json

import pytest
import torch
from safetensors.torch import save_file

from boe_bench.errors import ConfigError
from boe_bench.models import build_model
from boe_bench.models.base import positions_from_mask
from boe_bench.models.llada import BLOCK_KEY_MAP, KEY_MAP
from boe_bench.models.tiny import build_char_tokenizer, build_tiny

SMALL = dict(n_layers=2, d_model=32, n_heads=4)


def llama_key_to_llada(key):
    inverse = {v: k for k, v in KEY_MAP.items()}
    if key in inverse:
        return inverse[key]
    layer, rest = key.removeprefix("model.layers.").split(".", 1)
    block = {v: k for k, v in BLOCK_KEY_MAP.items()}[rest.removesuffix(".weight")]
    return f"model.transformer.blocks.{layer}.{block}.weight"


@pytest.fixture()
def llada_checkpoint(tmp_path):
    """A tiny checkpoint in LLaDA's own format: its config fields and key names."""
    source = build_tiny("llama", seed=3, **SMALL)
    cfg = source.hf.config
    state = {llama_key_to_llada(k): v.contiguous() for k, v in source.hf.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llada", "architectures": ["LLaDAModelLM"], "d_model": cfg.hidden_size,
        "n_heads": cfg.num_attention_heads, "n_kv_heads": cfg.num_key_value_heads, "n_layers": cfg.num_hidden_layers,
        "mlp_hidden_size": cfg.intermediate_size, "embedding_size": cfg.vocab_size, "vocab_size": cfg.vocab_size,
        "rope_theta": cfg.rope_parameters["rope_theta"] if hasattr(cfg, "rope_parameters") else cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps, "max_sequence_length": 512, "weight_tying": False, "include_bias": False,
        "include_qkv_bias": False, "mask_token_id": source.mask_id, "eos_token_id": source.eos_ids[0],
    }))
    build_char_tokenizer().save_pretrained(str(tmp_path))
    return tmp_path, source


@pytest.fixture()
def dream_checkpoint(tmp_path):
    source = build_tiny("qwen2", seed=4, n_kv_heads=2, **SMALL)
    save_file({k: v.contiguous() for k, v in source.hf.state_dict().items()}, str(tmp_path / "model.safetensors"))
    config = source.hf.config.to_dict()
    config.update(model_type="Dream", architectures=["DreamModel"], mask_token_id=source.mask_id,
                  eos_token_id=source.eos_ids[0])
    (tmp_path / "config.json").write_text(json.dumps(config))
    build_char_tokenizer().save_pretrained(str(tmp_path))
    return tmp_path, source


def test_llada_checkpoint_maps_every_key_and_reproduces_logits(llada_checkpoint):
    path, source = llada_checkpoint
    loaded = build_model("llada", path=str(path), device="cpu", eot_token="<|eot|>")
    assert loaded.mask_id == source.mask_id and set(loaded.eos_ids) == set(source.eos_ids)
    for key, value in source.hf.state_dict().items():
        assert torch.equal(loaded.hf.state_dict()[key], value), key
    ids = torch.randint(8, 100, (2, 12))
    assert torch.equal(loaded(ids), source(ids))


def test_llada_checkpoint_with_a_missing_key_is_rejected(llada_checkpoint):
    path, _ = llada_checkpoint
    from safetensors.torch import load_file

    state = load_file(str(path / "model.safetensors"))
    state.pop("model.transformer.blocks.1.ff_norm.weight")
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ConfigError, match="post_attention_layernorm"):
        build_model("llada", path=str(path), device="cpu")


def test_dream_checkpoint_loads_with_shift(dream_checkpoint):
    path, source = dream_checkpoint
    loaded = build_model("dream", path=str(path), device="cpu")
    assert loaded.logit_shift == 1 and loaded.mask_id == source.mask_id
    ids = torch.randint(8, 100, (1, 10))
    rows, _ = loaded.forward_rows(loaded.embed(ids))
    logits = loaded(ids)
    assert torch.equal(logits[:, 1:], rows[:, :-1])  # position p read at row p - 1
    assert torch.equal(logits, source(ids))


def test_unreachable_model_is_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_model("llada", path=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="hub is unreachable|not in the local HF cache"):
        build_model("llada", path="no-such-org/no-such-model")


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_attention_is_bidirectional(arch):
    model = build_tiny(arch, n_kv_heads=2, **SMALL)
    ids = torch.randint(8, 100, (1, 10))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 100 + 8
    assert not torch.allclose(model(ids)[0, 2], model(changed)[0, 2])


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_our_layer_loop_equals_the_stock_forward(arch):
    model = build_tiny(arch, n_kv_heads=2, **SMALL)
    ids = torch.randint(8, 100, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    bias = model._attention_bias(mask.bool(), torch.float32)
    stock = model.hf(input_ids=ids, attention_mask=bias, position_ids=positions_from_mask(mask)).logits
    ours, _ = model.forward_rows(model.embed(ids), mask)
    assert torch.allclose(ours, stock, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_live_rows_equal_full_forward_with_padding(arch):
    model = build_tiny(arch, n_kv_heads=2, dtype="float64", **SMALL)
    ids = torch.randint(8, 100, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    full, state = model.forward_rows(model.embed(ids), mask, capture=True)
    live = torch.tensor([[2, 9, 15], [6, 11, 16]])  # 16 == L pads the second row
    index = live.clamp(max=15)
    out = model.live_forward(state, live, model.embed(ids.gather(1, index)))
    expected = full.gather(1, index[..., None].expand(-1, -1, full.shape[-1]))
    assert torch.allclose(out[0], expected[0], atol=1e-12)
    assert torch.allclose(out[1, :2], expected[1, :2], atol=1e-12)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_padded_batch_equals_prompts_alone(arch):
    model = build_tiny(arch, n_kv_heads=2, dtype="float64", **SMALL)
    long, short = torch.randint(8, 100, (1, 12)), torch.randint(8, 100, (1, 7))
    batch = torch.full((2, 12), model.pad_id)
    batch[0], batch[1, 5:] = long[0], short[0]
    mask = (torch.arange(12) >= torch.tensor([[0], [5]])).long()
    out = model(batch, attention_mask=mask)
    assert torch.allclose(out[0], model(long)[0], atol=1e-10)
    # With a logit shift the first prompt position reads a padding row: it is never decoded.
    first = model.logit_shift
    assert torch.allclose(out[1, 5 + first :], model(short)[0, first:], atol=1e-10)


def test_logits_from_embeddings_equal_logits_from_ids(tiny_llada):
    ids = torch.randint(8, 100, (1, 9))
    assert torch.equal(tiny_llada(ids), tiny_llada(embeds=tiny_llada.embed(ids)))
