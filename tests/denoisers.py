"""Test models made from another model by a transform of its logits."""
import torch

from boe_bench.models.base import Denoiser, positions_from_mask


class LogitsWrapper(Denoiser):
    """Defers to ``inner`` and passes its logits through ``transform(logits, positions)``, on the
    full forward and on the live-row forward alike; positions count from each row's first real
    token (so padding moves nothing). Differentiable when the transform is, for BoE's backward."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        for name in ("tokenizer", "mask_id", "pad_id", "eos_ids", "vocab_size", "logit_shift"):
            setattr(self, name, getattr(inner, name))

    @property
    def embedding_matrix(self):
        return self.inner.embedding_matrix

    def transform(self, logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_rows(self, embeds, attention_mask=None, time=None, capture=False, ids=None):
        rows, state = self.inner.forward_rows(embeds, attention_mask, time, capture, ids)
        if attention_mask is None:
            attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return self.transform(rows, positions_from_mask(attention_mask)), state

    def live_forward(self, state, live_rows, live_embeds):
        positions = state.positions.gather(1, live_rows.clamp(max=state.positions.shape[1] - 1))
        return self.transform(self.inner.live_forward(state, live_rows, live_embeds), positions)
