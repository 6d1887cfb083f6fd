"""PC-Sampler (NEUIR/PC-Sampler): position-aware weight times calibrated confidence.

Reference read: ``pc_sampler_function`` (l.31-51), ``load_baseline`` (l.80-101) and
``generate_with_pc_sampler`` (l.262-335) of ``src/generate.py`` @ 8b106b09, and
``scripts/eval_pc_sampler.sh`` for the per-task hyper-parameters.

score_i = exp(-lam * pos_i) * min(-p_i * log(f_bg(x_i) + 1e-9), alpha), with p_i the
probability of the drawn token x_i (untempered softmax), pos_i its index from the start of
the current block (the reference scores the block slice; its README's "i - |prompt|" only
agrees when one block spans the answer), and f_bg the token's frequency in a background
corpus: frequent tokens (punctuation, "the") are down-weighted, and early positions go
first. Counts per step follow the shared schedule.

Frequency tables are JSON: {"num_token": N, "p_baseline_dict": {token_id: count}} (the
reference's format; the reference's own tables load unchanged). Tokens never seen get
frequency 1/N. ``boe_bench/train/token_freq.py`` builds one from any corpus and tokenizer and
also records the tokenizer's size, which is then checked against the model's. Without
``freq_table`` the sampler takes the table a checkpoint ships beside its tokenizer
(``token_freq.json``: our ``text_mdm``), else the shipped one for the tiny char tokenizer.
"""
import json
from importlib import resources
from pathlib import Path

import torch

from boe_bench.errors import ConfigError
from boe_bench.samplers import options
from boe_bench.samplers import SAMPLERS
from boe_bench.samplers.base import LocalPolicySampler

SHIPPED_TABLE = "token_freq_char.json"


def load_frequency_table(path: str | Path, vocab_size: int, tokenizer_size: int | None = None) -> torch.Tensor:
    """[vocab_size] float64 background frequencies."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"token frequency table {str(path)!r} does not exist; build one with "
                          f"python -m boe_bench.train.token_freq")
    data = json.loads(path.read_text())
    built_for = data.get("tokenizer_vocab")
    if built_for is not None and tokenizer_size is not None and built_for != tokenizer_size:
        raise ConfigError(f"token frequency table {str(path)!r} was built for a tokenizer of {built_for} tokens "
                          f"({data.get('tokenizer')}), but the model's has {tokenizer_size}; build one for this "
                          f"model with python -m boe_bench.train.token_freq and set sampler.freq_table")
    total = data["num_token"]
    freq = torch.full((vocab_size,), 1.0 / total, dtype=torch.float64)
    for token, count in data["p_baseline_dict"].items():
        if int(token) < vocab_size:
            freq[int(token)] = count / total
    return freq


@SAMPLERS.register("pc_sampler")
class PCSampler(LocalPolicySampler):
    rank_precision = torch.float64
    score_per_position = False  # its weight reads each position's distance from the block start
    def __init__(self, lam: float = 0.25, alpha: float = 10.0, freq_table: str | None = None, **common):
        super().__init__(**common)
        options.pc_sampler(lam=lam, alpha=alpha)
        self.lam, self.alpha, self.freq_table = lam, alpha, freq_table
        self._freq: torch.Tensor | None = None

    def frequencies(self, model, vocab_size: int, device) -> torch.Tensor:
        if self._freq is None or self._freq.shape[0] != vocab_size:
            path = self.freq_table or model.token_freq_table or resources.files("boe_bench.data") / SHIPPED_TABLE
            tokenizer_size = len(model.tokenizer) if hasattr(model.tokenizer, "__len__") else None
            self._freq = load_frequency_table(str(path), vocab_size, tokenizer_size)
        return self._freq.to(device)

    def score(self, logits, tokens, state):
        p = logits.softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
        f_bg = self._freq.to(logits.device)[tokens]
        calibrated = (-p * torch.log(f_bg + 1e-9)).clamp(max=self.alpha)
        pos = (torch.arange(state.seq_len, device=logits.device) - state.extras["block_start"]).clamp(min=0)
        return torch.exp(-self.lam * pos.double()) * calibrated

    def step(self, model, state, window, budget):
        self.frequencies(model, model.vocab_size, state.x.device)
        # Positions count from the start of the current block, as in the reference.
        state.extras["block_start"] = int(window.nonzero()[0])
        super().step(model, state, window, budget)
