"""4x4 Sudoku, d1's protocol (dllm-reasoning/d1 eval/sudoku.py, parse_and_get_acc.py).

0-shot chat prompt with d1's instructions, ``<reasoning>`` prefilled, the 256-puzzle seed-42
subset; the headline metric is cell accuracy pooled over every empty cell of every puzzle
(not the solve rate, which is reported beside it).

Two readings of a filled grid, both reported:

- d1's, against the one stored solution: ``cell_accuracy`` (empty cells equal to the stored
  digit) and ``solved`` (all of them). A puzzle with few givens has several solutions, and a
  grid that solves it differently scores low here although it is right.
- by the rules, with no stored solution: ``valid_cell_accuracy`` (empty cells whose digit is
  in range and repeats in none of its row, column and box) and ``solved_valid`` (the grid is
  complete, keeps every given and breaks no rule). A correct alternative solution scores 1.0.

The paper's Sudoku numbers are compared with d1's ``cell_accuracy``.
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


def conflict_free_cells(grid: list[int], cells: list[int], box_rows: int, box_cols: int) -> int:
    """How many of ``cells`` hold a digit in 1..n that no other cell of its row, column or box
    holds (n = box_rows * box_cols; ``grid`` row-major, n*n values, 0 = empty)."""
    n = box_rows * box_cols
    if len(grid) != n * n:
        return 0

    def clash(i: int) -> bool:
        r, c = divmod(i, n)
        top, left = r - r % box_rows, c - c % box_cols
        peers = {r * n + k for k in range(n)} | {k * n + c for k in range(n)}
        peers |= {(top + a) * n + left + b for a in range(box_rows) for b in range(box_cols)}
        return any(grid[j] == grid[i] for j in peers - {i})

    return sum(1 <= grid[i] <= n and not clash(i) for i in cells)


def score_cells(puzzle: str, solution: str, answer: str) -> tuple[int, int]:
    """(correct empty cells, empty cells)."""
    empty = [i for i, c in enumerate(puzzle) if c == "0"]
    return (sum(answer[i] == solution[i] for i in empty) if answer else 0), len(empty)


@TASKS.register("sudoku")
class Sudoku(Task):
    primary_metric = "cell_accuracy"
    chat = True
    assistant_prefix = "<reasoning>"
    protocols = {"d1": "d1's 0-shot chat prompt, cell accuracy against the stored solution; "
                       "valid_cell_accuracy by the rules beside it (the only protocol)"}
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
        empties = [i for i, c in enumerate(doc["puzzle"]) if c == "0"]
        grid = [int(c) if c.isdigit() else 0 for c in answer] if answer else [0] * len(doc["puzzle"])
        valid = conflict_free_cells(grid, empties, 2, 2)
        keeps_givens = all(p in ("0", str(g)) for p, g in zip(doc["puzzle"], grid))
        return {"answer": answer, "correct_cells": correct, "empty_cells": empty, "valid_cells": valid,
                "cell_accuracy": correct / empty if empty else 1.0, "solved": float(correct == empty),
                "valid_cell_accuracy": valid / empty if empty else 1.0,
                "solved_valid": float(keeps_givens and conflict_free_cells(grid, range(len(grid)), 2, 2) == len(grid))}

    def aggregate(self, records: list[dict]) -> dict:
        if not records:
            return {}
        correct = sum(r["metrics"]["correct_cells"] for r in records)
        empty = sum(r["metrics"]["empty_cells"] for r in records)
        # Records of older runs carry no validity metrics: those are left out, not made up.
        valid = sum(r["metrics"]["valid_cells"] for r in records) if all("valid_cells" in r["metrics"] for r in records) else None
        out = {"cell_accuracy": correct / empty, "solved": sum(r["metrics"]["solved"] for r in records) / len(records),
               "correct_cells": correct, "empty_cells": empty}
        if valid is not None:
            out.update(valid_cell_accuracy=valid / empty, valid_cells=valid,
                       solved_valid=sum(r["metrics"]["solved_valid"] for r in records) / len(records))
        return out
