"""Dream-v0 7B (Base / Instruct) in the stock ``Qwen2ForCausalLM``: identical key names,
no sliding window, and logits shifted by one (position p is predicted at row p - 1)."""
from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from boe_bench.models import MODELS
from boe_bench.models.hub import (default_device, default_dtype, load_tokenizer, load_weights, read_config,
                                  resolve_checkpoint)
from boe_bench.models.transformer import TransformerDenoiser

QWEN2_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings")


@MODELS.register("dream")
def build_dream(path: str = "Dream-org/Dream-v0-Base-7B", dtype: str | None = None, device: str | None = None,
                mask_id: int | None = None) -> TransformerDenoiser:
    directory = resolve_checkpoint(path)
    raw = read_config(directory)
    fields = {k: raw[k] for k in QWEN2_FIELDS if k in raw}
    if "rope_parameters" in raw:  # configs written by transformers >= 5 nest rope_theta here
        fields["rope_parameters"] = raw["rope_parameters"]
    config = Qwen2Config(**fields, use_sliding_window=False)
    config._attn_implementation = "sdpa"
    device = default_device(device)
    with torch.device("meta"):
        hf = Qwen2ForCausalLM(config)
    load_weights(hf, directory, lambda key: key, device, default_dtype(dtype, device))
    tokenizer = load_tokenizer(directory)
    mask = mask_id if mask_id is not None else raw.get("mask_token_id", tokenizer.mask_token_id)
    eos = raw.get("eos_token_id", tokenizer.eos_token_id)
    return TransformerDenoiser(hf, tokenizer, mask, [eos], logit_shift=1, name=f"dream:{path}")
