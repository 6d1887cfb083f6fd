"""OpenWebText generation, ReMDM's protocol (kuleshov-group/remdm main.py, dataloader.py):
MDLM samples 1024-token texts unconditionally (or continues a prefix), scored by MAUVE
against human OpenWebText blocks, generative perplexity under gpt2-large, and mean
per-sample unigram entropy.

Human references are built as ReMDM builds them: the last 100k OpenWebText documents,
GPT-2-tokenised, EOS after each document, concatenated per 1000 documents and cut into
``[BOS] + 1022 tokens + [EOS]`` blocks, drawn as the first item of a fresh shuffled
DataLoader iterator per sample (generator seeded with ``reference_seed``). The data is not
shipped: it comes from the hub, or from ``data_files`` (a .jsonl/.json/.csv with a ``text``
column). MAUVE and perplexity are corpus-level, computed in ``aggregate``.
"""
from __future__ import annotations

import functools
import logging

import torch

from boe_bench.errors import ConfigError
from boe_bench.scoring.text_metrics import (generative_perplexity, last_token_features, load_scorer_lm,
                                            mauve_score, unigram_entropy)
from boe_bench.tasks import TASKS
from boe_bench.tasks.base import Task, read_records

log = logging.getLogger(__name__)
MODES = ("unconditional", "prefix")
# Documents per tokenizer batch in ReMDM's datasets.map: block boundaries restart at each.
GROUP_DOCS = 1000


@functools.lru_cache(maxsize=2)
def load_text_tokenizer(name: str):
    """The tokenizer of the generated text's model (GPT-2 for MDLM); ``tiny``: the
    character tokenizer of the tiny models."""
    if name == "tiny":
        from boe_bench.models.tiny import build_char_tokenizer

        return build_char_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def wrap_blocks(token_lists: list[list[int]], block_tokens: int, bos: int, eos: int) -> list[list[int]]:
    """ReMDM's wrapped blocks: per group of documents, concatenate (EOS after each), drop
    the remainder, and frame every ``block_tokens - 2`` tokens with BOS and EOS."""
    body = block_tokens - 2
    blocks = []
    for start in range(0, len(token_lists), GROUP_DOCS):
        stream = [t for ids in token_lists[start : start + GROUP_DOCS] for t in [*ids, eos]]
        for i in range(0, len(stream) - body + 1, body):
            blocks.append([bos, *stream[i : i + body], eos])
    return blocks


def remdm_reference_order(n_blocks: int, n_samples: int, seed: int) -> list[int]:
    """Block indices ReMDM draws: ``next(iter(loader))`` on a shuffled DataLoader whose
    generator is seeded once; each new iterator consumes one int64 (its base seed) and one
    permutation from that generator. Draws are therefore with replacement."""
    generator = torch.Generator().manual_seed(seed)
    order = []
    for _ in range(n_samples):
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        order.append(int(torch.randperm(n_blocks, generator=generator)[0]))
    return order


@TASKS.register("owt")
class OpenWebText(Task):
    primary_metric = "mauve"
    protocols = {"remdm": "ReMDM's: unconditional samples (or prefix mode), MAUVE against OpenWebText blocks, "
                          "gen PPL under gpt2-large, unigram entropy (the only protocol)"}
    # Table 4: generative perplexity (lower is better) and entropy (closer to human text's).
    table_metrics = (("gen_ppl", "Gen PPL", "min"), ("entropy", "entropy", None))
    until = ()
    default_schedule = {"gen_length": 1024, "steps": 1024, "block_length": 1024}

    def __init__(self, data_files: str | None = None, protocol: str = "remdm", mode: str = "unconditional",
                 n_samples: int = 5000, prefix_tokens: int = 0, block_tokens: int = 1024, reference_seed: int = 1,
                 hub_id: str = "Skylion007/openwebtext", split: str = "train[-100000:]",
                 text_tokenizer: str = "gpt2", mauve_featurizer: str = "gpt2-large", ppl_model: str = "gpt2-large",
                 max_text_length: int = 1024, scorer_device: str = "auto", mauve_num_buckets: str | int = "auto"):
        super().__init__(data_files, protocol)
        if mode not in MODES:
            raise ConfigError(f"owt mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "prefix" and not 0 < prefix_tokens < block_tokens - 1:
            raise ConfigError(f"owt prefix mode needs 0 < prefix_tokens < block_tokens - 1, got {prefix_tokens}")
        self.mode, self.n_samples, self.prefix_tokens = mode, n_samples, prefix_tokens
        self.block_tokens, self.reference_seed = block_tokens, reference_seed
        self.hub_id, self.split = hub_id, split
        self.text_tokenizer, self.mauve_featurizer, self.ppl_model = text_tokenizer, mauve_featurizer, ppl_model
        self.max_text_length, self.mauve_num_buckets = max_text_length, mauve_num_buckets
        self.scorer_device = ("cuda" if torch.cuda.is_available() else "cpu") if scorer_device == "auto" else scorer_device

    def _documents(self) -> list[str]:
        if self.data_files:
            return [row["text"] for row in read_records(self.data_files)]
        try:
            import datasets

            return list(datasets.load_dataset(self.hub_id, split=self.split)["text"])
        except Exception as err:  # the hub raises many types; the user needs one sentence
            raise ConfigError(f"cannot load {self.hub_id!r} ({self.split}) from the hub ({type(err).__name__}); "
                              f"pass task.data_files=<.jsonl with a 'text' field>") from err

    def load_docs(self) -> list[dict]:
        tokenizer = load_text_tokenizer(self.text_tokenizer)
        encoded = tokenizer(self._documents(), add_special_tokens=False)["input_ids"]
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        blocks = wrap_blocks(encoded, self.block_tokens, bos, tokenizer.eos_token_id)
        if not blocks:
            raise ConfigError(f"the OpenWebText documents hold fewer than {self.block_tokens} tokens: no reference block")
        docs = []
        for i, index in enumerate(remdm_reference_order(len(blocks), self.n_samples, self.reference_seed)):
            block = blocks[index]
            prefix = tokenizer.decode(block[: self.prefix_tokens]) if self.mode == "prefix" else ""
            docs.append({"id": f"owt-{i}", "block": index, "reference": tokenizer.decode(block), "prefix": prefix})
        return docs

    def prompt_text(self, doc: dict) -> str:
        return doc["prefix"]

    def prompt_ids(self, doc: dict, tokenizer) -> list[int]:
        return tokenizer(doc["prefix"], add_special_tokens=False)["input_ids"] if doc["prefix"] else []

    def score(self, doc: dict, completion: str) -> dict:
        text = doc["prefix"] + completion
        ids = load_text_tokenizer(self.text_tokenizer)(text, add_special_tokens=False)["input_ids"]
        return {"answer": text, "entropy": unigram_entropy(ids)}

    def aggregate(self, records: list[dict]) -> dict:
        if not records:
            return {}
        references = {d["id"]: d["reference"] for d in self.docs()}
        samples = [r["answer"] or "" for r in records]
        metrics = {"entropy": sum(r["metrics"]["entropy"] for r in records) / len(records)}
        model, tokenizer = load_scorer_lm(self.ppl_model, self.scorer_device)
        metrics["gen_ppl"] = generative_perplexity(samples, model, tokenizer, max_length=self.max_text_length)
        metrics.update(self._mauve([references[r["id"]] for r in records], samples))
        return metrics

    def _mauve(self, references: list[str], samples: list[str]) -> dict:
        try:
            import mauve  # noqa: F401
        except ImportError:
            log.warning("MAUVE skipped: the mauve-text package is not installed (pip install 'boe_bench[mauve]')")
            return {}
        if sum(bool(s) for s in samples) < 2:
            log.warning("MAUVE skipped: it needs at least 2 non-empty samples")
            return {}
        model, tokenizer = load_scorer_lm(self.mauve_featurizer, self.scorer_device)
        p = last_token_features(references, model, tokenizer, self.max_text_length)
        q = last_token_features(samples, model, tokenizer, self.max_text_length)
        buckets = self.mauve_num_buckets if self.mauve_num_buckets == "auto" else int(self.mauve_num_buckets)
        return {"mauve": mauve_score(p, q, num_buckets=buckets)}

    def describe(self) -> dict:
        return {**super().describe(), "mode": self.mode, "prefix_tokens": self.prefix_tokens,
                "mauve_featurizer": self.mauve_featurizer, "ppl_model": self.ppl_model}
