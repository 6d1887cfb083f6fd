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
from boe_bench.samplers.base import entropy


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


def replicate(frozen: FrozenState, copies: int) -> FrozenState:
    """The frozen state repeated ``copies`` times along the batch, copy-major (a view at B=1)."""
    rep = lambda t: t[None].expand(copies, *t.shape).flatten(0, 1)  # noqa: E731
    return replace(frozen, keys=[rep(k) for k in frozen.keys], values=[rep(v) for v in frozen.values],
                   positions=rep(frozen.positions), key_mask=rep(frozen.key_mask))


# Leave-one-out copies each hold the whole frozen state (the live-row forward writes fresh
# keys/values into a copy of it), so copies run in chunks that keep this many bytes.
LOO_CHUNK_BYTES = 4 * 2**30


def live_tis_pass(model: Denoiser, frozen: FrozenState, inputs: LiveInputs) -> Tensor:
    """[B, A] TIS_a = -<dS/de_a, De_a> at every live entry (meaningless at padding).

    Leave-one-out runs copies as a batch: copy c backpropagates its own objective and only
    its entry c is read, which gives every entry its exact gradient."""
    if not inputs.leave_one_out:
        return -inner(objective_gradient(model, frozen, inputs.rows, inputs.embeds, inputs.weights), inputs.delta)
    width = inputs.rows.shape[1]
    state_bytes = sum(t.numel() * t.element_size() for t in frozen.keys + frozen.values)
    chunk = max(1, min(width, LOO_CHUNK_BYTES // max(state_bytes, 1)))
    grads = []
    for start in range(0, width, chunk):
        own = torch.arange(start, min(start + chunk, width), device=inputs.rows.device)
        copies = len(own)
        state = replicate(frozen, copies) if copies > 1 else frozen
        grad = objective_gradient(model, state, inputs.rows.repeat(copies, 1), inputs.embeds.repeat(copies, 1, 1),
                                  inputs.weights[own].flatten(0, 1))
        grads.append(grad.view(copies, -1, width, grad.shape[-1])[torch.arange(copies), :, own])
    return -inner(torch.cat(grads).transpose(0, 1), inputs.delta)


def objective_gradient(model: Denoiser, frozen: FrozenState, rows: Tensor, embeds: Tensor, weights: Tensor) -> Tensor:
    """d(sum of weighted live-row entropies)/d(live embeddings), [N, A, d]."""
    embeds = embeds.detach().requires_grad_(True)
    with torch.enable_grad():
        ent = entropy(model.live_forward(frozen, rows, embeds))
        (grad,) = torch.autograd.grad((ent * weights.to(ent.dtype)).sum(), embeds)
    return grad


def padded_frozen(frozen: FrozenState) -> FrozenState:
    """The state with one masked slot appended, where padding entries (== L) write."""
    pad = lambda t: torch.cat([t, t.new_zeros(*t.shape[:2], 1, t.shape[3])], dim=2)  # noqa: E731
    return replace(frozen, keys=[pad(k) for k in frozen.keys], values=[pad(v) for v in frozen.values],
                   positions=torch.cat([frozen.positions, frozen.positions[:, -1:]], dim=1),
                   key_mask=torch.cat([frozen.key_mask, frozen.key_mask.new_zeros(frozen.key_mask.shape[0], 1)], 1))


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
