"""Sudoku decoded directly on grid tokens, for the self-trained puzzle model (issue #6).

Puzzles remove ``empty_cells`` cells, uniformly at random, from held-out grids (generated
from a seed stream the training script never uses); difficulty grows with ``empty_cells``.
A puzzle counts as solved when the completed grid is valid and keeps every clue, whether
or not it equals the grid the clues came from. ``cell_accuracy`` compares the empty cells with
that one stored grid, so with many empty cells (few clues, many solutions) a solved puzzle can
score far below 1 there; ``valid_cell_accuracy`` counts the empty cells whose digit breaks no
rule (its row, column and box hold it once), which a solved grid has at 1.0.
"""
from __future__ import annotations

import random

from boe_bench.errors import ConfigError
from boe_bench.models.puzzle import GridShape, is_valid_grid, random_grid
from boe_bench.tasks import TASKS
from boe_bench.tasks.base import Task
from boe_bench.tasks.sudoku import conflict_free_cells

EVAL_SEED_OFFSET = 10**6  # training draws grids from seeds below this


@TASKS.register("sudoku_grid")
class SudokuGrid(Task):
    primary_metric = "solved"
    protocols = {"grid": "the puzzle model's grid tokens, no prompt: solved = a valid grid keeping every clue, "
                         "cell_accuracy against the stored grid (the only protocol)"}

    def __init__(self, grid: str | int = 9, empty_cells: int = 50, n_puzzles: int = 200, seed: int = 0,
                 data_files: str | None = None, protocol: str = "grid"):
        super().__init__(data_files, protocol)
        self.shape = GridShape.named(grid)
        if not 1 <= empty_cells <= self.shape.cells:
            raise ConfigError(f"empty_cells must be in [1, {self.shape.cells}], got {empty_cells}")
        self.empty_cells, self.n_puzzles, self.seed = empty_cells, n_puzzles, seed
        cells = self.shape.cells
        self.default_schedule = {"gen_length": cells, "steps": empty_cells, "block_length": cells}

    def load_docs(self) -> list[dict]:
        rng = random.Random(EVAL_SEED_OFFSET + self.seed)
        docs = []
        for i in range(self.n_puzzles):
            solution = random_grid(self.shape, rng)
            empties = set(rng.sample(range(self.shape.cells), self.empty_cells))
            puzzle = [0 if j in empties else v for j, v in enumerate(solution)]
            docs.append({"id": f"grid{self.shape.size}-k{self.empty_cells}-{i}", "puzzle": puzzle, "solution": solution})
        return docs

    def prompt_text(self, doc: dict) -> str:
        return "".join(str(v) if v else "." for v in doc["puzzle"])

    def prompt_ids(self, doc: dict, tokenizer) -> list[int]:
        return []

    def initial_generation(self, doc: dict, tokenizer) -> list[int]:
        return [v if v else tokenizer.mask_token_id for v in doc["puzzle"]]

    def score(self, doc: dict, completion: str) -> dict:
        grid = [int(c) for c in completion if c.isdigit()]
        clues_kept = len(grid) == len(doc["puzzle"]) and all(p in (0, g) for p, g in zip(doc["puzzle"], grid))
        empties = [i for i, p in enumerate(doc["puzzle"]) if p == 0]
        correct = sum(i < len(grid) and grid[i] == doc["solution"][i] for i in empties)
        valid = conflict_free_cells(grid, empties, self.shape.box_rows, self.shape.box_cols)
        return {"answer": completion, "solved": float(clues_kept and is_valid_grid(grid, self.shape)),
                "cell_accuracy": correct / len(empties), "valid_cell_accuracy": valid / len(empties)}
