"""Which BoE reading should be the default: solve rate and cost of each ``rows``/``targets``
reading on the self-trained puzzle model, next to Confidence, on the same puzzles.

The held-out 9x9 puzzles with 70 empty cells (the grid as one block), decoded at 70 steps
(one cell per step) and at fewer steps (several cells per step, where ranking matters
most). Per point: solve rate with a 95% Wilson interval, and the paired difference to
``rows: masked`` on the same puzzles with a 95% normal interval; cost in
forward-equivalents (A.3.4) and wall-clock seconds per puzzle (indicative on a shared CPU).

    python -m boe_bench.bench.readings                    # -> runs/bench/boe_readings.{csv,md}
    python -m boe_bench.bench.readings --out results/bench/boe_readings.csv
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import pandas as pd

from boe_bench.models import build_model
from boe_bench.bench.common import fail_cleanly, machine_name, out_path, setup_device
from boe_bench.samplers import Schedule, build_sampler
from boe_bench.tasks.sudoku_grid import SudokuGrid

READINGS = {
    "confidence": dict(name="confidence"),
    "boe_masked": dict(name="boe", rows="masked", rho=0.25),
    "boe_candidates": dict(name="boe", rows="candidates", rho=0.25),
    "boe_candidates_rho010": dict(name="boe", rows="candidates", rho=0.10),
    "boe_candidates_rho050": dict(name="boe", rows="candidates", rho=0.50),
}


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def decode(model, spec: dict, task: SudokuGrid, steps: int, batch: int, seed: int) -> dict:
    sampler = build_sampler(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
    cells = task.shape.cells
    schedule = Schedule(gen_length=cells, steps=steps, block_length=cells)
    docs = task.docs()
    solved, cost, started = [], [], time.perf_counter()
    for start in range(0, len(docs), batch):
        chunk = docs[start : start + batch]
        init = [task.initial_generation(d, model.tokenizer) for d in chunk]
        out = sampler.generate(model, [[] for _ in chunk], schedule, seed=seed + start, gen_init=init)
        for doc, text, acc in zip(chunk, out.texts, out.accounting):
            solved.append(float(task.score(doc, text)["solved"]))
            cost.append(acc.cost_fwd_equiv)
    return {"solved": solved, "cost_fwd_equiv": statistics.mean(cost),
            "wall_s_per_puzzle": (time.perf_counter() - started) / len(docs)}


def report(frame: pd.DataFrame, per_puzzle: dict, out: Path) -> None:
    lines = ["# BoE readings on the puzzle model (`python -m boe_bench.bench.readings`)", "",
             f"9x9 puzzles with 70 empty cells, {int(frame['n'].iloc[0])} per point (same puzzles for every "
             "reading), the grid as one block, argmax tokens. Solve rate with a 95% Wilson interval; "
             "`vs masked`: paired difference to `rows: masked` on the same puzzles (95% normal interval); "
             "cost in forward-equivalents per puzzle (A.3.4); wall-clock per puzzle on the shared 2-core CPU "
             "(indicative only).", "",
             "| steps | reading | solved | 95% CI | vs masked | cost (fwd) | wall s / puzzle |",
             "|---|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        base = per_puzzle.get((r.steps, "boe_masked"))
        mine = per_puzzle[(r.steps, r.reading)]
        diff = ""
        if base is not None and r.reading != "boe_masked":
            d = [a - b for a, b in zip(mine, base)]
            se = statistics.pstdev(d) / math.sqrt(len(d))
            diff = f"{statistics.mean(d):+.3f} ± {1.96 * se:.3f}"
        lines.append(f"| {r.steps} | {r.reading} | {r.solved:.3f} | [{r.ci_low:.3f}, {r.ci_high:.3f}] | {diff} "
                     f"| {r.cost_fwd_equiv:.1f} | {r.wall_s_per_puzzle:.2f} |")
    (out.with_suffix(".md")).write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="70,56,35")
    parser.add_argument("--readings", default="confidence,boe_masked,boe_candidates")
    parser.add_argument("--puzzles", type=int, default=200)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="CSV (default runs/bench/boe_readings.csv); markdown beside it")
    args = parser.parse_args()
    setup_device("cpu", args.threads)  # threads, and freed memory kept, as every CPU bench
    out = out_path(args.out, "boe_readings.csv")
    model = build_model("puzzle_mdm")
    machine = machine_name("cpu")
    task = SudokuGrid(grid=9, empty_cells=70, n_puzzles=args.puzzles, seed=0)
    rows, per_puzzle = [], {}
    for steps in (int(s) for s in args.steps.split(",")):
        for reading in args.readings.split(","):
            result = decode(model, READINGS[reading], task, steps, args.batch, args.seed)
            n, k = len(result["solved"]), int(sum(result["solved"]))
            low, high = wilson(k, n)
            per_puzzle[(steps, reading)] = result["solved"]
            rows.append({"steps": steps, "reading": reading, "n": n, "solved": k / n, "ci_low": low, "ci_high": high,
                         "cost_fwd_equiv": result["cost_fwd_equiv"], "wall_s_per_puzzle": result["wall_s_per_puzzle"],
                         "machine": machine})
            print(rows[-1], flush=True)
            frame = pd.DataFrame(rows)
            frame.to_csv(out, index=False)
            pd.DataFrame([{"steps": s, "reading": r, "puzzle": i, "solved": v}
                          for (s, r), vals in per_puzzle.items() for i, v in enumerate(vals)]).to_csv(
                out.with_name(out.stem + "_per_puzzle.csv"), index=False)
            report(frame, per_puzzle, out)


if __name__ == "__main__":
    fail_cleanly(main)
