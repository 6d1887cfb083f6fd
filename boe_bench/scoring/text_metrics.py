"""Quality metrics for free text generation, as ReMDM reports them for OpenWebText
(kuleshov-group/remdm main.py, diffusion.py): MAUVE against human text, generative
perplexity under an autoregressive LM, and per-sample unigram entropy.

The scoring LM (gpt2-large in the paper) is a name: a hub id, or ``tiny-gpt2`` for a tiny
random GPT-2 over the character tokenizer, built in-process so tests need no download (its
numbers mean nothing).
"""
from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F

TINY_SCORER = "tiny-gpt2"


def unigram_entropy(token_ids: Sequence[int]) -> float:
    """Entropy (nats) of the empirical token distribution of one sample: a diversity
    measure (repetitive text scores low), not a model entropy."""
    if not token_ids:
        return 0.0
    counts = torch.tensor(list(Counter(token_ids).values()), dtype=torch.float64)
    return float(torch.special.entr(counts / counts.sum()).sum())


def build_tiny_gpt2(seed: int = 0, n_layer: int = 2, n_embd: int = 32, n_head: int = 2, n_positions: int = 1024):
    """(model, tokenizer): a random float64 GPT-2 over the character tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from boe_bench.models.tiny import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).to(torch.float64).eval(), tokenizer


@functools.lru_cache(maxsize=2)
def load_scorer_lm(name: str, device: str = "cpu"):
    """(causal LM in fp32/fp64, its tokenizer), cached: MAUVE features and
    generative perplexity use the same gpt2-large in the paper's setting."""
    if name == TINY_SCORER:
        model, tokenizer = build_tiny_gpt2()
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from boe_bench.errors import ConfigError

        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32).eval()
        except OSError as err:
            raise ConfigError(f"cannot load the scoring model {name!r} (hub id or local path): {err}") from err
    return model.to(device), tokenizer


@torch.no_grad()
def last_token_features(texts: Sequence[str], model, tokenizer, max_length: int = 1024) -> torch.Tensor:
    """MAUVE's featurisation: the final-layer hidden state at the last token of each text,
    truncated to ``max_length`` tokens, one text per forward. Empty texts are dropped, as
    MAUVE drops them."""
    device = next(model.parameters()).device
    features = []
    for text in texts:
        if not text:
            continue
        ids = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")["input_ids"]
        if ids.shape[1] == 0:
            continue
        hidden = model(input_ids=ids.to(device), output_hidden_states=True).hidden_states[-1]
        features.append(hidden[0, -1].double().cpu())
    return torch.stack(features)


# ReMDM's call leaves MAUVE at its package defaults; these are them, named.
MAUVE_DEFAULTS = dict(num_buckets="auto", pca_max_data=-1, kmeans_explained_var=0.9, kmeans_num_redo=5,
                      kmeans_max_iter=500, mauve_scaling_factor=5, divergence_curve_discretization_size=25,
                      seed=25)


def mauve_score(p_features: torch.Tensor, q_features: torch.Tensor, **settings) -> float:
    """MAUVE of model features ``q`` against human features ``p`` (``pip install mauve-text``)."""
    try:
        import mauve
    except ImportError as err:
        raise ImportError("MAUVE needs the mauve-text package: pip install 'boe_bench[mauve]'") from err
    options = {**MAUVE_DEFAULTS, **settings}
    result = mauve.compute_mauve(p_features=p_features.numpy(), q_features=q_features.numpy(), verbose=False,
                                 **options)
    return float(result.mauve)


@torch.no_grad()
def perplexity_terms(texts: Sequence[str], model, tokenizer, max_length: int = 1024,
                     batch_size: int = 1) -> list[tuple[float, float]]:
    """Per text, (summed NLL, number of scored tokens) under the scoring LM, retokenised.

    As ReMDM: all texts are tokenised together (truncated to ``max_length``, padded with
    EOS to the longest), the first token is not predicted, and a position counts when its
    token is not EOS or is the first EOS of its row (so one EOS, or the first pad, is
    scored and the rest of the padding is not). Per-text terms let the report bootstrap
    the corpus perplexity over examples.
    """
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    rows = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"] if texts else []
    if not rows:
        return []
    longest = max(len(row) for row in rows)
    # Padded with EOS whatever the tokenizer's pad token: the mask below relies on it.
    ids = torch.tensor([row + [eos] * (longest - len(row)) for row in rows])
    attention = torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in rows])
    terms = []
    for start in range(0, ids.shape[0], batch_size):
        rows, mask = ids[start : start + batch_size].to(device), attention[start : start + batch_size].to(device)
        logits = model(rows, attention_mask=mask).logits
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2).double(), rows[:, 1:], reduction="none")
        first_eos = (rows == eos).cumsum(-1) == 1
        weight = (first_eos | (rows != eos))[:, 1:].double()
        terms.extend(zip((nll * weight).sum(-1).tolist(), weight.sum(-1).tolist()))
    return terms


def generative_perplexity(texts: Sequence[str], model, tokenizer, max_length: int = 1024,
                          batch_size: int = 1) -> float:
    """exp of the token-weighted mean NLL of the texts: exp(ΣNLL / Σtokens) over
    ``perplexity_terms``."""
    terms = perplexity_terms(texts, model, tokenizer, max_length, batch_size)
    total_nll, total_weight = sum(t[0] for t in terms), sum(t[1] for t in terms)
    return math.exp(total_nll / total_weight) if total_weight else float("nan")
