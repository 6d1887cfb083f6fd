"""The testbed: every sampler on the self-trained puzzle model, at two difficulties.

Writes to results/testbed/:
- testbed.csv: one row per (sampler, difficulty, seed): solve rate, cell accuracy, NFE,
  cost in forward-equivalents, wall-clock;
- testbed.md: mean and spread over seeds, per sampler and difficulty;
- entropy_trajectory.png/.csv: mean total masked entropy after each step, per sampler;
- tis_vs_true_drop.csv: for BoE's candidates at sampled steps, TIS next to the true drop in
  total masked entropy after revealing that candidate (one extra forward each), with the
  Spearman rank correlation per step in testbed.md.

    python scripts/testbed.py                 # or: make testbed
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from boe_bench.models import build_model
from boe_bench.models.base import Denoiser
from boe_bench.samplers import Schedule
from boe_bench.samplers.base import DecodeState
from boe_bench.samplers.boe import BoESampler, entropy
from boe_bench.tasks.sudoku_grid import SudokuGrid

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class EntropyRecorder(Denoiser):
    """A denoiser that defers to another and records, for every full forward, the mean over
    the batch of the total entropy over the masked cells of the canvas it was shown. Each
    ``generate`` call gets its own trajectory, since adaptive samplers make a varying number
    of forwards per batch."""

    def __init__(self, model: Denoiser):
        super().__init__()
        self.inner, self.trajectories = model, []
        for name in ("tokenizer", "mask_id", "pad_id", "eos_ids", "vocab_size", "logit_shift", "time_conditioned"):
            setattr(self, name, getattr(model, name))

    @property
    def embedding_matrix(self):
        return self.inner.embedding_matrix

    def start_batch(self) -> None:
        self.trajectories.append([])

    def forward_rows(self, embeds, attention_mask=None, time=None, capture=False, ids=None):
        rows, state = self.inner.forward_rows(embeds, attention_mask, time, capture, ids)
        if ids is not None and self.trajectories:
            self.trajectories[-1].append((entropy(rows.detach()) * (ids == self.mask_id)).sum(-1).mean().item())
        return rows, state

    def live_forward(self, state, live_rows, live_embeds):
        return self.inner.live_forward(state, live_rows, live_embeds)

    def mean_trajectory(self) -> list[float]:
        """Forward by forward, the mean over the batches that made that many forwards."""
        longest = max(map(len, self.trajectories), default=0)
        return [statistics.mean(t[i] for t in self.trajectories if i < len(t)) for i in range(longest)]


def sampler_names() -> list[str]:
    return sorted(p.stem for p in (CONFIGS / "sampler").glob("*.yaml"))


def build(name: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return instantiate(compose(config_name="config", overrides=[f"sampler={name}"]).sampler)


def evaluate(model, sampler, task: SudokuGrid, batch: int, seed: int, record=None) -> dict:
    docs = task.docs()
    schedule = Schedule(**task.default_schedule)
    records, nfe, cost, started = [], [], [], time.perf_counter()
    for start in range(0, len(docs), batch):
        chunk = docs[start : start + batch]
        init = [task.initial_generation(d, model.tokenizer) for d in chunk]
        if record is not None:
            record.start_batch()
        out = sampler.generate(record or model, [[] for _ in chunk], schedule, seed=seed + start, gen_init=init)
        for doc, text, acc in zip(chunk, out.texts, out.accounting):
            records.append({"metrics": task.score(doc, text)})
            nfe.append(acc.nfe)
            cost.append(acc.cost_fwd_equiv)
    metrics = task.aggregate(records)
    return {"solved": metrics["solved"], "cell_accuracy": metrics["cell_accuracy"], "nfe": statistics.mean(nfe),
            "cost_fwd_equiv": statistics.mean(cost), "wall_s": time.perf_counter() - started}


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


def tis_against_true_drop(model, task: SudokuGrid, n_puzzles: int, every: int) -> pd.DataFrame:
    """Follow BoE (rho = 1: every masked cell is a candidate) and, every ``every`` steps,
    reveal each candidate alone to measure the true one-step entropy drop."""
    sampler = BoESampler(rho=1.0)
    sampler.total_steps = task.empty_cells
    rows = []
    for doc in task.docs()[:n_puzzles]:
        state = DecodeState.start(model, [[]], task.shape.cells, gen_init=[task.initial_generation(doc, model.tokenizer)])
        window = torch.ones(task.shape.cells, dtype=torch.bool)
        for step in range(task.empty_cells):
            budget = torch.ones(1, dtype=torch.long)
            ranking = sampler.rank(model, state, window, budget, step)
            if step % every == 0:
                cand = ranking["candidates"][0].nonzero().flatten()
                with torch.no_grad():
                    before = (entropy(model(state.x)) * state.masked).sum().item()
                    revealed = state.x.repeat(len(cand), 1)
                    revealed[torch.arange(len(cand)), cand] = ranking["tokens"][0, cand]
                    after = (entropy(model(revealed)) * (revealed == model.mask_id)).sum(-1)
                for position, tis, drop in zip(cand.tolist(), ranking["tis"][0, cand].tolist(),
                                               (before - after).tolist()):
                    rows.append({"puzzle": doc["id"], "step": step, "position": position, "tis": tis,
                                 "true_drop": drop})
            chosen = torch.zeros_like(state.masked)
            chosen[0, ranking["score"][0].masked_fill(~ranking["candidates"][0], float("-inf")).argmax()] = True
            state.commit(chosen, ranking["tokens"])
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--difficulties", default="60,70", help="empty cells of the easy and the hard puzzles")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--puzzles", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--samplers", default=None, help="comma-separated; default: every sampler config")
    parser.add_argument("--out", default="results/testbed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model("puzzle_mdm")
    difficulties = [int(k) for k in args.difficulties.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, trajectories = [], []
    for name in (args.samplers.split(",") if args.samplers else sampler_names()):
        try:
            sampler = build(name)
        except Exception as err:  # a sampler this model cannot run is reported, not fatal
            print(f"skip {name}: {type(err).__name__}: {err}")
            continue
        for k in difficulties:
            for seed in seeds:
                task = SudokuGrid(grid=model.shape.size, empty_cells=k, n_puzzles=args.puzzles, seed=seed)
                recorder = EntropyRecorder(model) if seed == seeds[0] else None
                try:
                    result = evaluate(model, sampler, task, args.batch, seed, recorder)
                except Exception as err:
                    print(f"skip {name} at k={k}: {type(err).__name__}: {err}")
                    break
                rows.append({"sampler": name, "empty_cells": k, "seed": seed, **result})
                print(rows[-1], flush=True)
                if recorder is not None:
                    trajectories += [{"sampler": name, "empty_cells": k, "forward": i, "masked_entropy": float(v)}
                                     for i, v in enumerate(recorder.mean_trajectory())]
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "testbed.csv", index=False)
    pd.DataFrame(trajectories).to_csv(out / "entropy_trajectory.csv", index=False)
    drops = tis_against_true_drop(model, SudokuGrid(grid=model.shape.size, empty_cells=difficulties[-1],
                                                    n_puzzles=5, seed=99), n_puzzles=5, every=10)
    drops.to_csv(out / "tis_vs_true_drop.csv", index=False)
    write_report(frame, pd.DataFrame(trajectories), drops, out)


def write_report(frame: pd.DataFrame, trajectories: pd.DataFrame, drops: pd.DataFrame, out: Path) -> None:
    summary = frame.groupby(["empty_cells", "sampler"]).agg(
        solved_mean=("solved", "mean"), solved_std=("solved", "std"), cell_acc=("cell_accuracy", "mean"),
        nfe=("nfe", "mean"), cost=("cost_fwd_equiv", "mean"), wall_s=("wall_s", "mean")).reset_index()
    per_step = drops.groupby(["puzzle", "step"]).apply(
        lambda g: spearman(torch.tensor(g["tis"].values), torch.tensor(g["true_drop"].values)), include_groups=False)
    lines = ["# Testbed: samplers on the self-trained 9x9 puzzle MDM", "",
             f"Solve rate over {frame['seed'].nunique()} seeds (puzzle sets), mean ± std; NFE, cost "
             "(forward-equivalents) and wall-clock per puzzle set, measured on a 2-core CPU.", ""]
    for k, group in summary.groupby("empty_cells"):
        lines += [f"## {k} empty cells", "", "| sampler | solved | cell acc | NFE | cost | wall s |",
                  "|---|---|---|---|---|---|"]
        for _, r in group.sort_values("solved_mean", ascending=False).iterrows():
            lines.append(f"| {r.sampler} | {r.solved_mean:.3f} ± {0 if pd.isna(r.solved_std) else r.solved_std:.3f} "
                         f"| {r.cell_acc:.3f} | {r.nfe:.1f} | {r.cost:.1f} | {r.wall_s:.1f} |")
        lines.append("")
    lines += ["## TIS against the true one-step entropy drop", "",
              f"BoE (rho = 1) on 5 puzzles; at every 10th step each candidate is revealed alone and the drop in "
              f"total masked entropy measured with one extra forward. Spearman rank correlation between TIS and "
              f"the true drop over the candidates of a step: mean {per_step.mean():.3f}, median "
              f"{per_step.median():.3f}, min {per_step.min():.3f}, max {per_step.max():.3f} over {len(per_step)} steps.",
              ""]
    (out / "testbed.md").write_text("\n".join(lines))
    if not trajectories.empty:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, trajectories["empty_cells"].nunique(), figsize=(12, 4), squeeze=False)
        for ax, (k, group) in zip(axes[0], trajectories.groupby("empty_cells")):
            for name, curve in group.groupby("sampler"):
                ax.plot(curve["forward"], curve["masked_entropy"], label=name, linewidth=1)
            ax.set_title(f"{k} empty cells")
            ax.set_xlabel("forward pass")
            ax.set_ylabel("total masked entropy (nats)")
        axes[0][-1].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "entropy_trajectory.png", dpi=120)
    print((out / "testbed.md").read_text())


if __name__ == "__main__":
    main()
