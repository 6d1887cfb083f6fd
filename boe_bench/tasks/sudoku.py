"""4x4 Sudoku, d1's protocol (dllm-reasoning/d1 eval/sudoku.py, parse_and_get_acc.py).

0-shot chat prompt with d1's instructions, ``<reasoning>`` prefilled, the 256-puzzle seed-42
subset; the headline metric is cell accuracy pooled over every empty cell of every puzzle
(not the solve rate, which is reported beside it).
"""
from __future__ import annotations

import json
import re
from importlib import resources

from boe_bench.tasks import TASKS
from boe_bench.tasks.base import Task, read_records

SYSTEM_PROMPT = (
    "\nPlease solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading "
    "left-to-right, top-to-bottom, where '0' represents empty cells.\n\nRules:\n- Fill empty cells with digits 1-4\n"
    "- Each row must contain digits 1-4 exactly once\n- Each column must contain digits 1-4 exactly once\n"
    "- Each 2x2 box must contain digits 1-4 exactly once\n\nImportant: Your solution must be a COMPLETE "
    "16-character string with only the digits 1-4, representing your final solved grid.\n\nRespond in this exact "
    "format:\n<reasoning>\nYour step-by-step solving process\n</reasoning>\n<answer>\n[16-character solution string "
    "with no spaces or separators]\n</answer>\n"
)
# d1 tries these in order on the decoded generation and keeps the first non-empty capture.
ANSWER_PATTERNS = [
    r"<answer>.*?```\s*([\d\s]+)```",
    r"<answer>(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|</answer>)",
    r"</answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)",
    r".*?(\d{16})\s*</answer>",
    r"\b(\d{16})\b",
]
# d1 parses text decoded with special tokens; ours stops at EOS, so the end-of-turn marker
# it would have seen is put back before parsing.
END_OF_TURN = "<|eot_id|>"


def extract_grid(completion: str) -> str:
    text = completion + END_OF_TURN
    for pattern in ANSWER_PATTERNS:
        match = re.search(pattern, text, re.DOTALL)
        if match and match.group(1).strip():
            digits = re.sub(r"\s", "", match.group(1))
            return digits[:16].ljust(16, "0")
    return ""


def score_cells(puzzle: str, solution: str, answer: str) -> tuple[int, int]:
    """(correct empty cells, empty cells)."""
    empty = [i for i, c in enumerate(puzzle) if c == "0"]
    return (sum(answer[i] == solution[i] for i in empty) if answer else 0), len(empty)


@TASKS.register("sudoku")
class Sudoku(Task):
    primary_metric = "cell_accuracy"
    chat = True
    assistant_prefix = "<reasoning>"
    protocols = {"d1": "d1's 0-shot chat prompt, cell accuracy (the only protocol)"}
    id_form = "sudoku-<row of the 500-row CSV>"

    def __init__(self, data_files: str | None = None, subset: str = "d1_256", protocol: str = "d1"):
        super().__init__(data_files, protocol)
        self.subset = subset

    def load_docs(self) -> list[dict]:
        data = resources.files("boe_bench.data")
        rows = read_records(self.data_files) if self.data_files else read_records(data / "4x4_test_sudoku.csv")
        if self.subset == "d1_256":
            order = json.loads((data / "sudoku_eval_subsample_seed42.json").read_text())["indices"]
        elif self.subset == "all":
            order = range(len(rows))
        else:
            from boe_bench.errors import ConfigError

            raise ConfigError(f"sudoku subset must be 'd1_256' or 'all', got {self.subset!r}")
        return [{"id": f"sudoku-{i}", "puzzle": rows[i]["Puzzle"], "solution": rows[i]["Solution"]} for i in order]

    def prompt_text(self, doc: dict) -> str:
        return SYSTEM_PROMPT + "\n\n" + f"Solve the following Sudoku puzzle: {doc['puzzle']}\n"

    def score(self, doc: dict, completion: str) -> dict:
        answer = extract_grid(completion)
        correct, empty = score_cells(doc["puzzle"], doc["solution"], answer)
        return {"answer": answer, "correct_cells": correct, "empty_cells": empty,
                "cell_accuracy": correct / empty if empty else 1.0, "solved": float(correct == empty)}

    def aggregate(self, records: list[dict]) -> dict:
        if not records:
            return {}
        correct = sum(r["metrics"]["correct_cells"] for r in records)
        empty = sum(r["metrics"]["empty_cells"] for r in records)
        return {"cell_accuracy": correct / empty, "solved": sum(r["metrics"]["solved"] for r in records) / len(records),
                "correct_cells": correct, "empty_cells": empty}
