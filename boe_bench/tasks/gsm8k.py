"""GSM8K, lm-eval's ``gsm8k`` protocol (v3.0), the one LLaDA-Base is evaluated with.

5 shots drawn from train with ``random.Random(1234).sample``, ``Question: ...\\nAnswer:``
blocks joined by blank lines, stop at ``Question:``; scored by exact match after lm-eval's
normalisation, under a strict (``#### n``) and a flexible (last number) extraction, on the
completion cut at the stop sequences as lm-eval cuts it (``cut_at_stop``).

``data_files`` is a local copy in openai/grade-school-math's jsonl format: a plain path is the
test split (enough to score), ``{test: ..., train: ...}`` also gives the few-shot pool.
"""
from __future__ import annotations

import random
import re

from boe_bench.tasks import TASKS, d1_protocol
from boe_bench.errors import ConfigError
from boe_bench.tasks.base import Task, cut_at_stop, load_split

STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# lm-eval's regexes_to_ignore, applied to prediction and reference alike.
IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]
FEWSHOT_SEED = 1234
INVALID = "[invalid]"


def normalise(text: str) -> str:
    for pattern in IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()  # lm-eval: the regexes, then lower case (no strip)


def extract_strict(completion: str) -> str:
    match = STRICT.search(completion)
    return match.group(1).strip() if match else INVALID


def extract_flexible(completion: str) -> str:
    matches = FLEXIBLE.findall(completion)
    if not matches:
        return INVALID
    last = matches[-1]
    return next(group for group in last if group).strip()


def reference_answer(doc: dict) -> str:
    return normalise(doc["answer"])


@TASKS.register("gsm8k")
class GSM8K(Task):
    primary_metric = "exact_match_flexible"
    until = ("Question:", "</s>", "<|im_end|>")
    protocols = {"lmeval": "lm-eval's 5-shot `gsm8k`: cut at \"Question:\", exact match (strict `#### n`, flexible "
                           "last number)",
                 "d1": d1_protocol.PROTOCOL_HELP}
    id_form = "gsm8k-<row of the test split>"

    def __init__(self, data_files: str | dict | None = None, num_fewshot: int = 5, protocol: str = "lmeval"):
        super().__init__(data_files, protocol)
        if protocol == "d1":  # 0-shot chat, boxed answer: boe_bench/tasks/d1_protocol.py
            d1_protocol.use_chat_protocol(self)
        self.num_fewshot = num_fewshot
        self._shots: list[dict] | None = None

    def _file(self, split: str) -> str | None:
        if isinstance(self.data_files, str):  # a plain path is the test split
            if split == "train":
                raise ConfigError("gsm8k's few-shot prompt needs the train split too: pass "
                                  "task.data_files={test:<test.jsonl>,train:<train.jsonl>}")
            return self.data_files
        return (self.data_files or {}).get(split)

    def load_docs(self) -> list[dict]:
        rows = load_split("openai/gsm8k", "test", self._file("test"), config="main",
                          override="task.data_files=<a local test.jsonl>")
        return [{"id": f"gsm8k-{i}", **row} for i, row in enumerate(rows)]

    def fewshot_block(self) -> str:
        if self._shots is None:
            pool = load_split("openai/gsm8k", "train", self._file("train"), config="main",
                              override="task.data_files={test:<test.jsonl>,train:<train.jsonl>}"
                              ) if self.num_fewshot else []
            self._shots = random.Random(FEWSHOT_SEED).sample(pool, self.num_fewshot)
        return "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in self._shots)

    def prompt_text(self, doc: dict) -> str:
        if self.protocol == "d1":
            return d1_protocol.user_message(d1_protocol.GSM8K_SYSTEM_PROMPT, doc["question"])
        return f"{self.fewshot_block()}Question: {doc['question']}\nAnswer:"

    def score(self, doc: dict, completion: str) -> dict:
        if self.protocol == "d1":
            return d1_protocol.score_gsm8k(doc, completion)
        completion = cut_at_stop(completion, self.until)
        gold = reference_answer(doc)
        strict, flexible = extract_strict(completion), extract_flexible(completion)
        return {
            "answer": flexible,
            "exact_match_strict": float(normalise(strict) == gold),
            "exact_match_flexible": float(normalise(flexible) == gold),
        }
