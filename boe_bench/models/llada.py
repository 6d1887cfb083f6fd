"""LLaDA-8B Base / Instruct and LLaDA-1.5 in the stock ``LlamaForCausalLM`` (design/models.md).

LLaDA ships an OLMo-style remote ``modeling_llada.py``; its ``block_type: llama`` block is a
Llama layer under other names (SwiGLU with ``ff_proj`` as the gate, RMSNorm, rotary
embeddings in the rotate-half layout), so renaming keys is all the conversion there is.
Config features that would make it something else are refused rather than ignored, and so
is a config that leaves such a feature to LLaDA's defaults: those are OLMo's GPT-2-like
defaults (``block_type: sequential``, ``layer_norm_type: default``, no rotary, tied
embeddings, ``rope_theta`` 10000), not the released model's.

``rope_full_precision`` (true in the released configs and by default) rotates queries and
keys in float32 and casts back, as the reference does; in bf16 that is a different
computation from stock Llama's (see ``TransformerDenoiser``).
"""
from __future__ import annotations

import re

from transformers import LlamaConfig, LlamaForCausalLM

from boe_bench.errors import ConfigError
from boe_bench.models import MODELS
from boe_bench.models.hub import end_of_text_ids, load_stock_model, load_tokenizer
from boe_bench.models.transformer import TransformerDenoiser

# Fallbacks when a config omits them; the released configs carry both. LLaDA's config
# default (50256) is not used: the reference forward never reads these ids, and its
# generate.py hard-codes mask 126336. The EoT id (126348) comes from the tokenizer's "<|eot_id|>".
MASK_ID, EOS_ID = 126336, 126081
TOKEN_FREQ_FILE = "token_freq.json"

KEY_MAP = {
    "model.transformer.wte.weight": "model.embed_tokens.weight",
    "model.transformer.ln_f.weight": "model.norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",
}
BLOCK_KEY_MAP = {
    "attn_norm": "input_layernorm",
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ff_norm": "post_attention_layernorm",
    "ff_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
}
BLOCK_KEY = re.compile(r"model\.transformer\.blocks\.(\d+)\.(\w+)\.weight")

REQUIRED_FIELDS = ("d_model", "n_heads", "n_layers")
# Fields whose LLaDA default (configuration_llada.ModelConfig) differs from the released
# checkpoints' value and changes what the model computes: field -> (LLaDA default, released).
# A config without them would be read by the reference as a different model, so it is
# refused. (max_sequence_length's default also differs, but only sizes a cache there.)
DEFAULTS_THAT_DIFFER = {
    "block_type": ("sequential", "llama"),
    "activation_type": ("swiglu", "silu"),
    "layer_norm_type": ("default", "rms"),
    "rope": (False, True),
    "weight_tying": (True, False),
    "rope_theta": (10000.0, 500000.0),
    # The reference builds wte / ff_out with ``embedding_size or vocab_size`` rows: left to
    # the defaults that is 50304, which no released checkpoint has.
    "vocab_size": (50257, 126464),
    "embedding_size": (50304, 126464),
}
# Field -> the only value (or values) the Llama mapping reproduces. Absent fields not in
# DEFAULTS_THAT_DIFFER take LLaDA defaults equal to the released values.
SUPPORTED_VALUES = {
    "block_type": ("llama",),
    "activation_type": ("silu",),
    "layer_norm_type": ("rms",),
    "layer_norm_with_affine": (True,),
    "bias_for_layer_norm": (False, None),
    "rope": (True,),
    "alibi": (False,),
    "weight_tying": (False,),
    "include_bias": (False,),
    "include_qkv_bias": (False,),
    "attention_layer_norm": (False,),
    "input_emb_norm": (False,),
    "scale_logits": (False,),
    "clip_qkv": (None,),
    "block_group_size": (1,),
}


def llada_key_to_llama(key: str) -> str:
    if key in KEY_MAP:
        return KEY_MAP[key]
    match = BLOCK_KEY.fullmatch(key)
    if match and match.group(2) in BLOCK_KEY_MAP:
        return f"model.layers.{match.group(1)}.{BLOCK_KEY_MAP[match.group(2)]}.weight"
    return key  # left unmapped: the loader reports it as unexpected


def llama_config_from_llada(cfg: dict) -> LlamaConfig:
    """The LlamaConfig computing what LLaDA's remote code computes for ``cfg`` (its config.json)."""
    absent = [name for name in REQUIRED_FIELDS if cfg.get(name) is None]
    if absent:
        raise ConfigError(f"LLaDA config.json lacks {absent}; is this a LLaDA checkpoint?")
    unset = {name: default for name, (default, _) in DEFAULTS_THAT_DIFFER.items() if name not in cfg}
    if unset:
        released = {name: DEFAULTS_THAT_DIFFER[name][1] for name in unset}
        raise ConfigError(f"LLaDA config.json does not set {sorted(unset)}, so LLaDA's code would use its "
                          f"defaults {unset}, which describe a different model from the released "
                          f"checkpoints ({released}); set them explicitly")
    unsupported = {name: cfg[name] for name, allowed in SUPPORTED_VALUES.items()
                   if name in cfg and cfg[name] not in allowed}
    if unsupported:
        raise ConfigError(f"LLaDA config sets {unsupported}, which the stock Llama mapping does not reproduce")
    # embedding_size is the padded row count of wte / ff_out (vocab_size may be smaller); set
    # to null, the reference falls back to vocab_size.
    rows = cfg.get("embedding_size") or cfg.get("vocab_size")
    if not isinstance(rows, int) or isinstance(rows, bool) or rows <= 0:
        raise ConfigError(f"LLaDA config.json gives no embedding row count (embedding_size "
                          f"{cfg.get('embedding_size')!r}, vocab_size {cfg.get('vocab_size')!r}); "
                          f"set embedding_size to the checkpoint's (126464 in the releases)")
    return LlamaConfig(
        vocab_size=rows,
        hidden_size=cfg["d_model"],
        # The llama block keeps gate and up separate, so the full hidden size is each one's width.
        intermediate_size=cfg.get("mlp_hidden_size") or cfg.get("mlp_ratio", 4) * cfg["d_model"],
        num_hidden_layers=cfg["n_layers"],
        num_attention_heads=cfg["n_heads"],
        num_key_value_heads=1 if cfg.get("multi_query_attention") else cfg.get("n_kv_heads") or cfg["n_heads"],
        max_position_embeddings=cfg.get("max_sequence_length", 4096),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        rope_theta=cfg["rope_theta"],
        hidden_act="silu",
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )


@MODELS.register("llada")
def build_llada(path: str = "GSAI-ML/LLaDA-8B-Base", dtype: str | None = None, device: str | None = None,
                eot_token: str = "<|eot_id|>", padding: str = "isolated") -> TransformerDenoiser:
    """LLaDA from a hub id (``GSAI-ML/LLaDA-8B-Base``, ``-Instruct``, ``LLaDA-1.5``; offline
    from the HF cache) or a local directory in LLaDA's released layout. ``padding``:
    ``isolated`` or ``reference`` (``Denoiser.padding``; LLaDA's reference gives pads rotary
    positions)."""
    hf, raw, directory = load_stock_model(path, LlamaForCausalLM, llama_config_from_llada, llada_key_to_llama, dtype, device)
    tokenizer = load_tokenizer(directory)
    eos_ids = end_of_text_ids(raw.get("eos_token_id", EOS_ID), tokenizer, eot_token)
    model = TransformerDenoiser(hf, tokenizer, raw.get("mask_token_id", MASK_ID), eos_ids, logit_shift=0,
                                name=f"llada:{path}", rope_full_precision=raw.get("rope_full_precision", True),
                                padding=padding, pads_take_positions=True)
    model.token_freq_table = shipped_token_freq(directory)
    return model


def shipped_token_freq(directory) -> str | None:
    """A checkpoint directory may carry PC-Sampler's background table for its own tokenizer
    (``token_freq.json``, as our trained text model does); PC-Sampler then uses it by default."""
    table = directory / TOKEN_FREQ_FILE
    return str(table) if table.is_file() else None
