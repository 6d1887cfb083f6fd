"""HumanEval, lm-eval's ``humaneval`` protocol: 0-shot completion of the function from its
signature and docstring, cut at lm-eval's stop sequences; the program is
prompt + completion + "\\n" + test + "\\n" + ``check(entry_point)``, run in the sandbox; pass@1.

Data: the hub's ``openai/openai_humaneval`` test split, or ``data_files`` pointing at
openai/human-eval's ``HumanEval.jsonl`` (or the ``.jsonl.gz`` it ships).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from boe_bench.errors import ConfigError
from boe_bench.tasks import TASKS
from boe_bench.tasks.base import load_split
from boe_bench.tasks.code import CodeTask


@TASKS.register("humaneval")
class HumanEval(CodeTask):
    until = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")

    def load_docs(self) -> list[dict]:
        if isinstance(self.data_files, str) and self.data_files.endswith(".gz"):
            rows = read_gzip_jsonl(self.data_files)
        else:
            rows = load_split("openai/openai_humaneval", "test", self.data_files)
        missing = [k for k in ("task_id", "prompt", "test", "entry_point") if rows and k not in rows[0]]
        if missing:
            kind = " (it looks like MBPP: use task=mbpp)" if rows and "test_list" in rows[0] else ""
            raise ConfigError(f"data file {self.data_files!r} is not HumanEval: its rows lack {missing}{kind}")
        return [{"id": row["task_id"], **row} for row in rows]

    def prompt_text(self, doc: dict) -> str:
        return doc["prompt"]

    def program_parts(self, doc: dict, completion: str) -> tuple[str, str]:
        return f"{doc['prompt']}{completion}\n", f"{doc['test']}\ncheck({doc['entry_point']})\n"

    def strict_parts(self, doc: dict, tests: str) -> tuple[str | None, list[str]]:
        # The prompt alone defines the helpers some tests use (encode_cyclic, poly, ...); the
        # solution gives the entry point only.
        return doc["prompt"], [doc["entry_point"]]


def read_gzip_jsonl(path: str) -> list[dict]:
    if not Path(path).exists():
        raise ConfigError(f"data file {path!r} does not exist")
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]
