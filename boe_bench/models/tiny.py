"""Tiny random-initialised models of the paper's architectures, built in-process.

They exist so the whole harness runs on a CPU without downloads. Their outputs mean
nothing: they show the code runs and let tests compare implementations, never quality.
"""
from __future__ import annotations

import string

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from boe_bench.models import MODELS
from boe_bench.models.transformer import TransformerDenoiser

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|eot|>", "<|mask|>", "<|system|>", "<|user|>", "<|assistant|>"]
UNKNOWN = "<|unk|>"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eot|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character plus the special tokens an MDM needs."""
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    # The unknown token goes last so that ids of the other tokens stay put.
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + chars + [UNKNOWN])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        mask_token="<|mask|>",
        unk_token=UNKNOWN,
        additional_special_tokens=SPECIAL_TOKENS[3:4] + SPECIAL_TOKENS[5:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(arch: str = "llama", n_layers: int = 2, d_model: int = 64, n_heads: int = 4,
                n_kv_heads: int | None = None, vocab_size: int = 128):
    common = dict(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=4 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads or n_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    if arch == "llama":
        return LlamaConfig(**common, rope_theta=500000.0)
    if arch == "qwen2":
        return Qwen2Config(**common, rope_theta=1000000.0, use_sliding_window=False)
    raise ValueError(f"unknown tiny architecture {arch!r}; use 'llama' (LLaDA) or 'qwen2' (Dream)")


@MODELS.register("tiny")
def build_tiny(arch: str = "llama", n_layers: int = 2, d_model: int = 64, n_heads: int = 4,
               n_kv_heads: int | None = None, seed: int = 0, dtype: str | torch.dtype = "float32",
               device: str = "cpu", rope_full_precision: bool | None = None,
               padding: str = "isolated") -> TransformerDenoiser:
    """A random LLaDA-shaped (``llama``) or Dream-shaped (``qwen2``, logit shift 1) model.

    ``rope_full_precision`` defaults to what the architecture's reference does: float32
    rotary for LLaDA (its released config), the model's dtype for Dream. ``padding`` as the
    architecture's (``Denoiser.padding``): under ``reference`` LLaDA-shaped models give pads
    rotary positions."""
    tokenizer = build_char_tokenizer()
    config = tiny_config(arch, n_layers, d_model, n_heads, n_kv_heads, vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    # attn_implementation="sdpa": the stock forward is only used by tests, as a cross-check.
    config._attn_implementation = "sdpa"
    hf_cls = LlamaForCausalLM if arch == "llama" else Qwen2ForCausalLM
    hf = hf_cls(config)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    hf.to(device=device, dtype=dtype).eval()
    eos = (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|eot|>"))
    if rope_full_precision is None:
        rope_full_precision = arch == "llama"
    return TransformerDenoiser(hf, tokenizer, tokenizer.mask_token_id, eos,
                               logit_shift=1 if arch == "qwen2" else 0, name=f"tiny-{arch}",
                               rope_full_precision=rope_full_precision, padding=padding,
                               pads_take_positions=arch == "llama")
