"""LLaDA-8B Base / Instruct and LLaDA-1.5 in the stock ``LlamaForCausalLM`` (design/models.md)."""
from __future__ import annotations

import re

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from boe_bench.models import MODELS
from boe_bench.models.hub import (default_device, default_dtype, load_tokenizer, load_weights, read_config,
                                  resolve_checkpoint)
from boe_bench.models.transformer import TransformerDenoiser

MASK_ID, EOS_ID, EOT_ID = 126336, 126081, 126348
KEY_MAP = {
    "model.transformer.wte.weight": "model.embed_tokens.weight",
    "model.transformer.ln_f.weight": "model.norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",
}
BLOCK_KEY_MAP = {
    "attn_norm": "input_layernorm",
    "attn_out": "self_attn.o_proj",
    "ff_norm": "post_attention_layernorm",
    "ff_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
}
BLOCK_KEY = re.compile(r"model\.transformer\.blocks\.(\d+)\.(\w+)\.weight")


def llada_key_to_llama(key: str) -> str:
    if key in KEY_MAP:
        return KEY_MAP[key]
    match = BLOCK_KEY.fullmatch(key)
    if match and match.group(2) in BLOCK_KEY_MAP:
        return f"model.layers.{match.group(1)}.{BLOCK_KEY_MAP[match.group(2)]}.weight"
    return key  # left unmapped: the loader reports it as unexpected


def llama_config_from_llada(cfg: dict) -> LlamaConfig:
    if cfg.get("weight_tying") or cfg.get("include_bias") or cfg.get("include_qkv_bias"):
        raise ValueError("this LLaDA config uses weight tying or biases, which the Llama mapping does not cover")
    return LlamaConfig(
        vocab_size=cfg.get("embedding_size") or cfg["vocab_size"],
        hidden_size=cfg["d_model"],
        intermediate_size=cfg["mlp_hidden_size"],
        num_hidden_layers=cfg["n_layers"],
        num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg.get("n_kv_heads") or cfg["n_heads"],
        max_position_embeddings=cfg.get("max_sequence_length", 4096),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        rope_theta=cfg.get("rope_theta", 500000.0),
        tie_word_embeddings=False,
        attention_bias=False,
    )


@MODELS.register("llada")
def build_llada(path: str = "GSAI-ML/LLaDA-8B-Base", dtype: str | None = None, device: str | None = None,
                eot_token: str = "<|eot_id|>") -> TransformerDenoiser:
    directory = resolve_checkpoint(path)
    raw = read_config(directory)
    config = llama_config_from_llada(raw)
    config._attn_implementation = "sdpa"
    device = default_device(device)
    with torch.device("meta"):
        hf = LlamaForCausalLM(config)
    load_weights(hf, directory, llada_key_to_llama, device, default_dtype(dtype, device))
    tokenizer = load_tokenizer(directory)
    eot = tokenizer.convert_tokens_to_ids(eot_token)
    eos_ids = [raw.get("eos_token_id", EOS_ID)] + ([eot] if isinstance(eot, int) and eot != tokenizer.unk_token_id else [])
    return TransformerDenoiser(hf, tokenizer, raw.get("mask_token_id", MASK_ID), eos_ids, logit_shift=0,
                               name=f"llada:{path}")
