"""Denoisers: the LLaDA and Dream loaders read checkpoints in the released layouts (config
field names, tensor names, sharding, tokenizer files) into stock classes; the result runs
bidirectionally, Dream's logits are shifted, padding changes nothing, and the live-row
forward reproduces the full forward.

The checkpoints here are tiny random models written in the released formats; only their
sizes differ from the real configs below.
"""
import json
import shutil

import pytest

from boe_bench.models.base import padding_bias
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM, Qwen2ForCausalLM

from boe_bench.errors import ConfigError
from boe_bench.models import build_model
from boe_bench.models.base import Denoiser, positions_from_mask
from boe_bench.models.dream import qwen2_config_from_dream
from boe_bench.models.llada import BLOCK_KEY_MAP, KEY_MAP, llada_key_to_llama, llama_config_from_llada
from boe_bench.models import transformer
from boe_bench.models.tiny import build_char_tokenizer, tiny_config
from boe_bench.samplers.base import entropy

# config.json of GSAI-ML/LLaDA-8B-Base / -Instruct (LLaDA-1.5 shares it): the remote
# LLaDAConfig's field names with the released values.
LLADA_8B_CONFIG = {
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
    "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
                 "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
    "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 4096,
    "embedding_dropout": 0.0, "embedding_size": 126464, "eos_token_id": 126081, "flash_attention": False,
    "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
    "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
    "layer_norm_with_affine": True, "mask_token_id": 126336, "max_sequence_length": 4096, "mlp_hidden_size": 12288,
    "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None, "n_heads": 32, "n_kv_heads": 32,
    "n_layers": 32, "pad_token_id": 126081, "precision": "amp_bf16", "residual_dropout": 0.0, "rms_norm_eps": 1e-05,
    "rope": True, "rope_full_precision": True, "rope_theta": 500000.0, "scale_logits": False,
    "transformers_version": "4.46.3", "use_cache": False, "vocab_size": 126464, "weight_tying": False,
}
# config.json of Dream-org/Dream-v0-Base-7B / -Instruct-7B (Qwen2.5-7B shapes, remote DreamConfig).
DREAM_7B_CONFIG = {
    "architectures": ["DreamModel"], "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
    "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 3584,
    "initializer_range": 0.02, "intermediate_size": 18944, "mask_token_id": 151666, "max_position_embeddings": 131072,
    "max_window_layers": 28, "model_type": "Dream", "num_attention_heads": 28, "num_hidden_layers": 28,
    "num_key_value_heads": 4, "pad_token_id": 151643, "rms_norm_eps": 1e-06, "rope_scaling": None,
    "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.46.2", "use_cache": False, "use_mrope": False, "use_sliding_window": False,
    "vocab_size": 152064,
}
LLADA_BLOCK_PARTS = ("attn_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_norm", "ff_proj", "up_proj", "ff_out")
DREAM_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>")


def llada_8b_keys(n_layers=32):
    """Tensor names of the released LLaDA-8B index (model.safetensors.index.json)."""
    blocks = [f"model.transformer.blocks.{i}.{part}.weight" for i in range(n_layers) for part in LLADA_BLOCK_PARTS]
    return ["model.transformer.wte.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight", *blocks]


def llama_key_to_llada(key):
    inverse = {v: k for k, v in KEY_MAP.items()}
    if key in inverse:
        return inverse[key]
    layer, rest = key.removeprefix("model.layers.").split(".", 1)
    block = {v: k for k, v in BLOCK_KEY_MAP.items()}[rest.removesuffix(".weight")]
    return f"model.transformer.blocks.{layer}.{block}.weight"


def save_sharded(state, directory, shards=2):
    """Safetensors shards plus the index, as the releases ship them."""
    keys = sorted(state)
    weight_map = {}
    for shard in range(shards):
        name = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[shard::shards]}
        save_file(part, str(directory / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def byte_level_alphabet():
    """GPT-2 / Qwen2 byte-to-character table: the base of a byte-level BPE vocab."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(shifted))]


def write_dream_tokenizer(directory):
    """vocab.json, merges.txt and a tokenizer_config.json naming the remote DreamTokenizer,
    as Dream ships them (no tokenizer.json); special tokens follow the byte vocabulary."""
    vocab = {ch: i for i, ch in enumerate(byte_level_alphabet())}
    for merged in ("Ġt", "he", "Ġthe"):
        vocab[merged] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\nĠ t\nh e\nĠt he\n", encoding="utf-8")
    added = {str(len(vocab) + i): {"content": tok, "lstrip": False, "normalized": False, "rstrip": False,
                                   "single_word": False, "special": True} for i, tok in enumerate(DREAM_SPECIALS)}
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": added, "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "mask_token": "<|mask|>", "clean_up_tokenization_spaces": False, "errors": "replace",
        "model_max_length": 131072, "split_special_tokens": False, "tokenizer_class": "DreamTokenizer",
        "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    }, ensure_ascii=False))
    return {tok: len(vocab) + i for i, tok in enumerate(DREAM_SPECIALS)}


def randomised(model, seed):
    """``model`` with every tensor random (norm gains and biases too), so that each mapped
    tensor shows in the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            noise = torch.randn(tensor.shape, generator=generator)
            tensor.copy_(1 + 0.1 * noise if name.endswith("norm.weight") else 0.15 * noise)
    return model.eval()


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory):
    """(directory, source model): a tiny LLaDA-format checkpoint and the Llama model it holds."""
    directory = tmp_path_factory.mktemp("llada")
    tokenizer = build_char_tokenizer()
    padded_vocab = 112  # embedding_size pads the vocabulary, as 126464 does in the release
    source = randomised(LlamaForCausalLM(tiny_config("llama", n_layers=2, d_model=32, n_heads=4, n_kv_heads=2,
                                                     vocab_size=padded_vocab)), seed=3)
    save_sharded({llama_key_to_llada(k): v for k, v in source.state_dict().items()}, directory)
    config = dict(LLADA_8B_CONFIG, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=128,
                  embedding_size=padded_vocab, vocab_size=len(tokenizer), max_sequence_length=512,
                  mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.eos_token_id)
    (directory / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(str(directory))
    return directory, source


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dream")
    specials = write_dream_tokenizer(directory)
    vocab_size = 272  # larger than the tokenizer, as 152064 is for Dream's 151667 tokens
    source = randomised(Qwen2ForCausalLM(tiny_config("qwen2", n_layers=2, d_model=32, n_heads=4, n_kv_heads=2,
                                                     vocab_size=vocab_size)), seed=4)
    save_sharded(source.state_dict(), directory)
    eos = specials["<|endoftext|>"]
    config = dict(DREAM_7B_CONFIG, hidden_size=32, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2,
                  num_key_value_heads=2, max_position_embeddings=512, max_window_layers=2, vocab_size=vocab_size,
                  rms_norm_eps=1e-5, mask_token_id=specials["<|mask|>"], eos_token_id=eos, bos_token_id=eos,
                  pad_token_id=eos)
    (directory / "config.json").write_text(json.dumps(config))
    return directory, source, specials


def read_checkpoint(directory):
    state = {}
    for file in sorted(directory.glob("*.safetensors")):
        state.update(load_file(str(file)))
    return {k: v.double() for k, v in state.items()}


def reference_logits(ids, tensor, n_layers, n_heads, n_kv_heads, rope_theta, eps):
    """Logits [L, V] of one unpadded sequence, computed from the released tensors by role, the
    way the remote modeling files compute them: pre-norm blocks, rotate-half rotary
    embeddings, attention with no mask at all, SwiGLU with act(gate) * up. ``tensor(role, i)``
    returns a layer's tensor (None for an absent bias)."""
    x = tensor("embed", None)[ids]
    length, width = x.shape
    head_dim = width // n_heads
    inv_freq = 1.0 / rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq).repeat(1, 2)
    cos, sin = angles.cos(), angles.sin()

    def rms(h, gain):
        return gain * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)

    def linear(h, role, i):
        bias = tensor(role + "_bias", i)
        return h @ tensor(role, i).T + (0 if bias is None else bias)

    def rotate(h):  # h: [heads, L, head_dim]
        half = head_dim // 2
        return h * cos + torch.cat([-h[..., half:], h[..., :half]], -1) * sin

    for i in range(n_layers):
        h = rms(x, tensor("attn_norm", i))
        q = rotate(linear(h, "q", i).view(length, n_heads, head_dim).transpose(0, 1))
        k = rotate(linear(h, "k", i).view(length, n_kv_heads, head_dim).transpose(0, 1))
        v = linear(h, "v", i).view(length, n_kv_heads, head_dim).transpose(0, 1)
        k, v = (t.repeat_interleave(n_heads // n_kv_heads, 0) for t in (k, v))
        weights = torch.softmax(q @ k.transpose(1, 2) / head_dim ** 0.5, -1)
        x = x + linear((weights @ v).transpose(0, 1).reshape(length, width), "o", i)
        h = rms(x, tensor("ff_norm", i))
        x = x + linear(torch.nn.functional.silu(linear(h, "gate", i)) * linear(h, "up", i), "down", i)
    return rms(x, tensor("final_norm", None)) @ tensor("head", None).T


LLADA_ROLES = {"attn_norm": "attn_norm", "q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "attn_out",
               "ff_norm": "ff_norm", "gate": "ff_proj", "up": "up_proj", "down": "ff_out"}
QWEN2_ROLES = {"attn_norm": "input_layernorm", "q": "self_attn.q_proj", "k": "self_attn.k_proj",
               "v": "self_attn.v_proj", "o": "self_attn.o_proj", "ff_norm": "post_attention_layernorm",
               "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def llada_tensor(state):
    top = {"embed": "model.transformer.wte.weight", "final_norm": "model.transformer.ln_f.weight",
           "head": "model.transformer.ff_out.weight"}

    def tensor(role, i):
        if i is None:
            return state[top[role]]
        if role.endswith("_bias"):
            return None  # include_bias / include_qkv_bias are false in the release
        return state[f"model.transformer.blocks.{i}.{LLADA_ROLES[role]}.weight"]
    return tensor


def dream_tensor(state):
    top = {"embed": "model.embed_tokens.weight", "final_norm": "model.norm.weight", "head": "lm_head.weight"}

    def tensor(role, i):
        if i is None:
            return state[top[role]]
        kind = "bias" if role.endswith("_bias") else "weight"
        return state.get(f"model.layers.{i}.{QWEN2_ROLES[role.removesuffix('_bias')]}.{kind}")
    return tensor


@pytest.fixture(scope="module")
def loaded(llada_dir, dream_dir):
    """Both tiny checkpoints through the real loaders, in float64 for exact comparisons."""
    return {
        "llama": build_model("llada", path=str(llada_dir[0]), device="cpu", dtype="float64", eot_token="<|eot|>"),
        "qwen2": build_model("dream", path=str(dream_dir[0]), device="cpu", dtype="float64"),
    }


def rope_theta(config):
    """transformers 5 nests it in rope_parameters, 4.x keeps it on the config."""
    return getattr(config, "rope_parameters", None) and config.rope_parameters["rope_theta"] or config.rope_theta


def random_ids(shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(10, 100, shape, generator=generator)


# --- (a) key maps and configs ------------------------------------------------------------

def test_llada_8b_config_and_every_released_key_map_onto_stock_llama():
    config = llama_config_from_llada(LLADA_8B_CONFIG)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size, config.vocab_size) == (4096, 32, 32, 32, 12288, 126464)
    assert rope_theta(config) == 500000.0 and config.rms_norm_eps == 1e-5
    assert config.tie_word_embeddings is False
    with torch.device("meta"):
        llama = LlamaForCausalLM(config)
    released = llada_8b_keys()
    mapped = [llada_key_to_llama(key) for key in released]
    assert len(released) == 291 and len(set(mapped)) == 291
    assert set(mapped) == set(llama.state_dict())
    assert sum(p.numel() for p in llama.parameters()) == 8_015_581_184


def test_dream_7b_config_maps_onto_stock_qwen2():
    config = qwen2_config_from_dream(DREAM_7B_CONFIG)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size, config.vocab_size) == (3584, 28, 28, 4, 18944, 152064)
    assert rope_theta(config) == 1000000.0 and config.rms_norm_eps == 1e-6
    assert config.use_sliding_window is False and config.sliding_window is None
    assert config.tie_word_embeddings is False


def test_llada_checkpoint_loads_every_key_with_equal_weights(llada_dir):
    directory, source = llada_dir
    model = build_model("llada", path=str(directory), device="cpu", eot_token="<|eot|>")
    tokenizer = build_char_tokenizer()
    assert model.mask_id == tokenizer.mask_token_id
    assert model.eos_ids == (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|eot|>"))
    assert model.dtype == torch.float32 and model.logit_shift == 0
    ours, theirs = model.hf.state_dict(), source.state_dict()
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
    assert rope_theta(model.hf.config) == 500000.0
    ids = random_ids((2, 12))
    bias = padding_bias(torch.ones_like(ids, dtype=torch.bool), torch.float32)
    stock = source(input_ids=ids, attention_mask=bias.expand(-1, -1, 12, -1)).logits
    assert torch.allclose(model(ids), stock, rtol=1e-5, atol=1e-5)


def test_dream_checkpoint_loads_every_key_with_equal_weights_and_stock_tokenizer(dream_dir):
    directory, source, specials = dream_dir
    model = build_model("dream", path=str(directory), device="cpu")
    assert model.mask_id == specials["<|mask|>"] and model.logit_shift == 1
    assert model.eos_ids == (specials["<|endoftext|>"], specials["<|im_end|>"])
    ours, theirs = model.hf.state_dict(), source.state_dict()
    assert set(ours) == set(theirs) and any(key.endswith("q_proj.bias") for key in ours)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
    # DreamTokenizer is remote code; the stock Qwen2 tokenizer reads the same files.
    tokenizer = model.tokenizer
    assert type(tokenizer).__name__.startswith("Qwen2Tokenizer")
    ids = tokenizer(" the<|mask|>").input_ids
    assert ids == [len(byte_level_alphabet()) + 2, specials["<|mask|>"]]
    assert tokenizer.decode(tokenizer("é <|im_end|>x").input_ids) == "é <|im_end|>x"
    assert tokenizer.pad_token_id == specials["<|endoftext|>"] == model.pad_id


def test_loaded_llada_computes_what_the_released_tensors_mean(loaded, llada_dir):
    config = json.loads((llada_dir[0] / "config.json").read_text())
    ids = random_ids((1, 11), seed=5)
    expected = reference_logits(ids[0], llada_tensor(read_checkpoint(llada_dir[0])), config["n_layers"],
                                config["n_heads"], config["n_kv_heads"], config["rope_theta"], config["rms_norm_eps"])
    # 1e-6, not float64's 1e-12: the stock rotary tables are computed in float32 (as LLaDA's own are).
    assert torch.allclose(loaded["llama"](ids)[0], expected, rtol=0, atol=1e-6)


def test_loaded_dream_computes_what_the_released_tensors_mean(loaded, dream_dir):
    config = json.loads((dream_dir[0] / "config.json").read_text())
    state = read_checkpoint(dream_dir[0])
    assert any(key.endswith("q_proj.bias") for key in state)  # Qwen2 layout: q/k/v carry biases
    ids = random_ids((1, 11), seed=6)
    rows = reference_logits(ids[0], dream_tensor(state), config["num_hidden_layers"], config["num_attention_heads"],
                            config["num_key_value_heads"], config["rope_theta"], config["rms_norm_eps"])
    logits = loaded["qwen2"](ids)[0]
    assert torch.allclose(logits[1:], rows[:-1], rtol=0, atol=1e-6)  # Dream predicts position p at row p - 1


def test_hub_id_loads_offline_from_the_hf_cache(llada_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    directory, source = llada_dir
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--tiny-fixtures--llada-format"
    shutil.copytree(directory, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = build_model("llada", path="tiny-fixtures/llada-format", device="cpu")
    assert torch.equal(model.hf.lm_head.weight, source.lm_head.weight)
    with pytest.raises(ConfigError, match="not in the local HF cache and the hub is unreachable"):
        build_model("llada", path="tiny-fixtures/not-cached")


# --- (b)-(e) behaviour of the loaded models -------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_attention_is_bidirectional(loaded, arch):
    model = loaded[arch]
    ids = random_ids((1, 10))
    changed = ids.clone()
    changed[0, -1] += 1
    before, after = model(ids)[0], model(changed)[0]
    # Every earlier position sees the change (a causal model would leave them all equal).
    assert all(not torch.allclose(before[p], after[p]) for p in range(1 + model.logit_shift, 9))


def test_dream_logits_are_shifted_and_llada_logits_are_not(loaded):
    dream = loaded["qwen2"]
    ids = random_ids((2, 10))
    rows, _ = dream.forward_rows(dream.embed(ids))
    logits = dream(ids)
    assert torch.equal(logits[:, 1:], rows[:, :-1])  # position p read at row p - 1
    assert torch.equal(logits[:, 0], rows[:, 0])
    assert torch.equal(dream.prediction_rows(torch.tensor([0, 1, 7])), torch.tensor([0, 0, 6]))
    llada = loaded["llama"]
    rows, _ = llada.forward_rows(llada.embed(ids))
    assert torch.equal(llada(ids), rows)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_live_rows_equal_full_forward_with_left_padding(loaded, arch):
    model = loaded[arch]
    assert model.dtype == torch.float64
    ids = random_ids((2, 16), seed=1)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    full, state = model.forward_rows(model.embed(ids), mask, capture=True)
    live = torch.tensor([[2, 9, 15], [6, 11, 16]])  # 16 == L pads the second row's live set
    index = live.clamp(max=15)
    out = model.live_forward(state, live, model.embed(ids.gather(1, index)))
    expected = full.gather(1, index[..., None].expand(-1, -1, full.shape[-1]))
    assert torch.allclose(out[0], expected[0], rtol=0, atol=1e-12)
    assert torch.allclose(out[1, :2], expected[1, :2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_live_copies_are_separate_graphs_of_the_live_rows(loaded, arch):
    """What BoE's leave-one-out relies on: each copy gives live_forward's logits, and a
    copy's output has gradient only through its own copy, the same gradient as one copy
    alone; the transformer's folded copies agree with the generic batch-entry default."""
    model = loaded[arch]
    ids = random_ids((2, 16), seed=3)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    _, state = model.forward_rows(model.embed(ids), mask, capture=True)
    live = torch.tensor([[3, 8, 12], [5, 14, 16]])
    embeds = model.embed(ids.gather(1, live.clamp(max=15))).detach()
    probe = torch.randn(2, 3, model.vocab_size, dtype=embeds.dtype, generator=torch.Generator().manual_seed(0))
    copies = embeds.expand(3, *embeds.shape).clone().requires_grad_(True)
    single = embeds.clone().requires_grad_(True)
    with torch.enable_grad():
        folded = model.live_forward_copies(state, live, copies)
        generic = Denoiser.live_forward_copies(model, state, live, copies)
        one = model.live_forward(state, live, single)
        (grad,) = torch.autograd.grad((folded[1] * probe).sum(), copies)
        (grad_one,) = torch.autograd.grad((one * probe).sum(), single)
    for c in range(3):
        assert torch.allclose(folded[c], one, rtol=0, atol=1e-12)
    assert torch.allclose(folded, generic, rtol=0, atol=1e-12)
    assert grad[0].abs().max() == 0 and grad[2].abs().max() == 0
    assert grad[1].abs().max() > 0
    assert torch.allclose(grad[1], grad_one, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_kept_values_stand_in_only_at_their_own_rows_and_inputs(loaded, arch, monkeypatch):
    """A state that kept the linear maps' outputs at some rows (``keep_rows``) gives a live
    pass over those rows, at the captured embeddings, the same logits and gradients as a
    plain state; a live row it did not keep, or other embeddings (a finite difference),
    make the pass compute its own, so it still sees its inputs."""
    model = loaded[arch]
    monkeypatch.setattr(model, "KEEP_BUDGET", 1e9)
    ids = random_ids((2, 16), seed=5)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    keep = torch.tensor([[2, 3, 8, 12, 13], [5, 9, 14, 15, 16]])
    _, plain = model.forward_with_state(ids, mask)
    _, kept = model.forward_with_state(ids, mask, keep_rows=keep)
    assert plain.kept is None and kept.kept is not None
    calls = []
    monkeypatch.setattr(transformer, "_kept_entries",
                        lambda *a, real=transformer._kept_entries: calls.append(real(*a)) or calls[-1])

    def pass_at(state, live, shift=0.0):
        embeds = (model.embed(ids.gather(1, live.clamp(max=15))) + shift).detach()
        copies = embeds.expand(2, *embeds.shape).clone().requires_grad_(True)
        with torch.enable_grad():
            out = model.live_forward_copies(state, live, copies)
            # As in BoE, padding entries (== L) weigh nothing: their outputs mean nothing.
            weights = torch.tensor([1.0, 0.5])[:, None, None] * (live < 16)
            (grad,) = torch.autograd.grad((entropy(out) * weights).sum(), copies)
        return out.detach(), grad

    for live, shift, used in ((torch.tensor([[3, 8, 12], [9, 14, 16]]), 0.0, True),
                              (torch.tensor([[3, 8, 12], [9, 14, 16]]), 1e-3, False),
                              (torch.tensor([[3, 7, 12], [9, 14, 16]]), 0.0, False)):
        calls.clear()
        (out_p, grad_p), (out_k, grad_k) = pass_at(plain, live, shift), pass_at(kept, live, shift)
        assert (calls[-1] is not None) == used
        valid = live < 16
        assert torch.allclose(out_k[:, valid], out_p[:, valid], rtol=0, atol=1e-12)
        assert grad_p.abs().max() > 0
        assert torch.allclose(grad_k[:, valid], grad_p[:, valid], rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("checkpoint", ["llada", "dream"])
def test_our_layer_loop_equals_the_stock_forward_under_a_bidirectional_mask(checkpoint, llada_dir, dream_dir):
    # float32: the stock RMSNorm computes in float32 whatever the model dtype.
    directory = (llada_dir if checkpoint == "llada" else dream_dir)[0]
    model = build_model(checkpoint, path=str(directory), device="cpu", dtype="float32")
    ids = random_ids((2, 12), seed=2)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    bias = padding_bias(mask.bool(), torch.float32)
    assert bias.shape == (2, 1, 1, 12)  # a full 4-D additive mask: every real key visible to every query
    stock = model.hf(input_ids=ids, attention_mask=bias.expand(-1, -1, 12, -1),
                     position_ids=positions_from_mask(mask)).logits
    ours, _ = model.forward_rows(model.embed(ids), mask)
    real = mask.bool()
    assert torch.allclose(ours[real], stock[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_padded_batch_gives_each_prompt_its_own_logits(loaded, arch):
    model = loaded[arch]
    long, short = random_ids((1, 12), seed=3), random_ids((1, 7), seed=4)
    batch = torch.full((2, 12), model.pad_id)
    batch[0], batch[1, 5:] = long[0], short[0]
    mask = (torch.arange(12) >= torch.tensor([[0], [5]])).long()
    out = model(batch, attention_mask=mask)
    assert torch.allclose(out[0], model(long)[0], rtol=0, atol=1e-10)
    # With a logit shift the first prompt position reads a padding row: it is never decoded.
    first = model.logit_shift
    assert torch.allclose(out[1, 5 + first:], model(short)[0, first:], rtol=0, atol=1e-10)


# --- (f) errors a user can fix ------------------------------------------------------------

def test_missing_local_path_is_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match=r"model path '.*nowhere' does not exist") as err:
        build_model("llada", path=str(tmp_path / "nowhere"))
    assert "\n" not in str(err.value)


def test_uncached_hub_id_offline_is_one_sentence():
    with pytest.raises(ConfigError, match="'no-such-org/no-such-model': not in the local HF cache") as err:
        build_model("dream", path="no-such-org/no-such-model")
    assert "model.path=/local/dir" in str(err.value) and "\n" not in str(err.value)


def test_directory_without_config_or_weights_is_rejected(tmp_path, llada_dir):
    with pytest.raises(ConfigError, match="has no config.json"):
        build_model("llada", path=str(tmp_path))
    shutil.copy(llada_dir[0] / "config.json", tmp_path / "config.json")
    with pytest.raises(ConfigError, match="has no .safetensors weights"):
        build_model("llada", path=str(tmp_path))


def test_checkpoint_missing_a_shard_or_a_key_is_rejected(tmp_path, llada_dir):
    directory = tmp_path / "copy"
    shutil.copytree(llada_dir[0], directory)
    shard = directory / "model-00002-of-00002.safetensors"
    state = load_file(str(shard))
    state.pop("model.transformer.blocks.1.ff_norm.weight")
    save_file(state, str(shard))
    with pytest.raises(ConfigError, match=r"missing \['model.layers.1.post_attention_layernorm.weight'\]"):
        build_model("llada", path=str(directory), device="cpu")
    shard.unlink()
    with pytest.raises(ConfigError, match="lacks the weight shards"):
        build_model("llada", path=str(directory), device="cpu")


def test_llada_config_with_features_llama_lacks_is_refused():
    with pytest.raises(ConfigError, match="alibi"):
        llama_config_from_llada(dict(LLADA_8B_CONFIG, alibi=True))
    with pytest.raises(ConfigError, match="weight_tying"):
        llama_config_from_llada(dict(LLADA_8B_CONFIG, weight_tying=True))
    with pytest.raises(ConfigError, match="lacks"):
        llama_config_from_llada({"model_type": "llada"})


@pytest.mark.parametrize("absent", [("embedding_size",), ("vocab_size",), ("embedding_size", "vocab_size")])
def test_llada_config_without_its_row_count_is_refused_in_one_sentence(absent):
    """Left unset, LLaDA's code builds 50304 embedding rows (its defaults), which no released
    checkpoint has: refused with one sentence (a ConfigError: exit 2), not a KeyError."""
    cfg = {k: v for k, v in LLADA_8B_CONFIG.items() if k not in absent}
    with pytest.raises(ConfigError) as err:
        llama_config_from_llada(cfg)
    assert "\n" not in str(err.value) and all(name in str(err.value) for name in absent)
    assert "126464" in str(err.value)


def test_llada_config_with_a_null_row_count_falls_back_as_the_reference_does():
    assert llama_config_from_llada(dict(LLADA_8B_CONFIG, embedding_size=None)).vocab_size == 126464
    assert llama_config_from_llada(dict(LLADA_8B_CONFIG, embedding_size=112, vocab_size=100)).vocab_size == 112
    with pytest.raises(ConfigError, match="no embedding row count"):
        llama_config_from_llada(dict(LLADA_8B_CONFIG, embedding_size=None, vocab_size=None))


def test_unknown_dtype_is_one_sentence(llada_dir):
    with pytest.raises(ConfigError, match="unknown dtype 'fp33'"):
        build_model("llada", path=str(llada_dir[0]), device="cpu", dtype="fp33")


# --- configs and the released checkpoints themselves ----------------------------------------

MODEL_CONFIGS = {
    "llada_8b_base": ("GSAI-ML/LLaDA-8B-Base", "llada"),
    "llada_8b_instruct": ("GSAI-ML/LLaDA-8B-Instruct", "llada"),
    "llada_1_5": ("GSAI-ML/LLaDA-1.5", "llada"),
    "dream_7b_base": ("Dream-org/Dream-v0-Base-7B", "dream"),
    "dream_7b_instruct": ("Dream-org/Dream-v0-Instruct-7B", "dream"),
}
RELEASED_IDS = {  # mask, EOS ids, and the mask token's text
    "llada": (126336, (126081, 126348), "<|mdm_mask|>"),
    "dream": (151666, (151643, 151645), "<|mask|>"),
}


@pytest.mark.parametrize("option", sorted(MODEL_CONFIGS))
def test_model_yaml_names_the_release_and_only_builder_arguments(option):
    import inspect
    from pathlib import Path

    from omegaconf import OmegaConf

    from boe_bench.models import MODELS

    cfg = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "configs" / "model" / f"{option}.yaml"))
    hub_id, registry_name = MODEL_CONFIGS[option]
    builder = MODELS.get(registry_name)
    assert cfg.pop("_target_") == f"{builder.__module__}.{builder.__name__}"
    assert cfg["path"] == hub_id and cfg["dtype"] is None and cfg["device"] is None
    inspect.signature(builder).bind(**cfg)


@pytest.mark.slow
@pytest.mark.parametrize("option", sorted(MODEL_CONFIGS))
def test_released_checkpoint_from_the_hf_cache(option):
    """The real weights, where the HF cache holds them: special ids and one fill-in."""
    hub_id, registry_name = MODEL_CONFIGS[option]
    try:
        model = build_model(registry_name, path=hub_id)
    except ConfigError as err:
        pytest.skip(f"{hub_id} is not available here: {err}")
    mask_id, eos_ids, mask_text = RELEASED_IDS[registry_name]
    assert (model.mask_id, model.eos_ids) == (mask_id, eos_ids)
    assert model.tokenizer.convert_ids_to_tokens(mask_id) == mask_text
    prompt = model.tokenizer("The capital of France is").input_ids
    ids = torch.tensor([prompt + [mask_id] * 4], device=model.device)
    with torch.no_grad():
        guess = model(ids)[0, len(prompt)].argmax().item()
    assert "Paris" in model.tokenizer.decode([guess])
