"""Dream-v0 7B (Base / Instruct) in the stock ``Qwen2ForCausalLM``: identical key names,
no sliding window, and logits shifted by one (position p is predicted at row p - 1).

Dream's tokenizer class (``DreamTokenizer``) exists only as remote code; it is Qwen2's
byte-level BPE over the same vocab.json / merges.txt with the same pre-tokenizer and NFC
normalisation, so the stock ``Qwen2Tokenizer`` reads the released files unchanged.
"""
from __future__ import annotations

from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer

from boe_bench.errors import ConfigError
from boe_bench.models import MODELS
from boe_bench.models.hub import end_of_text_ids, load_stock_model, load_tokenizer
from boe_bench.models.transformer import TransformerDenoiser

REQUIRED_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
OPTIONAL_FIELDS = ("num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "hidden_act",
                   "head_dim")


def qwen2_config_from_dream(cfg: dict) -> Qwen2Config:
    """The Qwen2Config computing what Dream's remote code computes for ``cfg`` (its config.json)."""
    absent = [name for name in REQUIRED_FIELDS if cfg.get(name) is None]
    if absent:
        raise ConfigError(f"Dream config.json lacks {absent}; is this a Dream checkpoint?")
    if cfg.get("tie_word_embeddings"):
        raise ConfigError("this Dream config ties input and output embeddings, which the loader does not map")
    fields = {name: cfg[name] for name in REQUIRED_FIELDS + OPTIONAL_FIELDS if cfg.get(name) is not None}
    if cfg.get("rope_scaling"):
        fields["rope_scaling"] = cfg["rope_scaling"]
    if "rope_parameters" in cfg:  # configs written by transformers >= 5 nest rope_theta here
        fields["rope_parameters"] = cfg["rope_parameters"]
    # Dream attends over the whole canvas in every layer: no sliding window anywhere.
    return Qwen2Config(**fields, tie_word_embeddings=False, use_sliding_window=False, sliding_window=None)


@MODELS.register("dream")
def build_dream(path: str = "Dream-org/Dream-v0-Base-7B", dtype: str | None = None, device: str | None = None,
                mask_id: int | None = None, eot_token: str | None = "<|im_end|>",
                padding: str = "isolated") -> TransformerDenoiser:
    """Dream from a hub id (``Dream-org/Dream-v0-Base-7B`` / ``-Instruct-7B``; offline from
    the HF cache) or a local directory in Dream's released layout. ``padding``: ``isolated``
    or ``reference`` (``Denoiser.padding``; Dream's reference numbers positions from the
    first real token, so only the samplers' tie rule changes)."""
    hf, raw, directory = load_stock_model(path, Qwen2ForCausalLM, qwen2_config_from_dream, lambda key: key, dtype, device)
    tokenizer = load_tokenizer(directory, stock_fallback=Qwen2Tokenizer)
    mask = mask_id if mask_id is not None else raw.get("mask_token_id", tokenizer.mask_token_id)
    if mask is None:
        raise ConfigError(f"no mask token id in {str(directory)!r}: set model.mask_id")
    eos_ids = end_of_text_ids(raw.get("eos_token_id"), tokenizer, eot_token)
    return TransformerDenoiser(hf, tokenizer, mask, eos_ids, logit_shift=1, name=f"dream:{path}", padding=padding)
