"""The backward half of a BoE step: TIS at live rows through the live-row recompute.

``live_tis_pass`` is one pure function of tensors, so the same code runs eagerly (CPU,
tests) and inside a CUDA graph (``LivePassGraphs``). On a GPU at batch 1 the eager
live-row pass is bound by launching ~100 small kernels per layer, not by arithmetic: a
32-row backward through 32 layers costs as much wall time as a dense 1024-row one. Replaying
a captured graph removes that floor, which is what makes the pass cost about |A|/L.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from boe_bench.models.base import Denoiser, FrozenState
from boe_bench.samplers.base import probs_and_safe_log_probs


def inner(a: Tensor, b: Tensor) -> Tensor:
    """<a, b> over the last axis, in at least float32 (bf16 gradients lose too much)."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    return (a.to(dtype) * b.to(dtype)).sum(-1)


@dataclass
class LiveInputs:
    """One live-row pass. rows: [B, A] live row indices, ``L`` marks padding entries.
    embeds/delta: [B, A, d] input embeddings (at alpha = 0) and soft-write shifts.
    weights: which entropies form S; [B, A] for one shared objective, or [A, B, A] for
    leave-one-out, where copy c's objective leaves out the entries that predict entry c."""

    rows: Tensor
    embeds: Tensor
    delta: Tensor
    weights: Tensor

    @property
    def leave_one_out(self) -> bool:
        return self.weights.dim() == 3


def live_tis_pass(model: Denoiser, frozen: FrozenState, inputs: LiveInputs) -> Tensor:
    """[B, A] TIS_a = -<dS/de_a, De_a> at every live entry (meaningless at padding).

    Leave-one-out: copy c's objective, S without the entries that predict entry c, needs its
    own gradient. The live rows run forward as |A| independent copies in one pass
    (``live_forward_copies``: copy c's fresh keys/values meet no other copy's), and one
    backward of sum_c S_c gives copy c the gradient of S_c alone; entry c's gradient is read
    from copy c. That is |A|^2 rows forward and |A|^2 rows backward (input gradients only),
    within the |A| + 2|A|^2 the accounting charges, in one pass of plain operators; the copies
    hold the same values, so their entropies are computed once (``weighted_entropy``) and,
    where the step's forward kept the live rows' linear maps, every value is read once at
    the A rows: the blocks' forward is only their residual sums, their backward broadcasts
    those values over the copies (``_LiveLayer``), and the LM head's input gradient is one
    A-row product scaled per copy (``live_head_copies``, ``_HeadEntropy``). Two
    earlier forms cost more than charged on the CPU (results/bench/boe_profile.md): a Python
    loop of |A| backwards paid the per-operator cost |A| times, and one batched backward of a
    single-copy forward (``is_grads_batched``) runs every backward operator under vmap, 3x
    the time of the plain |A|^2-row backward at |A| = 8."""
    if not inputs.leave_one_out:
        embeds = inputs.embeds.detach().requires_grad_(True)
        with torch.enable_grad():
            objective = weighted_entropy(model.live_forward(frozen, inputs.rows, embeds), inputs.weights)
            (grad,) = torch.autograd.grad(objective, embeds)
        return -inner(grad, inputs.delta)
    copies = inputs.weights.shape[0]
    embeds = inputs.embeds.detach().expand(copies, *inputs.embeds.shape).clone().requires_grad_(True)
    with torch.enable_grad():
        head = model.live_head_copies(frozen, inputs.rows, embeds)
        if head is None:
            objective = weighted_entropy(model.live_forward_copies(frozen, inputs.rows, embeds), inputs.weights)
        else:  # the head's input gradient over the A rows once (``_HeadEntropy``)
            objective = _HeadEntropy.apply(head[0], head[1], inputs.weights, head[2])
        (grads,) = torch.autograd.grad(objective, embeds)
    own = grads.diagonal(dim1=0, dim2=2).permute(0, 2, 1)  # [C, B, A, d] -> [B, A, d]: copy c at entry c
    return -inner(own, inputs.delta)


def weighted_entropy(logits: Tensor, weights: Tensor) -> Tensor:
    """S = sum_a w_a H(logits_a): logits [B, A, V] with weights [B, A], or C copies of the
    same logits [C, B, A, V] (``live_forward_copies``) with weights [C, B, A]. The value and
    gradient of ``(entropy(logits) * weights).sum()``, the gradient written out
    (``_WeightedEntropy``; tests: ``test_weighted_entropy_equals_autograd_entropy``)."""
    if weights.dim() == 2:  # one copy
        logits, weights = logits[None], weights[None]
    return _WeightedEntropy.apply(logits, weights)


def _entropies(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(p, log p, H) of logits [..., V], in at least float32. Forbidden tokens (p = 0) add
    nothing to H or to its gradient, as in ``entropy`` (the same ``probs_and_safe_log_probs``)."""
    p, log_p = probs_and_safe_log_probs(logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1))
    return p, log_p, -(p * log_p).sum(-1)


def _entropy_grad(p: Tensor, log_p: Tensor, ent: Tensor) -> Tensor:
    """dH/dz = -p (log p + H), from ``_entropies``."""
    return -p * (log_p + ent[..., None])


class _WeightedEntropy(torch.autograd.Function):
    """sum_c sum_a w[c, a] H(logits[c, a]) for C copies [C, B, A, V] holding the same values,
    weights w [C, B, A]. The entropies and their gradient dH/dz = -p (log p + H) are computed
    once, over the first copy's A rows, and copy c's logit gradient is w[c] times it: through
    ``entropy`` the log-softmax, the entropy and their backward would run over all C*A rows of
    V logits (about a tenth of a step at L = 256, |C| = 8, on ``cpu-bench``). With one copy,
    autograd's graph of ``entropy`` makes about ten passes over the A x V logits in its
    backward where this makes three (``_entropies``, ``_entropy_grad``)."""

    @staticmethod
    def forward(ctx, logits: Tensor, weights: Tensor) -> Tensor:
        p, log_p, ent = _entropies(logits[0])  # ent [B, A]
        ctx.save_for_backward(p, log_p, ent, weights)
        ctx.dtype = logits.dtype
        return (weights.to(ent.dtype) * ent).sum()

    @staticmethod
    def backward(ctx, grad: Tensor):
        p, log_p, ent, weights = ctx.saved_tensors
        d_logits = _entropy_grad(p, log_p, ent)  # over the first copy [B, A, V]
        return ((grad * weights.to(p.dtype))[..., None] * d_logits).to(ctx.dtype), None


class _HeadEntropy(torch.autograd.Function):
    """``_WeightedEntropy`` over logits z[c] = x[c] W^T that the model already knows (the same
    for every copy, ``Denoiser.live_head_copies``), taking the head input x [C, B, A, d], the
    logits z [B, A, V], the weights w [C, B, A] and W [V, d]. Since dS/dz[c] = w[c] dH/dz, the
    head's input gradient is dS/dx[c] = w[c] (dH/dz W): one [A, V] x [V, d] product for all
    copies, where the head's own backward would run it over the C*A rows (about 0.7 ms of a
    ranking step on ``cpu-bench``) after ``_WeightedEntropy`` had written a [C, B, A, V]
    gradient. The same value and gradient to rounding (tests)."""

    @staticmethod
    def forward(ctx, hidden: Tensor, logits: Tensor, weights: Tensor, head: Tensor) -> Tensor:
        p, log_p, ent = _entropies(logits)  # ent [B, A]
        ctx.save_for_backward(p, log_p, ent, weights, head)
        return (weights.to(ent.dtype) * ent).sum()

    @staticmethod
    def backward(ctx, grad: Tensor):
        p, log_p, ent, weights, head = ctx.saved_tensors
        d_logits = _entropy_grad(p, log_p, ent).to(head.dtype)  # [B, A, V]
        d_hidden = (d_logits.flatten(0, 1) @ head).view(*d_logits.shape[:2], -1)  # [B, A, d]
        return (grad * weights)[..., None].to(head.dtype) * d_hidden, None, None, None


def padded_frozen(frozen: FrozenState) -> FrozenState:
    """The state with one masked slot appended, where padding entries (== L) write. Nothing
    it kept comes along: a captured graph must read only its static buffers."""
    pad = lambda t: torch.cat([t, t.new_zeros(*t.shape[:2], 1, t.shape[3])], dim=2)  # noqa: E731
    return replace(frozen, keys=[pad(k) for k in frozen.keys], values=[pad(v) for v in frozen.values],
                   positions=torch.cat([frozen.positions, frozen.positions[:, -1:]], dim=1),
                   key_mask=torch.cat([frozen.key_mask, frozen.key_mask.new_zeros(frozen.key_mask.shape[0], 1)], 1),
                   kept=None)


def bucket_width(count: int) -> int:
    """Live-set widths rounded up so that a decode reuses a handful of captured graphs."""
    step = 8 if count <= 64 else 64
    return max(step, math.ceil(count / step) * step)


class LivePassGraphs:
    """CUDA graphs of ``live_tis_pass``, one per input shape, for the current (B, L).

    Inputs are copied into static buffers (the frozen keys/values included, with one
    padding slot), the graph replays, the output is cloned. All graphs of one (B, L) share
    a memory pool: they never run concurrently and no output outlives its replay."""

    def __init__(self) -> None:
        self.graphs: dict[tuple, tuple] = {}
        self.canvas: tuple | None = None
        self.static_frozen: FrozenState | None = None
        self.pool = None
        self.broken = False

    def __call__(self, model: Denoiser, frozen: FrozenState, inputs: LiveInputs) -> Tensor:
        if self.broken:
            return live_tis_pass(model, frozen, inputs)
        canvas = (tuple(frozen.key_mask.shape), len(frozen.keys), frozen.keys[0].dtype)
        if canvas != self.canvas:
            self.graphs.clear()
            self.canvas, self.static_frozen = canvas, padded_frozen(frozen)
            self.pool = torch.cuda.graph_pool_handle()
        for static, fresh in zip(self.static_frozen.keys + self.static_frozen.values, frozen.keys + frozen.values):
            static[:, :, :-1].copy_(fresh)
        self.static_frozen.positions[:, :-1].copy_(frozen.positions)
        self.static_frozen.key_mask[:, :-1].copy_(frozen.key_mask)
        key = tuple((name, tuple(t.shape)) for name, t in vars(inputs).items())
        if key not in self.graphs:
            try:
                self.graphs[key] = self.capture(model, inputs)
            except RuntimeError as error:  # a model whose live pass reads values back
                warnings.warn(f"BoE live-row pass cannot be captured as a CUDA graph ({error}); running eagerly")
                self.broken = True
                torch.cuda.synchronize()
                return live_tis_pass(model, frozen, inputs)
        graph, static_inputs, static_out = self.graphs[key]
        for name, tensor in vars(inputs).items():
            getattr(static_inputs, name).copy_(tensor)
        graph.replay()
        return static_out.clone()

    def capture(self, model: Denoiser, inputs: LiveInputs) -> tuple:
        static_inputs = LiveInputs(**{name: t.clone() for name, t in vars(inputs).items()})
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # autograd must warm up off the capture stream
            for _ in range(2):
                live_tis_pass(model, self.static_frozen, static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = live_tis_pass(model, self.static_frozen, static_inputs)
        return graph, static_inputs, static_out
