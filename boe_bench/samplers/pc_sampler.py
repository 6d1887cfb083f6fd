"""PC-Sampler (NEUIR/PC-Sampler): position-aware weight times calibrated confidence.

score_i = exp(-lambda * pos_i) * min(-p_i * log(f_bg(x_i) + 1e-9), alpha), with p_i the
probability of the drawn token x_i, pos_i its index from the start of the current block,
and f_bg the token's frequency in a background corpus: frequent tokens (punctuation,
"the") are down-weighted, and early positions go first. Counts per step follow the
shared schedule.

Frequency tables are JSON: {"num_token": N, "p_baseline_dict": {token_id: count}} (the
reference's format). ``scripts/build_token_freq.py`` builds one from any text corpus and
tokenizer; tokens never seen get frequency 1/N.
"""
import json
from importlib import resources
from pathlib import Path

import torch

from boe_bench.errors import ConfigError
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import LocalPolicySampler


def load_frequency_table(path: str | Path, vocab_size: int) -> torch.Tensor:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"token frequency table {str(path)!r} does not exist; build one with "
                          f"scripts/build_token_freq.py")
    data = json.loads(path.read_text())
    total = data["num_token"]
    freq = torch.full((vocab_size,), 1.0 / total, dtype=torch.float64)
    for token, count in data["p_baseline_dict"].items():
        if int(token) < vocab_size:
            freq[int(token)] = count / total
    return freq


@SAMPLERS.register("pc_sampler")
class PCSampler(LocalPolicySampler):
    def __init__(self, lam: float = 0.25, alpha: float = 10.0, freq_table: str | None = None, **common):
        super().__init__(**common)
        self.lam, self.alpha, self.freq_table = lam, alpha, freq_table
        self._freq: torch.Tensor | None = None

    def frequencies(self, vocab_size: int, device) -> torch.Tensor:
        if self._freq is None or self._freq.shape[0] != vocab_size:
            path = self.freq_table or resources.files("boe_bench.data") / "token_freq_char.json"
            self._freq = load_frequency_table(str(path), vocab_size)
        return self._freq.to(device)

    def score(self, logits, tokens, state):
        p = logits.double().softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
        f_bg = self.frequencies(logits.shape[-1], logits.device)[tokens]
        calibrated = (-p * torch.log(f_bg + 1e-9)).clamp(max=self.alpha)
        pos = (torch.arange(state.seq_len, device=logits.device) - state.extras["block_start"]).clamp(min=0)
        return torch.exp(-self.lam * pos.double()) * calibrated

    def step(self, model, state, window, budget):
        # Positions count from the start of the current block, as in the reference.
        state.extras["block_start"] = int(window.nonzero()[0])
        super().step(model, state, window, budget)
