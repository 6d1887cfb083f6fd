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

from boe_bench.models.base import Denoiser, FrozenState, canvas_masks, padding_bias


def _rms_norm(norm, x: Tensor) -> Tensor:
    """The stock RMSNorm (statistics in float32, result in the input dtype), except that a
    float64 model keeps float64: the stock module would round it to float32, which makes
    finite-difference checks of gradients meaningless."""
    compute = torch.promote_types(x.dtype, torch.float32)
    h = x.to(compute)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


def _apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half rotary embedding x cos + rot(x) sin, computed in the dtype of ``cos`` (the
    model's, or float32 under ``rope_full_precision``) and returned in the dtype of ``x``."""
    h = x.to(cos.dtype)
    half = h.shape[-1] // 2
    rotated = torch.cat((-h[..., half:], h[..., :half]), dim=-1)
    return (h * cos + rotated * sin).to(x.dtype)


class TransformerDenoiser(Denoiser):
    """Wraps ``LlamaForCausalLM`` (LLaDA) or ``Qwen2ForCausalLM`` (Dream) weights.

    ``rope_full_precision``: rotate queries and keys in float32 (at least) and cast back to
    the model's dtype, as LLaDA's reference code does when its config sets
    ``rope_full_precision`` (the released checkpoints do). Off, the rotation runs in the
    model's dtype as in stock Llama/Qwen2 and in Dream's reference code. In float32 both
    are the same computation; in bf16 the rotation's rounding changes logits visibly (a
    different model from the reference's). The cos/sin tables are always computed in
    float32 and, off, rounded to the model's dtype before use (as the stock classes do).
    """

    def __init__(self, hf_model, tokenizer, mask_id: int, eos_ids=(), logit_shift: int = 0, name: str = "",
                 rope_full_precision: bool = False):
        super().__init__()
        self.rope_full_precision = bool(rope_full_precision)
        make_bidirectional(hf_model)
        rotary = hf_model.model.rotary_emb
        if rotary.inv_freq.dtype in (torch.bfloat16, torch.float16):
            # ``model.to(bfloat16)`` also rounds the stock module's inverse frequencies (up to
            # 2e-2 off in the tables); the reference codes compute them in float32.
            with torch.device(rotary.inv_freq.device):
                hf_model.model.rotary_emb = type(rotary)(hf_model.config)
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
        """cos, sin [B, 1, n, D] in the dtype the rotation runs in (see the class docstring).
        The stock rotary module computes in float32 and returns the dtype of its first
        argument, so it is handed an empty float32 tensor: it reads only device and dtype."""
        table = h.new_empty(0, dtype=torch.float32)
        cos, sin = self.hf.model.rotary_emb(table, positions)
        dtype = torch.promote_types(h.dtype, torch.float32) if self.rope_full_precision else h.dtype
        return cos[:, None].to(dtype), sin[:, None].to(dtype)

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

    def _attend_live(self, layer, q: Tensor, keys: Tensor, values: Tensor, frozen_bias: Tensor, k: Tensor,
                     v: Tensor, live_bias: Tensor) -> Tensor:
        """Live queries q [B, H, A, D] over two key sets at once, one softmax across both:
        the frozen keys/values [B, H_kv, L, D] (no gradient; ``frozen_bias`` hides padding and
        the live rows' own slots) and the live rows' fresh ones k, v [B, H_kv, A, D]
        (``live_bias`` hides padding entries). Written out rather than through SDPA: the
        frozen keys never get a gradient buffer, so the backward costs O(A L d) per layer and
        never touches an [L, d] tensor, which a fused kernel's backward zero-fills for dK/dV
        on every call (what dominated a few-row backward on the CPU). Scores and softmax in
        at least float32."""
        b, heads, a, d = q.shape
        groups = self.n_kv_heads
        compute = torch.promote_types(q.dtype, torch.float32)
        qg = q.reshape(b, groups, heads // groups * a, d)
        scale = d ** -0.5
        scores = torch.cat([(qg @ keys.transpose(-1, -2)).view(b, heads, a, -1).to(compute) * scale + frozen_bias,
                            (qg @ k.transpose(-1, -2)).view(b, heads, a, -1).to(compute) * scale + live_bias], dim=-1)
        probs = scores.softmax(-1).to(q.dtype)
        n = keys.shape[2]
        out = (probs[..., :n].reshape(b, groups, -1, n) @ values
               + probs[..., n:].reshape(b, groups, -1, k.shape[2]) @ v).view(b, heads, a, d)
        return layer.self_attn.o_proj(out.transpose(1, 2).reshape(b, a, -1))

    def _live_biases(self, key_mask: Tensor, live_rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(valid [B, A], frozen-key bias [B, 1, 1, L], live-key bias [B, 1, 1, A]) in float32;
        entries of ``live_rows`` that point past the canvas or at a masked slot are padding."""
        b, n = key_mask.shape
        slots = torch.cat([key_mask, key_mask.new_zeros(b, 1)], dim=1)
        valid = slots.gather(1, live_rows.clamp(max=n))
        live_slot = slots.new_zeros(b, n + 1).scatter_(1, live_rows.clamp(max=n), valid)[:, :n]
        compute = torch.float32
        return valid, padding_bias(key_mask & ~live_slot, compute), padding_bias(valid, compute)

    def live_forward(self, state: FrozenState, live_rows: Tensor, live_embeds: Tensor) -> Tensor:
        length = state.key_mask.shape[1]
        _, frozen_bias, live_bias = self._live_biases(state.key_mask, live_rows)
        positions = state.positions.gather(1, live_rows.clamp(max=length - 1))
        cos, sin = self._rotary(live_embeds, positions)
        h = live_embeds
        for layer, k_frozen, v_frozen in zip(self.hf.model.layers, state.keys, state.values):
            q, k, v = self._qkv(layer, _rms_norm(layer.input_layernorm, h), cos, sin)
            # The frozen slots of the live rows are hidden; their fresh keys/values stand in.
            # Attention written out sums in another order than SDPA: logits agree with the full
            # forward to rounding (tests: 1e-12 in float64), not bit for bit.
            h = h + self._attend_live(layer, q, k_frozen, v_frozen, frozen_bias, k, v, live_bias)
            h = h + layer.mlp(_rms_norm(layer.post_attention_layernorm, h))
        return self._head(h)

    # Above this many live rows per canvas row (1/fraction), live queries attend through the
    # fused kernel over one key tensor with the live keys scattered in (``forward_live``).
    DENSE_LIVE_FRACTION = 4

    def forward_live(self, ids, attention_mask, live_rows):
        """One pass over L rows (see ``Denoiser.forward_live``): each layer runs the frozen
        rows (every row not in ``live_rows``) without autograd and the live rows with it. The
        frozen queries attend over every row's keys/values, the live rows' included as plain
        values; the live queries over the frozen rows' keys/values and their own fresh ones
        (``_attend_live``), so gradient reaches a live row only through live queries. One
        spare masked slot (index L) takes padding entries."""
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
        _, frozen_bias, live_bias = self._live_biases(key_mask[:, :n], live_rows)
        dense_live = live_rows.shape[1] * self.DENSE_LIVE_FRACTION > n
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
                with torch.no_grad():
                    k_all, v_all = keys.scatter(2, slot_a, k), values.scatter(2, slot_a, v)
                    h_frozen = h_frozen + self._attend(layer, q_f, k_all, v_all, bias)
                    h_frozen = h_frozen + layer.mlp(_rms_norm(layer.post_attention_layernorm, h_frozen))
                if dense_live:  # many live rows: the fused kernel over one key tensor is faster
                    h = h + self._attend(layer, q, keys.scatter(2, slot_a, k), values.scatter(2, slot_a, v), bias)
                else:
                    h = h + self._attend_live(layer, q, keys[:, :, :n], values[:, :, :n], frozen_bias, k, v,
                                              live_bias)
                h = h + layer.mlp(_rms_norm(layer.post_attention_layernorm, h))
            live_logits = self._head(h)
        with torch.no_grad():
            frozen_logits = self._head(h_frozen)
            # Rows back in canvas order by whole-row copies (a scatter with an index expanded
            # over the vocabulary reads an index as large as the logits: 5% of a CPU step).
            vocab = frozen_logits.shape[-1]
            base = (torch.arange(b, device=ids.device) * (n + 1))[:, None]
            rows = frozen_logits.new_empty(b * (n + 1), vocab)
            rows.index_copy_(0, (frozen_rows + base).flatten(), frozen_logits.reshape(-1, vocab))
            rows.index_copy_(0, (live_rows + base).flatten(), live_logits.detach().reshape(-1, vocab))
            rows = rows.view(b, n + 1, vocab)
        return self.rows_to_positions(rows[:, :n]), live_logits, live_embeds


def make_bidirectional(hf_model) -> None:
    """Turn off causal masking everywhere transformers may look for it."""
    hf_model.config.is_causal = False
    if hasattr(hf_model.config, "use_sliding_window"):
        hf_model.config.use_sliding_window = False
    for module in hf_model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
