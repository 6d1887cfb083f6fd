"""Denoiser over a stock transformers Llama / Qwen2 model run bidirectionally.

The layer loop is written out here (nanoGPT-style) instead of calling the HF forward, so
that the full forward and the live-row recompute are the same code and agree bit for bit;
a test checks that this loop equals the stock class's own forward under a bidirectional
4-D mask.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, cached_property, partial

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend

from boe_bench.models.base import Denoiser, FrozenState, canvas_masks, checked_padding, padding_bias


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
    # split, not two slices: the same values, and a slice's backward zero-fills a gradient of
    # h's size (this runs with autograd over the live rows).
    first, second = h.split(h.shape[-1] // 2, dim=-1)
    rotated = torch.cat((-second, first), dim=-1)
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

    ``padding`` (``Denoiser.padding``): under ``reference``, ``pads_take_positions`` says
    whether the architecture's reference code gives left padding rotary positions (LLaDA's
    does: 0..L-1 over the whole canvas; Dream's numbers from the first real token, as
    ``isolated`` does, so there only the samplers' tie rule changes).
    """

    def __init__(self, hf_model, tokenizer, mask_id: int, eos_ids=(), logit_shift: int = 0, name: str = "",
                 rope_full_precision: bool = False, padding: str = "isolated", pads_take_positions: bool = False):
        super().__init__()
        self.padding = checked_padding(padding)
        self.pads_take_positions = padding == "reference" and pads_take_positions
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


    def _heads(self, q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Projections [B, n, H*D] -> rotated queries and keys, values [B, H(_kv), n, D]."""
        b, n, _ = q.shape
        q = q.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin), v

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        """The fused attention kernel, heads merged [B, n, H*D] (before ``o_proj``)."""
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=self.n_kv_heads != self.n_heads)
        return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)

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

    def forward_rows(self, embeds, attention_mask=None, time=None, capture=False, ids=None, keep_rows=None):
        """``keep_rows`` (with ``capture``, see ``forward_with_state``): the state also keeps
        the block's linear-map outputs, the row logits and the input embeddings at those rows
        (``KeptRows``)."""
        b, n, _ = embeds.shape
        key_mask, positions, bias = canvas_masks(embeds, attention_mask, self.pads_take_positions)
        cos, sin = self._rotary(embeds, positions)
        take = None if keep_rows is None else _flat_rows(keep_rows.clamp(max=n - 1), n)
        keys, values, taken = [], [], []
        h = embeds
        for layer in self.hf.model.layers:
            h, k, v, given = self._layer(layer, h, cos, sin, bias, take)
            taken.append(given)
            if capture:
                keys.append(k.detach())
                values.append(v.detach())
        logits = self._head(h)
        state = FrozenState(keys, values, positions, key_mask) if capture else None
        if capture and take is not None:
            state.kept = KeptRows(keep_rows, _rows(embeds, take).detach(), taken, _rows(logits, take).detach())
        return logits, state

    # Keep values at T rows only while they hold no more numbers than KEEP_BUDGET times the
    # logits the forward returns anyway (T (sum over blocks of the seven maps' widths + V) <=
    # KEEP_BUDGET L V): on ``cpu-bench`` T <= 0.24 L, so a block of 32 candidates is kept from
    # L = 136; on LLaDA-8B T <= 0.08 L. Keeping pays wherever the live pass then runs: it skips
    # that pass's linear maps and lets the hand-written backward (``_LiveLayer``) take the
    # blocks. Kept only from L = 512 (the earlier rule), a ``candidates`` step on ``cpu-bench``
    # read 1.51x / 1.64x Confidence at L = 384 / 256; kept, 1.40x / 1.45x (accounted 1.35 / 1.53).
    KEEP_BUDGET = 1.0

    @cached_property
    def _kept_width(self) -> int:
        """Numbers ``KeptRows`` holds per kept row: every block's seven linear outputs and the
        logits (fixed by the architecture, so computed once, not on every step's forward)."""
        return self.hf.lm_head.out_features + sum(linear.out_features for layer in self.hf.model.layers
                                                  for linear in block_maps(layer))

    def forward_with_state(self, ids, attention_mask=None, time=None, keep_rows=None):
        """As ``Denoiser.forward_with_state``; at ``keep_rows`` it keeps what a live pass at the
        same inputs would compute again with its linear maps (``KeptRows``), when that is small
        beside the logits (``KEEP_BUDGET``)."""
        if keep_rows is None or keep_rows.shape[1] * self._kept_width > \
                self.KEEP_BUDGET * ids.shape[1] * self.hf.lm_head.out_features:
            return super().forward_with_state(ids, attention_mask, time)
        with torch.no_grad():
            rows, state = self.forward_rows(self.embed(ids), attention_mask, time, capture=True, keep_rows=keep_rows)
        return self.rows_to_positions(rows), state

    def _layer(self, layer, h: Tensor, cos: Tensor, sin: Tensor, bias: Tensor, take: Tensor | None = None,
               keep_attention: bool = False) -> tuple[Tensor, Tensor, Tensor, dict | None]:
        """One block over every row of the canvas: (output, its keys, its values, taken). The
        full forward and ``forward_live``'s frozen pass both run this, so they agree bit for
        bit. ``take`` (flat row indices [B*A], see ``_rows``) also returns the outputs of the
        block's seven linear maps at those rows (``taken``), the values ``forward_live``'s
        live-row graph is given instead of computing them again. ``keep_attention`` (only
        where ``_fused_keeps_lse``) runs the very kernel SDPA picks, CPU flash attention,
        itself, and also keeps, at those rows, its output before ``o_proj`` ("attn") and the
        log-sum-exp of each query's scores ("lse" [B, A, H]): what the kernel's backward
        needs in place of the probabilities."""
        attn, mlp = layer.self_attn, layer.mlp
        x = _rms_norm(layer.input_layernorm, h)
        raw = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        q, k, v = self._heads(*raw, cos, sin)
        if keep_attention:
            heads, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False,
                                                                                   attn_mask=bias)
            heads = heads.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)
        else:
            heads = self._attend(q, k, v, bias)
        o = attn.o_proj(heads)
        h = h + o
        x = _rms_norm(layer.post_attention_layernorm, h)
        gate, up = mlp.gate_proj(x), mlp.up_proj(x)
        down = mlp.down_proj(mlp.act_fn(gate) * up)
        taken = None if take is None else {name: _rows(t, take) for name, t in
                                           zip(("q", "k", "v", "o", "gate", "up", "down"), (*raw, o, gate, up, down))}
        if keep_attention and take is not None:
            taken["attn"], taken["lse"] = _rows(heads, take), _rows(lse.transpose(1, 2), take)
        return h + down, k, v, taken

    def _fused_keeps_lse(self, h: Tensor, bias: Tensor) -> bool:
        """Whether SDPA runs CPU flash attention on these inputs, whose log-sum-exp
        ``_layer(keep_attention=True)`` can keep (the only fused kernel whose backward
        ``_attend_fused_backward`` calls)."""
        if h.device.type != "cpu":
            return False
        b, n, _ = h.shape
        q = h.new_empty(b, self.n_heads, n, self.head_dim)
        kv = h.new_empty(b, self.n_kv_heads, n, self.head_dim)
        choice = torch._fused_sdp_choice(q, kv, kv, attn_mask=bias, enable_gqa=self.n_kv_heads != self.n_heads)
        return choice == SDPBackend.FLASH_ATTENTION.value

    def _live_probs(self, q: Tensor, keys: Tensor, frozen_bias: Tensor, k: Tensor, live_bias: Tensor,
                    copies: int) -> Tensor:
        """Attention probabilities [B, H, C*A, L + A] (in at least float32) of live queries q
        [B, H, C*A, D] over two key sets at once, one softmax across both: the frozen keys
        [B, H_kv, L, D] (``frozen_bias`` hides padding and the live rows' own slots) and the
        live rows' fresh keys k [B, H_kv, C*A, D] (``live_bias`` [B, 1, 1, A] hides padding
        entries), where each of the C ``copies`` of the A live rows sees only its own copy's
        fresh keys. Every copy's queries meet the frozen keys in one matmul, without copying
        them; without autograd, each part is scaled, biased and written into its slice of one
        buffer (no concatenation pass over the scores)."""
        b, heads, rows, d = q.shape
        groups, a, n = self.n_kv_heads, rows // copies, keys.shape[2]
        scale = d ** -0.5
        qg = q.reshape(b, groups, heads // groups * rows, d)
        q_copies = q.reshape(b, groups, heads // groups, copies, a, d)
        k_copies = k.reshape(b, groups, 1, copies, a, d)
        parts = ((frozen_bias, (qg @ keys.transpose(-1, -2)).view(b, heads, rows, n)),
                 (live_bias, (q_copies @ k_copies.transpose(-1, -2)).view(b, heads, rows, a)))
        if torch.is_grad_enabled() or torch.compiler.is_compiling():  # out= is neither differentiable nor traced
            scores = torch.cat([torch.add(bias, part, alpha=scale) for bias, part in parts], dim=-1)
        else:
            scores = torch.empty(b, heads, rows, n + a, dtype=torch.promote_types(q.dtype, torch.float32),
                                 device=q.device)
            for (bias, part), out in zip(parts, scores.split([n, a], dim=-1)):
                torch.add(bias, part, alpha=scale, out=out)
        return scores.softmax(-1)

    def _attend_live(self, q: Tensor, keys: Tensor, values: Tensor, frozen_bias: Tensor, k: Tensor,
                     v: Tensor, live_bias: Tensor, copies: int = 1) -> Tensor:
        """Live queries' attention (``_live_probs``) over the frozen values [B, H_kv, L, D] and
        the fresh ones v [B, H_kv, C*A, D], heads merged [B, C*A, H*D] (before ``o_proj``).
        Written out rather than through SDPA: the frozen keys never get a gradient buffer, so
        the backward costs O(C A L d) per layer and never touches an [L, d] tensor, which a
        fused kernel's backward zero-fills for dK/dV on every call. Products in the model's
        dtype, as the fused kernel's."""
        b, heads, rows, d = q.shape
        groups, a, n = self.n_kv_heads, rows // copies, keys.shape[2]
        probs = self._live_probs(q, keys, frozen_bias, k, live_bias, copies).to(q.dtype)
        # split, not two slices: a slice's backward zero-fills a gradient as large as probs.
        frozen_probs, live_probs = probs.split([n, a], dim=-1)
        v_copies = v.reshape(b, groups, 1, copies, a, d)
        out = (frozen_probs.reshape(b, groups, -1, n) @ values).view(b, heads, rows, d) \
            + (live_probs.reshape(b, groups, heads // groups, copies, a, a) @ v_copies).view(b, heads, rows, d)
        return out.transpose(1, 2).reshape(b, rows, -1)

    def _attend_live_backward(self, grad: Tensor, q: Tensor, k: Tensor, v: Tensor, given: dict | None = None, *,
                              keys: Tensor, values: Tensor, frozen_bias: Tensor, live_bias: Tensor) -> tuple:
        """``_attend_live``'s input gradients (dq [B, H, C, A, D], dk and dv [B, H_kv, C, A, D])
        from ``grad`` [B, C*A, H*D], its output's gradient over C copies of the A live rows, laid
        copy by copy. With P the probabilities and S the scaled scores: dP = grad V^T over both
        value sets, dS = P * (dP - rowsum(dP * P)) (the softmax's backward), dq = scale dS K, and
        the fresh keys and values, which only their own copy's queries see, get scale dS^T q and
        P^T grad (summed over the query heads that share them). The copies hold the same values
        (only their gradients differ), so the queries, keys and values come once, q [B, H, 1,
        A, D], k and v [B, H_kv, 1, A, D], and P, computed again here (the forward never needs
        it: its value comes from the frozen pass), is computed over those A rows and read by
        every copy."""
        b, heads, _, a, d = q.shape
        groups, n = self.n_kv_heads, keys.shape[2]
        copies, per_group = grad.shape[1] // a, heads // groups
        scale = d ** -0.5
        probs = self._live_probs(q[:, :, 0], keys, frozen_bias, k[:, :, 0], live_bias, 1)  # [B, H, A, n + a]
        g = grad.view(b, copies, a, heads, d).permute(0, 3, 1, 2, 4).reshape(b, groups, per_group * copies * a, d)
        g_copies = g.view(b, groups, per_group, copies, a, d)
        q_one, k_one = q.view(b, groups, per_group, 1, a, d), k.view(b, groups, 1, 1, a, d)
        v_one = v.view(b, groups, 1, 1, a, d)
        d_probs = torch.cat([(g @ values.transpose(-1, -2)).view(b, heads, copies, a, n),
                             (g_copies @ v_one.transpose(-1, -2)).view(b, heads, copies, a, a)], dim=-1)
        p = probs[:, :, None].expand(b, heads, copies, a, n + a)
        d_scores = torch._softmax_backward_data(d_probs.to(probs.dtype), p, -1, probs.dtype).to(q.dtype)
        d_frozen, d_live = d_scores.split([n, a], dim=-1)
        d_live = d_live.reshape(b, groups, per_group, copies, a, a)
        dq = (d_frozen.reshape(b, groups, per_group * copies * a, n) @ keys).view(b, heads, copies, a, d) \
            + (d_live @ k_one).view(b, heads, copies, a, d)
        dk = (d_live.transpose(-1, -2) @ q_one).sum(2)
        p_live = probs[..., n:].to(q.dtype).reshape(b, groups, per_group, 1, a, a)
        dv = (p_live.transpose(-1, -2) @ g_copies).sum(2)
        return dq * scale, dk * scale, dv

    def _attend_fused_backward(self, grad: Tensor, q: Tensor, k: Tensor, v: Tensor, given: dict, *, keys: Tensor,
                               values: Tensor, bias: Tensor, slots: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The live queries' attention's input gradients (dq [B, H, 1, A, D], dk and dv [B,
        H_kv, 1, A, D]: one copy, as ``_attend_live_backward``'s) from ``grad`` [B, A, H*D],
        given q [B, H, 1, A, D], through CPU flash attention's own backward, for the route
        with many live rows (``forward_live``, which runs no copies): the frozen pass ran that kernel over every query and kept,
        at the live rows, its output and each query's log-sum-exp (``_layer``), which the
        kernel's backward takes in place of the probabilities. The live rows' fresh keys and
        values equal the frozen ones at their ``slots`` ([B, H_kv, A, D] indices into L), so
        they are read there: ``keys``/``values`` [B, H_kv, L, D] are the frozen pass's, and
        the gradient of every key and value comes back, of which the live slots' is kept.
        Padding entries (not ``valid``, [B, A]) stand at a clamped slot of a real row: their
        output gradient is zeroed before the kernel and their dk/dv after it, so nothing
        flows through them. The kernel recomputes the scores, as any fused backward does;
        nothing runs the forward's attention a second time."""
        b, a = valid.shape
        keep = valid[:, :, None].to(grad.dtype)
        g = (grad * keep).view(b, a, self.n_heads, self.head_dim).transpose(1, 2)
        out = given["attn"].view(b, a, self.n_heads, self.head_dim).transpose(1, 2)
        dq, d_keys, d_values = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            g, q[:, :, 0], keys, values, out, given["lse"].transpose(1, 2), 0.0, False, attn_mask=bias)
        keep = keep[:, None]  # [B, 1, A, 1]
        dk, dv = d_keys.gather(2, slots) * keep, d_values.gather(2, slots) * keep
        return dq[:, :, None], dk[:, :, None], dv[:, :, None]

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
        return self._live_forward(state, live_rows, live_embeds, 1)

    def live_forward_copies(self, state: FrozenState, live_rows: Tensor, live_embeds: Tensor) -> Tensor:
        """The copies folded into the rows: one pass over [B, C*A] rows, whose queries meet
        the frozen keys in one matmul per layer (``_attend_live``), not C batch entries over
        C copies of the frozen state."""
        out = self._live_forward(state, live_rows, _copies_to_rows(live_embeds), len(live_embeds))
        return _rows_to_copies(out, len(live_embeds))

    def _live_forward(self, state: FrozenState, live_rows: Tensor, live_embeds: Tensor, copies: int) -> Tensor:
        """``live_forward`` over ``copies`` copies of the live rows laid copy by copy along the
        rows of ``live_embeds`` [B, C*A, d]. The copies hold the same values and differ only in
        their graphs, so each linear map runs once over the first copy's A rows and is
        ``_given`` to all C (its backward, grad W, runs over all C*A rows); norms, rotary,
        activation and attention run over every copy, as their backward needs. When the state
        kept the live rows at these embeddings (``KeptRows``), the linear maps do not run at
        all: the step's forward already computed them there, and on the CPU a few-row matmul
        costs what reading its weight does (about 4 ms of a 2-row pass on ``cpu-bench``); then
        every value of a block is known, and each block is one ``_LiveLayer`` node whose
        backward is written by hand, as in ``forward_live``."""
        length = state.key_mask.shape[1]
        b, a = live_rows.shape
        kept = _kept_entries(state, live_rows, live_embeds[:, :a])
        if kept is not None and self._by_hand():
            h, head = self._live_blocks(state, live_rows, live_embeds, kept)
            return _given(h, head.repeat(1, copies, 1) if copies > 1 else head, self.hf.lm_head)
        _, frozen_bias, live_bias = self._live_biases(state.key_mask, live_rows)
        cos, sin = self._rotary(live_embeds, state.positions.gather(1, live_rows.clamp(max=length - 1)))
        if copies > 1:
            cos, sin = cos.repeat(1, 1, copies, 1), sin.repeat(1, 1, copies, 1)
            if kept is not None:  # every copy's rows, read by one index_select per kept value
                kept = kept.view(b, a).repeat(1, copies).flatten()

        def linear(x: Tensor, module, value: Tensor | None = None) -> Tensor:
            """``value``: the map's output at every row of x, when kept (already laid copy by copy)."""
            if value is None and copies == 1:
                return module(x)
            if value is None:
                with torch.no_grad():  # as one 2-D matmul: a 3-D slice would go to bmm, weight expanded
                    value = module(x[:, :a].reshape(-1, x.shape[-1])).view(x.shape[0], a, -1).repeat(1, copies, 1)
            return _given(x, value, module)

        h = live_embeds
        for i, (layer, k_frozen, v_frozen) in enumerate(zip(self.hf.model.layers, state.keys, state.values)):
            attn, mlp = layer.self_attn, layer.mlp
            given = (lambda name: None) if kept is None else (lambda name: _rows(state.kept.values[i][name], kept))
            x = _rms_norm(layer.input_layernorm, h)
            q, k, v = self._heads(linear(x, attn.q_proj, given("q")), linear(x, attn.k_proj, given("k")),
                                  linear(x, attn.v_proj, given("v")), cos, sin)
            # The frozen slots of the live rows are hidden; their fresh keys/values stand in.
            # Attention written out sums in another order than SDPA: logits agree with the full
            # forward to rounding (tests: 1e-12 in float64), not bit for bit.
            out = self._attend_live(q, k_frozen, v_frozen, frozen_bias, k, v, live_bias, copies)
            h = h + linear(out, attn.o_proj, given("o"))
            x = _rms_norm(layer.post_attention_layernorm, h)
            act = mlp.act_fn(linear(x, mlp.gate_proj, given("gate"))) * linear(x, mlp.up_proj, given("up"))
            h = h + linear(act, mlp.down_proj, given("down"))
        head = None if kept is None else _rows(state.kept.head, kept)
        return linear(_rms_norm(self.hf.model.norm, h), self.hf.lm_head, head)

    def _live_blocks(self, state: FrozenState, live_rows: Tensor, live_embeds: Tensor,
                     kept: Tensor) -> tuple[Tensor, Tensor]:
        """The live pass over C copies of the live rows (``live_embeds`` [B, C*A, d]) where the
        state kept every value of every block at them (``kept``, from ``_kept_entries``) and
        the blocks' backward is written by hand (``_by_hand``): (the final norm's output
        [B, C*A, d], with graph, one ``_LiveLayer`` node per block; the LM head's output at
        the A rows [B, A, V], the same for every copy). Every value is read once, at the A
        rows, and the copies' blocks broadcast it."""
        _, frozen_bias, live_bias = self._live_biases(state.key_mask, live_rows)
        length = state.key_mask.shape[1]
        tables = _rotary_tables(*self._rotary(live_embeds, state.positions.gather(1, live_rows.clamp(max=length - 1))))
        h = live_embeds
        for i, (layer, k_frozen, v_frozen) in enumerate(zip(self.hf.model.layers, state.keys, state.values)):
            given = {name: _rows(t, kept) for name, t in state.kept.values[i].items()}
            grad = partial(self._attend_live_backward, keys=k_frozen, values=v_frozen, frozen_bias=frozen_bias,
                           live_bias=live_bias)
            h = _LiveLayer.apply(h, self, layer, given, tables, grad)
        return _rms_norm(self.hf.model.norm, h), _rows(state.kept.head, kept)

    def live_head_copies(self, state: FrozenState, live_rows: Tensor, live_embeds: Tensor) -> tuple | None:
        """See ``Denoiser.live_head_copies``: given where every block's values were kept
        (``_live_blocks``)."""
        kept = _kept_entries(state, live_rows, live_embeds[0]) if self._by_hand() else None
        if kept is None:  # live_forward_copies computes its own
            return None
        hidden, head = self._live_blocks(state, live_rows, _copies_to_rows(live_embeds), kept)
        return _rows_to_copies(hidden, len(live_embeds)), head, self.hf.lm_head.weight

    # A block whose every value at the live rows the frozen pass computed gets its backward
    # written by hand (``_LiveLayer``); False builds its graph with autograd instead, the
    # reference the tests compare the hand-written backward with.
    BACKWARD_BY_HAND = True

    def _by_hand(self) -> bool:
        """Whether ``_LiveLayer`` runs the blocks: their activation is SiLU (LLaDA's, Dream's),
        the one whose derivative it writes out."""
        return self.BACKWARD_BY_HAND and getattr(self.hf.config, "hidden_act", None) == "silu"

    # Above this many live rows per canvas row (1/fraction), the live queries' attention goes
    # through the fused kernel (``forward_live``): its backward from the frozen pass's
    # log-sum-exp on the CPU, over one key tensor with the live keys scattered in under
    # autograd elsewhere. At or below it the written-out route reads the same on the CPU
    # (both within a few % of each other at L = 256-1028, |M| = L/4 and below).
    DENSE_LIVE_FRACTION = 4

    def forward_live(self, ids, attention_mask, live_rows):
        """One pass over the layers (see ``Denoiser.forward_live``). Each layer runs the full
        forward's block over all L rows without autograd (``_layer``, the very computation of
        ``forward_rows``), so the position logits returned are bit-identical to ``forward`` at
        every row, live or not, in every dtype and on both attention routes. The live rows'
        graph is built beside it without computing their rows a second time, from the frozen
        pass's outputs of each block's linear maps (and the LM head) at the live rows. Each
        block is one node whose backward is written by hand (``_LiveLayer``): its forward only
        adds the residual branches, and its backward is the block's input gradient. The live
        queries' attention backward is, with few live rows, written out: it computes their
        probabilities, the one piece nothing had computed, over the frozen keys and the live
        rows' fresh ones (``_attend_live_backward``); with many (``DENSE_LIVE_FRACTION``), on
        the CPU, the frozen pass runs SDPA's own kernel (CPU flash attention) and keeps its
        output and log-sum-exp at the live rows, and the kernel's backward takes them
        (``_attend_fused_backward``). Either way the live queries attend over the frozen
        keys/values of every other row and the live rows' own, so gradient reaches a live row
        only through live queries. The step therefore costs one forward and the live rows'
        backward, which is what the accounting charges; the written-out route also computes
        the live queries' scores and softmax a second time, which it does not see
        (results/bench/boe_profile.md). Where the blocks' backward is not written out
        (``BACKWARD_BY_HAND`` off, an activation other than SiLU) or the fused kernel keeps no
        log-sum-exp (a GPU), autograd builds the live rows' graph: norms, rotary, activation
        and attention run again over the live rows (with many, the fused kernel over one key
        tensor with the fresh keys scattered in), and each linear map is ``_given`` its
        output, contributing only grad W to the backward. The live logits (with autograd) are
        the frozen pass's at those rows. One spare masked slot (index L) takes padding entries
        of ``live_rows``."""
        b, n = ids.shape
        embeds = self.embed(ids).detach()
        key_mask, positions, bias = canvas_masks(embeds, attention_mask, self.pads_take_positions)
        cos, sin = self._rotary(embeds, positions)
        clamped = live_rows.clamp(max=n - 1)
        take = _flat_rows(clamped, n)
        cos_a, sin_a = self._rotary(embeds, positions.gather(1, clamped))
        tables = _rotary_tables(cos_a, sin_a)
        slot_a = live_rows[:, None, :, None].expand(-1, self.n_kv_heads, -1, self.head_dim)
        valid, frozen_bias, live_bias = self._live_biases(key_mask, live_rows)
        dense_live = live_rows.shape[1] * self.DENSE_LIVE_FRACTION > n
        by_hand = self._by_hand() and (not dense_live or self._fused_keeps_lse(embeds, bias))
        if dense_live and not by_hand:
            spare_bias = padding_bias(torch.cat([key_mask, key_mask.new_zeros(b, 1)], dim=1), embeds.dtype)
        spare = lambda t: torch.cat([t, t.new_zeros(b, t.shape[1], 1, t.shape[3])], dim=2)  # noqa: E731
        live_embeds = _rows(embeds, take).requires_grad_(True)
        h_all, h = embeds, live_embeds
        with torch.enable_grad():
            for layer in self.hf.model.layers:
                attn, mlp = layer.self_attn, layer.mlp
                with torch.no_grad():
                    h_all, k_f, v_f, given = self._layer(layer, h_all, cos, sin, bias, take, dense_live and by_hand)
                if by_hand and dense_live:
                    grad = partial(self._attend_fused_backward, keys=k_f, values=v_f, bias=bias,
                                   slots=clamped[:, None, :, None].expand_as(slot_a), valid=valid)
                elif by_hand:
                    grad = partial(self._attend_live_backward, keys=k_f, values=v_f, frozen_bias=frozen_bias,
                                   live_bias=live_bias)
                if by_hand:
                    h = _LiveLayer.apply(h, self, layer, given, tables, grad)
                    continue
                x = _rms_norm(layer.input_layernorm, h)
                q, k, v = self._heads(_given(x, given["q"], attn.q_proj), _given(x, given["k"], attn.k_proj),
                                      _given(x, given["v"], attn.v_proj), cos_a, sin_a)
                if dense_live:  # many live rows: the fused kernel over one key tensor is faster
                    keys, values = spare(k_f).scatter(2, slot_a, k), spare(v_f).scatter(2, slot_a, v)
                    out = self._attend(q, keys, values, spare_bias)
                else:
                    out = self._attend_live(q, k_f, v_f, frozen_bias, k, v, live_bias)
                h = h + _given(out, given["o"], attn.o_proj)
                x = _rms_norm(layer.post_attention_layernorm, h)
                act = mlp.act_fn(_given(x, given["gate"], mlp.gate_proj)) * _given(x, given["up"], mlp.up_proj)
                h = h + _given(act, given["down"], mlp.down_proj)
            with torch.no_grad():
                logits = self._head(h_all)
            live_logits = _given(_rms_norm(self.hf.model.norm, h), _rows(logits, take), self.hf.lm_head)
        return self.rows_to_positions(logits), live_logits, live_embeds


@dataclass
class KeptRows:
    """What ``forward_with_state`` kept at ``rows`` [B, T] (entries equal to L pad): the input
    embeddings there [B, T, d], per layer the outputs of the block's seven linear maps
    (``_layer``'s ``taken``, name -> [B, T, F]) and the row logits [B, T, V]. A live pass
    whose live rows are all among them, at the same embeddings, is given these values
    instead of computing its linear maps again (``_kept_entries``), as ``forward_live``'s
    graph is given the frozen pass's."""

    rows: Tensor
    embeds: Tensor
    values: list[dict[str, Tensor]]
    head: Tensor


def _kept_entries(state: FrozenState, live_rows: Tensor, live_embeds: Tensor) -> Tensor | None:
    """Flat indices [B*A] into the state's kept rows for ``live_rows`` [B, A], or None when
    the state kept nothing, a live row was not kept, or a live row's embedding ``live_embeds``
    [B, A, d] differs from the one its kept values were computed at (a pass at other inputs,
    such as a finite difference, computes its own). Padding entries (== L) point at entry 0:
    their outputs mean nothing and nothing attends to them."""
    kept = state.kept
    if not isinstance(kept, KeptRows):
        return None
    b, length = state.key_mask.shape
    t = kept.rows.shape[1]
    slot = torch.full((b, length + 1), -1, dtype=torch.long, device=live_rows.device)
    slot.scatter_(1, kept.rows, torch.arange(t, device=live_rows.device).expand(b, t))
    valid = live_rows < length
    entry = slot.gather(1, live_rows)
    if not bool((entry >= 0)[valid].all()):
        return None
    entry = torch.where(valid, entry, 0)
    flat = _flat_rows(entry, t)
    with torch.no_grad():
        same = torch.equal(_rows(kept.embeds, flat)[valid], live_embeds.detach()[valid])
    return flat if same else None


def _copies_to_rows(t: Tensor) -> Tensor:
    """[C, B, A, F] -> [B, C*A, F]: C copies of the live rows laid copy by copy along the rows."""
    copies, b, a, f = t.shape
    return t.permute(1, 0, 2, 3).reshape(b, copies * a, f)


def _rows_to_copies(t: Tensor, copies: int) -> Tensor:
    """The inverse of ``_copies_to_rows``: [B, C*A, F] -> [C, B, A, F]."""
    b, rows, f = t.shape
    return t.view(b, copies, rows // copies, f).permute(1, 0, 2, 3)


def _flat_rows(rows: Tensor, n: int) -> Tensor:
    """[B, A] row indices into n rows -> flat indices b * n + row [B*A] (for ``_rows``)."""
    return (rows + torch.arange(rows.shape[0], device=rows.device)[:, None] * n).flatten()


def _rows(t: Tensor, take: Tensor) -> Tensor:
    """[B, n, F] -> [B, A, F]: the rows at flat indices ``take`` (b * n + row, [B*A]) as whole-row
    copies; a gather with an index expanded over F would read an index as large as the rows
    (over the vocabulary for logits: 5% of a CPU step)."""
    return t.reshape(-1, t.shape[-1]).index_select(0, take).view(t.shape[0], -1, t.shape[-1])


def block_maps(layer) -> tuple:
    """A block's seven linear maps, in forward order: q, k, v, o, gate, up, down."""
    attn, mlp = layer.self_attn, layer.mlp
    return attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj


def _input_grad(grad: Tensor, linear) -> Tensor:
    """grad W: the input gradient of y = x W^T + b. As one [rows, out] @ [out, in] matmul: a
    batched grad (often not contiguous) would otherwise go to bmm with the weight expanded
    over the batch."""
    flat = grad.reshape(-1, grad.shape[-1]) @ linear.weight
    return flat.view(*grad.shape[:-1], linear.weight.shape[1])


class _Given(torch.autograd.Function):
    """y = x W^T + b whose value was computed elsewhere (the frozen pass, at the same rows):
    forward returns ``value`` as it is, backward the input gradient grad W. The weights
    need no gradient (BoE differentiates inputs only), so this is the linear map's whole
    backward, and its forward is not paid twice."""

    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor, linear) -> Tensor:
        ctx.linear = linear
        return value

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _input_grad(grad, ctx.linear), None, None


def _rms_norm_backward(norm, x: Tensor, grad: Tensor) -> Tensor:
    """``_rms_norm``'s input gradient at x for the output gradient ``grad``. With r =
    (mean(x^2) + eps)^(-1/2) and g = grad * weight, d(x r)/dx applied to g is
    r g - x r^3 mean(g x); in the same dtypes as the forward (statistics in at least float32).
    Few operators, no conversion where the dtype is already right: on the CPU a few-row
    backward costs per operator, not per number."""
    compute = torch.promote_types(x.dtype, torch.float32)
    h = x if x.dtype == compute else x.to(compute)
    inv = torch.rsqrt(h.square().mean(-1, keepdim=True).add_(norm.variance_epsilon))
    g = grad * norm.weight
    g = g if g.dtype == compute else g.to(compute)
    coef = (g * h).mean(-1, keepdim=True).mul_(inv.pow(3))
    out = torch.addcmul(g * inv, h, coef, value=-1)
    return out if out.dtype == x.dtype else out.to(x.dtype)


def _rotary_tables(cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(cos, turn, back) [B, 1, 1, A, D] (heads, copies, rows) from cos and sin [B, 1, A, D],
    for ``_rotate`` and ``_rotary_backward``, made once per live pass.
    rot(h) = (-h2, h1) is roll(h) = (h2, h1) times the signs (-1, +1), so rot(h) sin =
    roll(h) turn with turn = (-sin1, sin2); its transpose rot^T(u) = (u2, -u1) gives
    rot^T(g sin) = roll(g) back with back = (sin2, -sin1) = roll(turn). One roll and one
    multiply-add in place of a split, a negation and a concatenation."""
    half = sin.shape[-1] // 2
    turn = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)[:, :, None]
    return cos[:, :, None], turn, turn.roll(half, -1)


def _rotate(x: Tensor, cos: Tensor, turn: Tensor) -> Tensor:
    """``_apply_rotary`` from ``_rotary_tables``: x cos + roll(x) turn, in the dtype of cos.
    The same rotation to rounding (the multiply-add may round once where the stock formula
    rounds twice). Only the hand-written backward uses it, where rounding-level agreement is
    all that is asked. The forward keeps ``_apply_rotary``, in the reference model's order of
    operations, and the frozen pass runs that same forward, bit for bit."""
    h = x if x.dtype == cos.dtype else x.to(cos.dtype)
    out = torch.addcmul(h * cos, h.roll(h.shape[-1] // 2, -1), turn)
    return out if out.dtype == x.dtype else out.to(x.dtype)


def _rotary_backward(grad: Tensor, cos: Tensor, back: Tensor) -> Tensor:
    """``_apply_rotary``'s input gradient: the rotation's transpose, grad cos + rot^T(grad sin)
    = grad cos + roll(grad) back (``_rotary_tables``)."""
    return _rotate(grad, cos, back)


class _LiveLayer(torch.autograd.Function):
    """One block over live rows h [B, C*A, d], C copies of A rows laid copy by copy (C = 1
    outside ``candidates``' leave-one-out), where the frozen pass computed every value of the
    block at those rows: ``given`` holds the outputs of its seven linear maps at the A rows
    (``_layer``'s ``taken``). The copies hold the same values and differ only in their
    gradients, so every value is read and computed once, over the A rows, and the copies'
    backward broadcasts it. The forward only adds the two residual branches, h + o + down,
    as ``_layer`` does (bit for bit); the backward is the block's input gradient written out:
    the MLP's (SiLU gate times up), the second norm's, the live queries' attention's
    (``attention_grad``: with few live rows ``_attend_live_backward``, which computes their
    probabilities, the one piece of the forward that nothing had computed; with many,
    ``_attend_fused_backward``, the fused kernel's own backward from the log-sum-exp the
    frozen pass kept), the rotary's and the first norm's, with every linear map's input
    gradient grad W.

    Why by hand: a graph built with autograd would run the block's norms, rotary, activation
    and attention over the live rows in the forward, although their values are never read
    (the frozen pass has them), and on the CPU it paid about 8 ms of a 126 ms forward at
    L = 1028, |M| = 64 for those ops and their bookkeeping (``results/bench/boe_profile.md``).
    Here the graph is one node per block and only the backward computes. The tests compare
    it with the autograd graph (``BACKWARD_BY_HAND = False``) in float64 and with float32 in
    bf16."""

    @staticmethod
    def forward(ctx, h: Tensor, model, layer, given: dict, tables: tuple, attention_grad) -> Tensor:
        b, rows, width = h.shape
        a = given["o"].shape[1]
        first = h[:, :a]  # every copy's values
        mid = first + given["o"]
        ctx.save_for_backward(first, mid)
        ctx.model, ctx.layer, ctx.given, ctx.tables, ctx.attention_grad = model, layer, given, tables, attention_grad
        ctx.compiled = getattr(_COMPILE, "enabled", False)
        out = mid + given["down"]
        return out.repeat(1, rows // a, 1) if rows > a else out

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, mid = ctx.saved_tensors
        backward = compiled_block_backward() if ctx.compiled else block_backward
        return backward(grad, h, mid, ctx.model, ctx.layer, ctx.given, ctx.tables, ctx.attention_grad), \
            None, None, None, None, None


def block_backward(grad: Tensor, h: Tensor, mid: Tensor, model, layer, given: dict, tables: tuple,
                   attention_grad) -> Tensor:
    """``_LiveLayer``'s backward: the block's input gradient [B, C*A, d] at C copies of its
    live rows for the output gradient ``grad`` [B, C*A, d], from the copies' common values at
    the A rows: h [B, A, d], mid = h + o, ``given``; a plain function of its arguments, so
    that ``torch.compile`` can take it whole (``compiled_backward``). Gradients run as
    [B, C, A, .], values as [B, 1, A, .]."""
    cos, turn, back = tables  # _rotary_tables
    attn, mlp = layer.self_attn, layer.mlp
    b, rows, width = grad.shape
    a = h.shape[1]
    copies = rows // a
    heads, groups, d = model.n_heads, model.n_kv_heads, model.head_dim
    # Rows flattened to 2-D for every product: each linear map's input gradient is one matmul
    # (addmm where two sum), and no view is made per map.
    flat = grad.reshape(-1, width)
    gate, up = given["gate"][:, None], given["up"][:, None]
    d_act = (flat @ mlp.down_proj.weight).view(b, copies, a, -1)
    d_x = torch.addmm(torch.ops.aten.silu_backward(d_act * up, gate).view(b * rows, -1) @ mlp.gate_proj.weight,
                      (d_act * F.silu(gate)).view(b * rows, -1), mlp.up_proj.weight)
    d_mid = flat + _rms_norm_backward(layer.post_attention_layernorm, mid[:, None],
                                      d_x.view(b, copies, a, width)).view(b * rows, width)
    # Queries and keys rotated together: one rotation over their heads side by side.
    qk = torch.cat((given["q"], given["k"]), dim=-1).view(b, a, heads + groups, d).transpose(1, 2)[:, :, None]
    q, k = _rotate(qk, cos, turn).split((heads, groups), dim=1)
    v = given["v"].view(b, a, groups, d).transpose(1, 2)[:, :, None]
    dq, dk, dv = attention_grad((d_mid @ attn.o_proj.weight).view(b, rows, -1), q, k, v, given)
    d_qk = _rotary_backward(torch.cat((dq, dk), dim=1), cos, back).permute(0, 2, 3, 1, 4).reshape(b * rows, -1)
    d_q, d_k = d_qk.split((heads * d, groups * d), dim=1)
    d_v = dv.permute(0, 2, 3, 1, 4).reshape(b * rows, -1)
    d_x = torch.addmm(torch.addmm(d_q @ attn.q_proj.weight, d_k, attn.k_proj.weight), d_v, attn.v_proj.weight)
    d_h = d_mid + _rms_norm_backward(layer.input_layernorm, h[:, None], d_x.view(b, copies, a, width)).view(-1, width)
    return d_h.view(b, rows, width)


# ``compiled_backward``: whether the live blocks built on this thread take the compiled backward.
_COMPILE = threading.local()


@contextmanager
def compiled_backward(enabled: bool = True):
    """Within it, the live blocks built on this thread (``_LiveLayer``) run their backward
    through ``torch.compile`` (inductor): ``block_backward`` fused into a few kernels around
    its products, the same math to rounding. The BoE sampler's ``compile_backward``. On the
    CPU, eager PyTorch pays each of the backward's ~120 operators per block its dispatch, and
    a backward over few rows is mostly that; compiled, GSM8K-shaped decodes on ``cpu-bench``
    cost 0.007-0.024 (``masked``) and 0.012-0.015 (``candidates``) less, in Confidence
    decodes, side by side with the eager backward (results/bench/boe_decode.md,
    boe_profile_notes.md). The first backward compiles (seconds, or a minute with inductor's
    cache cold; a C++ compiler is needed); shapes are symbolic, so a new length or batch
    rarely compiles again. Thread-local: decodes interleaved on other threads keep their own
    choice."""
    before = getattr(_COMPILE, "enabled", False)
    _COMPILE.enabled = bool(enabled)
    try:
        yield
    finally:
        _COMPILE.enabled = before


@cache
def compiled_block_backward():
    """``block_backward`` under ``torch.compile``, made once per process (shapes symbolic)."""
    return torch.compile(block_backward, dynamic=True)


def _given(x: Tensor, value: Tensor, linear) -> Tensor:
    return _Given.apply(x, value, linear)


def make_bidirectional(hf_model) -> None:
    """Turn off causal masking everywhere transformers may look for it."""
    hf_model.config.is_causal = False
    if hasattr(hf_model.config, "use_sliding_window"):
        hf_model.config.use_sliding_window = False
    for module in hf_model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
