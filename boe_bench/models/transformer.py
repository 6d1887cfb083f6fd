"""Denoiser over a stock transformers Llama / Qwen2 model run bidirectionally.

The layer loop is written out here (nanoGPT-style) instead of calling the HF forward, so
that the full forward and the live-row recompute are the same code and agree bit for bit;
a test checks that this loop equals the stock class's own forward under a bidirectional
4-D mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from boe_bench.models.base import Denoiser, FrozenState, canvas_masks, frozen_with_padding_slot, padding_bias


def _rms_norm(norm, x: Tensor) -> Tensor:
    """The stock RMSNorm (statistics in float32, result in the input dtype), except that a
    float64 model keeps float64: the stock module would round it to float32, which makes
    finite-difference checks of gradients meaningless."""
    compute = torch.promote_types(x.dtype, torch.float32)
    h = x.to(compute)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


def _apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class TransformerDenoiser(Denoiser):
    """Wraps ``LlamaForCausalLM`` (LLaDA) or ``Qwen2ForCausalLM`` (Dream) weights."""

    def __init__(self, hf_model, tokenizer, mask_id: int, eos_ids=(), logit_shift: int = 0, name: str = ""):
        super().__init__()
        make_bidirectional(hf_model)
        # Inference only: BoE differentiates w.r.t. inputs, never weights, so keep no weight graph.
        hf_model.requires_grad_(False)
        self.hf = hf_model
        self.tokenizer = tokenizer
        self.mask_id = int(mask_id)
        self.eos_ids = tuple(int(i) for i in eos_ids)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else self.eos_ids[0] if self.eos_ids else 0
        self.vocab_size = hf_model.config.vocab_size
        self.logit_shift = logit_shift
        self.name = name
        cfg = hf_model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    @property
    def embedding_matrix(self) -> Tensor:
        return self.hf.model.embed_tokens.weight


    def _qkv(self, layer, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        attn = layer.self_attn
        q = attn.q_proj(x).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin), v

    def _attend(self, layer, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, enable_gqa=self.n_kv_heads != self.n_heads
        )
        b, _, n, _ = q.shape
        return layer.self_attn.o_proj(out.transpose(1, 2).reshape(b, n, -1))

    def _rotary(self, h: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        cos, sin = self.hf.model.rotary_emb(h, positions)
        return cos[:, None].to(h.dtype), sin[:, None].to(h.dtype)

    def _head(self, h: Tensor) -> Tensor:
        return self.hf.lm_head(_rms_norm(self.hf.model.norm, h))

    def forward_rows(self, embeds, attention_mask=None, time=None, capture=False, ids=None):
        b, n, _ = embeds.shape
        key_mask, positions, bias = canvas_masks(embeds, attention_mask)
        cos, sin = self._rotary(embeds, positions)
        keys, values = [], []
        h = embeds
        for layer in self.hf.model.layers:
            q, k, v = self._qkv(layer, _rms_norm(layer.input_layernorm, h), cos, sin)
            if capture:
                keys.append(k.detach())
                values.append(v.detach())
            h = h + self._attend(layer, q, k, v, bias)
            h = h + layer.mlp(_rms_norm(layer.post_attention_layernorm, h))
        state = FrozenState(keys, values, positions, key_mask) if capture else None
        return self._head(h), state

    def live_forward(self, state: FrozenState, live_rows: Tensor, live_embeds: Tensor) -> Tensor:
        length = state.key_mask.shape[1]
        key_mask, keys, values = frozen_with_padding_slot(state, live_rows)
        positions = state.positions.gather(1, live_rows.clamp(max=length - 1))
        bias = padding_bias(key_mask, live_embeds.dtype)
        cos, sin = self._rotary(live_embeds, positions)
        slot = live_rows[:, None, :, None].expand(-1, self.n_kv_heads, -1, self.head_dim)
        h = live_embeds
        for layer, k_frozen, v_frozen in zip(self.hf.model.layers, keys, values):
            q, k, v = self._qkv(layer, _rms_norm(layer.input_layernorm, h), cos, sin)
            # Writing the fresh keys/values back into their own slots (not appending them)
            # keeps the summation order of the full forward, hence bit-equal logits.
            k_all = k_frozen.scatter(2, slot, k)
            v_all = v_frozen.scatter(2, slot, v)
            h = h + self._attend(layer, q, k_all, v_all, bias)
            h = h + layer.mlp(_rms_norm(layer.post_attention_layernorm, h))
        return self._head(h)

    def forward_live(self, ids, attention_mask, live_rows):
        """One pass over L rows (see ``Denoiser.forward_live``): each layer runs the frozen
        rows (every row not in ``live_rows``) without autograd and the live rows with it;
        both attend over one key/value tensor whose live slots carry gradient and which the
        frozen queries read detached. One spare masked slot (index L) takes padding entries."""
        b, n = ids.shape
        embeds = self.embed(ids).detach()
        key_mask, positions, _ = canvas_masks(embeds, attention_mask)
        key_mask = torch.cat([key_mask, key_mask.new_zeros(b, 1)], dim=1)
        positions = torch.cat([positions, positions[:, -1:]], dim=1)
        bias = padding_bias(key_mask, embeds.dtype)
        embeds = torch.cat([embeds, embeds.new_zeros(b, 1, embeds.shape[-1])], dim=1)
        live = torch.zeros(b, n + 1, dtype=torch.bool, device=ids.device).scatter_(1, live_rows, True)[:, :n]
        width = max(1, int((~live).sum(-1).max()))
        index = torch.arange(n, device=ids.device).expand(b, n)
        frozen_rows = torch.where(live, n, index).sort(-1).values[:, :width]
        pick = lambda t, rows: t.gather(1, rows[..., None].expand(-1, -1, t.shape[-1]))  # noqa: E731
        slot = lambda rows: rows[:, None, :, None].expand(-1, self.n_kv_heads, -1, self.head_dim)  # noqa: E731
        cos_f, sin_f = self._rotary(embeds, positions.gather(1, frozen_rows))
        cos_a, sin_a = self._rotary(embeds, positions.gather(1, live_rows))
        slot_f, slot_a = slot(frozen_rows), slot(live_rows)
        h_frozen = pick(embeds, frozen_rows)
        live_embeds = pick(embeds, live_rows).requires_grad_(True)
        h = live_embeds
        with torch.enable_grad():
            for layer in self.hf.model.layers:
                with torch.no_grad():
                    q_f, k_f, v_f = self._qkv(layer, _rms_norm(layer.input_layernorm, h_frozen), cos_f, sin_f)
                    keys = k_f.new_zeros(b, self.n_kv_heads, n + 1, self.head_dim).scatter_(2, slot_f, k_f)
                    values = torch.zeros_like(keys).scatter_(2, slot_f, v_f)
                q, k, v = self._qkv(layer, _rms_norm(layer.input_layernorm, h), cos_a, sin_a)
                k_all, v_all = keys.scatter(2, slot_a, k), values.scatter(2, slot_a, v)
                with torch.no_grad():
                    h_frozen = h_frozen + self._attend(layer, q_f, k_all.detach(), v_all.detach(), bias)
                    h_frozen = h_frozen + layer.mlp(_rms_norm(layer.post_attention_layernorm, h_frozen))
                h = h + self._attend(layer, q, k_all, v_all, bias)
                h = h + layer.mlp(_rms_norm(layer.post_attention_layernorm, h))
            live_logits = self._head(h)
        with torch.no_grad():
            frozen_logits = self._head(h_frozen)
            rows = frozen_logits.new_empty(b, n + 1, frozen_logits.shape[-1])
            rows.scatter_(1, frozen_rows[..., None].expand_as(frozen_logits), frozen_logits)
            rows.scatter_(1, live_rows[..., None].expand_as(live_logits), live_logits.detach())
        return self.rows_to_positions(rows[:, :n]), live_logits, live_embeds


def make_bidirectional(hf_model) -> None:
    """Turn off causal masking everywhere transformers may look for it."""
    hf_model.config.is_causal = False
    if hasattr(hf_model.config, "use_sliding_window"):
        hf_model.config.use_sliding_window = False
    for module in hf_model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
