"""The MDLM DiT adapter: ids vs embeddings, live rows vs full forward, SUBS, time, loading."""
import json

import pytest
import torch

from boe_bench.errors import ConfigError
from boe_bench.models import MODELS
from boe_bench.models.mdlm import MDLMDenoiser, build_mdlm, build_tiny_mdlm, mdlm_key


@pytest.fixture(scope="module")
def mdlm64():
    return build_tiny_mdlm(dtype="float64", seed=1)


@pytest.fixture(scope="module")
def mdlm64_timed():
    return build_tiny_mdlm(dtype="float64", seed=2, time_conditioning=True)


def canvas(model, batch=2, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, model.vocab_size - 1, (batch, length), generator=g)
    ids[:, 4:9] = model.mask_id
    ids[1, 2] = model.mask_id
    return ids


def same_logits(a, b, atol=0.0):
    """Equal -inf pattern and finite entries within atol."""
    assert torch.equal(torch.isinf(a), torch.isinf(b))
    finite = torch.isfinite(a)
    assert (a[finite] - b[finite]).abs().max() <= atol


def test_registered_and_attributes():
    assert MODELS.get("mdlm") is build_mdlm and MODELS.get("tiny_mdlm") is build_tiny_mdlm
    model = build_tiny_mdlm()
    assert isinstance(model, MDLMDenoiser)
    assert model.mask_id == model.tokenizer.mask_token_id and model.logit_shift == 0
    assert not model.time_conditioned and build_tiny_mdlm(time_conditioning=True).time_conditioned


def test_forward_from_ids_equals_forward_from_their_embeddings(mdlm64):
    ids = canvas(mdlm64)
    from_ids = mdlm64(ids)
    from_embeds, _ = mdlm64.forward_rows(mdlm64.embed(ids), ids=ids)
    assert torch.equal(torch.isinf(from_ids), torch.isinf(from_embeds))
    assert torch.equal(from_ids.nan_to_num(neginf=0.0), from_embeds.nan_to_num(neginf=0.0))


def test_subs_never_predicts_mask_and_copies_unmasked_inputs(mdlm64):
    ids = canvas(mdlm64)
    probs = mdlm64(ids).exp()
    assert torch.allclose(probs.sum(-1), torch.ones_like(probs[..., 0]))
    assert (probs[..., mdlm64.mask_id] == 0).all()
    unmasked = ids != mdlm64.mask_id
    assert torch.equal(probs[unmasked], torch.nn.functional.one_hot(ids[unmasked], mdlm64.vocab_size).double())
    # A masked position gets a real distribution, not a copy.
    assert (probs[~unmasked].max(-1).values < 0.999).all()


def test_attention_is_bidirectional(mdlm64):
    ids = canvas(mdlm64)
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1 - 8) % (mdlm64.vocab_size - 9) + 8
    a, b = mdlm64(ids), mdlm64(changed)
    assert (a[0, 4] - b[0, 4]).nan_to_num(0.0).abs().max() > 1e-6  # masked position 4 sees position 11


@pytest.mark.parametrize("timed", [False, True])
def test_live_rows_equal_full_forward(mdlm64, mdlm64_timed, timed):
    model = mdlm64_timed if timed else mdlm64
    ids = canvas(model)
    attention = torch.ones_like(ids)
    attention[1, :2] = 0  # left padding in row 1
    ids[1, :2] = model.pad_id
    time = torch.tensor([0.4, 0.7], dtype=torch.float64) if timed else None
    full, state = model.forward_with_state(ids, attention, time)
    length = ids.shape[1]
    # Masked and unmasked rows, and a padding entry (== L) in row 0.
    rows = torch.tensor([[4, 0, 7, length], [2, 5, 11, 3]])
    index = rows.clamp(max=length - 1)
    live = model.live_forward(state, rows, model.embed(ids.gather(1, index)))
    expected = full.gather(1, index[..., None].expand(-1, -1, full.shape[-1]))
    same_logits(live[0, :3], expected[0, :3], atol=1e-12)
    same_logits(live[1], expected[1], atol=1e-12)


def test_live_rows_carry_gradients_to_masked_inputs(mdlm64):
    ids = canvas(mdlm64)
    _, state = mdlm64.forward_with_state(ids)
    rows = torch.tensor([[4, 5], [6, 2]])
    embeds = mdlm64.embed(ids.gather(1, rows)).detach().requires_grad_(True)
    log_probs = mdlm64.live_forward(state, rows, embeds)
    entropy = -(log_probs.exp() * log_probs).nan_to_num(0.0).sum()
    (grad,) = torch.autograd.grad(entropy, embeds)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_time_conditioning_only_when_the_checkpoint_has_it(mdlm64, mdlm64_timed):
    ids = canvas(mdlm64)
    early, late = torch.tensor([0.9, 0.9]), torch.tensor([0.1, 0.1])
    same_logits(mdlm64(ids, time=early), mdlm64(ids, time=late))
    a, b = mdlm64_timed(ids, time=early), mdlm64_timed(ids, time=late)
    masked = ids == mdlm64_timed.mask_id
    assert (a[masked] - b[masked]).nan_to_num(0.0).abs().max() > 1e-6


# Tensor names of a one-block hub checkpoint, written out from the reference modules
# (kuleshov-group/mdlm models/dit.py; the hub's MDLM wraps the DiT as ``backbone``).
REFERENCE_KEYS_ONE_BLOCK = [
    "backbone.vocab_embed.embedding",
    "backbone.sigma_map.mlp.0.weight", "backbone.sigma_map.mlp.0.bias",
    "backbone.sigma_map.mlp.2.weight", "backbone.sigma_map.mlp.2.bias",
    "backbone.blocks.0.norm1.weight", "backbone.blocks.0.attn_qkv.weight", "backbone.blocks.0.attn_out.weight",
    "backbone.blocks.0.norm2.weight", "backbone.blocks.0.mlp.0.weight", "backbone.blocks.0.mlp.0.bias",
    "backbone.blocks.0.mlp.2.weight", "backbone.blocks.0.mlp.2.bias",
    "backbone.blocks.0.adaLN_modulation.weight", "backbone.blocks.0.adaLN_modulation.bias",
    "backbone.output_layer.norm_final.weight", "backbone.output_layer.linear.weight",
    "backbone.output_layer.linear.bias", "backbone.output_layer.adaLN_modulation.weight",
    "backbone.output_layer.adaLN_modulation.bias",
]


def test_loads_a_checkpoint_with_the_reference_key_names(tmp_path):
    from safetensors.torch import save_file

    source = build_tiny_mdlm(n_layers=1, seed=3)
    params = source.state_dict()
    mapped = {key: mdlm_key(key) for key in REFERENCE_KEYS_ONE_BLOCK}
    assert sorted(mapped.values()) == sorted(params), "the key map must cover every parameter exactly once"
    tensors = {key: params[name].contiguous() for key, name in mapped.items()}
    tensors["backbone.rotary_emb.inv_freq"] = torch.ones(8)  # a buffer the reference saves; rebuilt here
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    save_file(tensors, str(checkpoint / "model.safetensors"))
    cfg = source.cfg
    (checkpoint / "config.json").write_text(json.dumps({
        "model_type": "mdlm", "vocab_size": cfg.vocab_size, "hidden_dim": cfg.hidden_dim, "cond_dim": cfg.cond_dim,
        "n_blocks": cfg.n_blocks, "n_heads": cfg.n_heads, "time_conditioning": False, "model_length": 1024}))
    tokenizer_dir = tmp_path / "tok"
    source.tokenizer.save_pretrained(str(tokenizer_dir))

    loaded = build_mdlm(path=str(checkpoint), tokenizer_path=str(tokenizer_dir), device="cpu")
    ids = canvas(source)
    same_logits(loaded(ids), source(ids))
    assert loaded.mask_id == source.mask_id and not loaded.time_conditioned

    del tensors["backbone.blocks.0.attn_out.weight"]
    save_file(tensors, str(checkpoint / "model.safetensors"))
    with pytest.raises(ConfigError, match="missing"):
        build_mdlm(path=str(checkpoint), tokenizer_path=str(tokenizer_dir), device="cpu")


def test_unreachable_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        build_mdlm(path="kuleshov-group/no-such-mdlm-checkpoint")
    with pytest.raises(ConfigError, match="does not exist"):
        build_mdlm(path=str(tmp_path / "missing"))
