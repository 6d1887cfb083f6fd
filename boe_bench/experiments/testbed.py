"""The testbed: every sampler on the self-trained puzzle model, at two difficulties.

Settings: configs/testbed/default.yaml (the committed run), key=value overrides on the command
line. Writes to reports/testbed/ (untracked; ``out=results/testbed`` replaces the committed files):
- testbed.csv: one row per (sampler, difficulty, seed): solve rate, cell accuracy, NFE,
  cost in forward-equivalents, wall-clock;
- testbed.md: mean and spread over seeds, per sampler and difficulty;
- entropy_trajectory.png/.csv: mean total masked entropy after each step, per sampler;
- tis_vs_true_drop.csv: for BoE's candidates at sampled steps, TIS next to the true drop in
  entropy after revealing that candidate (one extra forward each), with the Spearman rank
  correlation per step and the drops of BoE's and Confidence's picks in testbed.md.

    python -m boe_bench.experiments.testbed          # or: make testbed [OUT=results]
    python -m boe_bench.experiments.testbed samplers=[confidence,boe] seeds=[0] puzzles=20
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from boe_bench.cpu_memory import keep_freed_memory_or_fail
from boe_bench.errors import ConfigError
from boe_bench.experiments.config import fail, load
from boe_bench.models import build_model
from boe_bench.models.base import Denoiser
from boe_bench.samplers import Schedule
from boe_bench.samplers.base import DecodeState, entropy
from boe_bench.samplers.boe import BoESampler
from boe_bench.tasks.sudoku_grid import SudokuGrid

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


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

    def live_forward_copies(self, state, live_rows, live_embeds):
        return self.inner.live_forward_copies(state, live_rows, live_embeds)

    def live_head_copies(self, state, live_rows, live_embeds):
        return self.inner.live_head_copies(state, live_rows, live_embeds)

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


def tis_against_true_drop(model, sampler: BoESampler, task: SudokuGrid, n_puzzles: int, every: int) -> pd.DataFrame:
    """Follow BoE one cell per step and, every ``every`` steps, reveal each of its candidates
    alone (its drawn token) to measure the true one-step entropy drop, with one extra forward
    per candidate. Two drops: of the total masked entropy (the revealed cell's own entropy
    included), and of the entropy over BoE's targets (masked non-candidates), which is what
    TIS estimates. ``confidence`` marks each candidate's probability, so the pick of the
    Confidence policy among the same candidates can be compared with BoE's."""
    sampler.total_steps = task.empty_cells
    rows = []
    for doc in task.docs()[:n_puzzles]:
        state = DecodeState.start(model, [[]], task.shape.cells, gen_init=[task.initial_generation(doc, model.tokenizer)])
        window = torch.ones(task.shape.cells, dtype=torch.bool)
        budget = torch.ones(1, dtype=torch.long)
        for step in range(task.empty_cells):
            ranking = sampler.rank(model, state, window, budget, step)
            cand_mask = ranking["candidates"][0]
            score = ranking["score"][0].masked_fill(~cand_mask, float("-inf"))
            pick = int(score.argmax())
            if step % every == 0 and cand_mask.sum() > 1:
                cand = cand_mask.nonzero().flatten()
                targets = ranking["targets"][0]
                with torch.no_grad():
                    logits = model(state.x)
                    before = entropy(logits)[0]
                    revealed = state.x.repeat(len(cand), 1)
                    revealed[torch.arange(len(cand)), cand] = ranking["tokens"][0, cand]
                    after = entropy(model(revealed))
                    confidence = logits[0].softmax(-1).gather(-1, ranking["tokens"][0][:, None]).squeeze(-1)
                drop_total = (before * state.masked[0]).sum() - (after * (revealed == model.mask_id)).sum(-1)
                drop_targets = ((before - after) * targets).sum(-1)
                for i, position in enumerate(cand.tolist()):
                    rows.append({"puzzle": doc["id"], "empty_cells": task.empty_cells, "every": every, "step": step,
                                 "position": position, "tis": float(ranking["tis"][0, position]),
                                 "score": float(score[position]), "confidence": float(confidence[position]),
                                 "boe_pick": position == pick, "true_drop": float(drop_total[i]),
                                 "true_drop_targets": float(drop_targets[i])})
            chosen = torch.zeros_like(state.masked)
            chosen[0, pick] = True
            state.commit(chosen, ranking["tokens"])
    return pd.DataFrame(rows)


@dataclass
class Settings:
    """The testbed's settings; values in configs/testbed/default.yaml."""
    difficulties: list[int]             # empty cells of the easy and the hard puzzles
    seeds: list[int]                    # puzzle sets (and sampling seeds)
    puzzles: int                        # puzzles per set
    batch: int
    samplers: Optional[list[str]]       # null: every sampler config
    out: str
    drop_puzzles: int                   # puzzles for TIS vs true drop; 0 skips
    merge: Optional[list[str]]          # testbed dirs: only rewrite the report from them
    threads: Optional[int]              # torch CPU threads (null: torch's default)

    def check(self) -> None:
        known = sampler_names()
        unknown = [name for name in self.samplers or [] if name not in known]
        if unknown:
            raise ConfigError(f"unknown sampler {unknown[0]!r}; known: {', '.join(known)}")
        for name in ("puzzles", "batch", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.difficulties or not self.seeds:
            raise ConfigError("difficulties and seeds need at least one value each")
        if self.drop_puzzles < 0:
            raise ConfigError(f"drop_puzzles must be 0 (skip) or more, got {self.drop_puzzles}")


def main(argv: list[str] | None = None) -> None:
    args = load("testbed", Settings, argv, __doc__)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory_or_fail()
    out = Path(args.out)
    if args.merge:
        out.mkdir(parents=True, exist_ok=True)
        merge(args.merge, out)
        return
    model = build_model("puzzle_mdm")
    difficulties, seeds = args.difficulties, args.seeds
    for k in difficulties:  # before any run: a difficulty the grid cannot have is refused at once
        try:
            SudokuGrid(grid=model.shape.size, empty_cells=k, n_puzzles=1)
        except ConfigError as err:
            fail(str(err))
    out.mkdir(parents=True, exist_ok=True)
    rows, trajectories = [], []
    for name in args.samplers or sampler_names():
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
    drops = pd.DataFrame()
    if args.drop_puzzles:
        drop_task = SudokuGrid(grid=model.shape.size, empty_cells=difficulties[-1], n_puzzles=args.drop_puzzles, seed=99)
        drops = tis_against_true_drop(model, build("boe"), drop_task, n_puzzles=args.drop_puzzles, every=5)
        drops.to_csv(out / "tis_vs_true_drop.csv", index=False)
    write_report(frame, pd.DataFrame(trajectories), drops, out)


def merge(parts: list[str], out: Path) -> None:
    """One report from testbed runs over disjoint sampler sets (run in parallel processes)."""
    def read(name: str) -> pd.DataFrame:
        frames = []
        for part in parts:
            try:
                frames.append(pd.read_csv(Path(part) / name))
            except (FileNotFoundError, pd.errors.EmptyDataError):  # a run without that output
                continue
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    frames = {name: read(name) for name in ("testbed.csv", "entropy_trajectory.csv", "tis_vs_true_drop.csv")}
    for name, frame in frames.items():
        if not frame.empty:
            frame.to_csv(out / name, index=False)
    write_report(frames["testbed.csv"], frames["entropy_trajectory.csv"], frames["tis_vs_true_drop.csv"], out)


def write_report(frame: pd.DataFrame, trajectories: pd.DataFrame, drops: pd.DataFrame, out: Path) -> None:
    if frame.empty:
        frame = pd.DataFrame(columns=["empty_cells", "sampler", "seed", "solved", "cell_accuracy", "nfe",
                                      "cost_fwd_equiv", "wall_s"])
    summary = frame.groupby(["empty_cells", "sampler"]).agg(
        solved_mean=("solved", "mean"), solved_std=("solved", "std"), cell_acc=("cell_accuracy", "mean"),
        nfe=("nfe", "mean"), cost=("cost_fwd_equiv", "mean"), wall_s=("wall_s", "mean")).reset_index()
    def per_step(column: str, ranked_by: str = "tis") -> pd.Series:
        return drops.groupby(["puzzle", "step"]).apply(
            lambda g: spearman(torch.tensor(g[ranked_by].values), torch.tensor(g[column].values)), include_groups=False)

    lines = ["# Testbed: samplers on the self-trained 9x9 puzzle MDM", "",
             f"Solve rate over {frame['seed'].nunique()} seeds (puzzle sets), mean ± std; NFE, cost "
             "(forward-equivalents) and wall-clock per puzzle set, measured on CPU (wall-clock is indicative only "
             "on a shared machine; NFE and cost are exact).", ""]
    for k, group in summary.groupby("empty_cells"):
        lines += [f"## {k} empty cells", "", "| sampler | solved | cell acc | NFE | cost | wall s |",
                  "|---|---|---|---|---|---|"]
        for _, r in group.sort_values("solved_mean", ascending=False).iterrows():
            lines.append(f"| {r.sampler} | {r.solved_mean:.3f} ± {0 if pd.isna(r.solved_std) else r.solved_std:.3f} "
                         f"| {r.cell_acc:.3f} | {r.nfe:.1f} | {r.cost:.1f} | {r.wall_s:.1f} |")
        lines.append("")
    if not drops.empty:
        lines += ["## TIS against the true one-step entropy drop", "",
                  f"BoE (configs/sampler/boe.yaml) decoding {drops['puzzle'].nunique()} puzzles with "
                  f"{drops['empty_cells'].iloc[0]} empty cells, one cell per step; at every {drops['every'].iloc[0]}th "
                  "step each of its candidates is revealed alone (its drawn token) and the entropies measured again "
                  "with one extra forward. Spearman rank correlation between TIS and the true drop over the "
                  "candidates of one step, per step:", "",
                  "| ranking | true drop in | mean | median | min | max | steps |", "|---|---|---|---|---|---|---|"]
        for ranked_by, column, label in (
                ("tis", "true_drop", "total masked entropy (incl. the revealed cell's own)"),
                ("tis", "true_drop_targets", "entropy of BoE's targets (what TIS estimates)"),
                ("confidence", "true_drop_targets", "entropy of BoE's targets")):
            rho = per_step(column, ranked_by)
            lines.append(f"| {ranked_by} | {label} | {rho.mean():.3f} | {rho.median():.3f} | {rho.min():.3f} "
                         f"| {rho.max():.3f} | {len(rho)} |")
        steps = drops.groupby(["puzzle", "step"])
        picks = pd.DataFrame({
            "boe": steps.apply(lambda g: g.loc[g["boe_pick"], "true_drop"].iloc[0], include_groups=False),
            "confidence": steps.apply(lambda g: g.loc[g["confidence"].idxmax(), "true_drop"], include_groups=False),
            "best": steps["true_drop"].max(), "mean": steps["true_drop"].mean()})
        lines += ["", "True drop in total masked entropy (nats) of the cell each rule picks among the same "
                  "candidates, mean over the measured steps:", "",
                  "| BoE's pick | Confidence's pick | best candidate | candidate mean |", "|---|---|---|---|",
                  f"| {picks['boe'].mean():.3f} | {picks['confidence'].mean():.3f} | {picks['best'].mean():.3f} "
                  f"| {picks['mean'].mean():.3f} |", ""]
    (out / "testbed.md").write_text("\n".join(lines))
    if not trajectories.empty:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, trajectories["empty_cells"].nunique(), figsize=(12, 4), squeeze=False)
        # One colour per sampler across panels; past twenty colours, a second line style.
        names, colors = sorted(trajectories["sampler"].unique()), plt.get_cmap("tab20").colors
        for ax, (k, group) in zip(axes[0], trajectories.groupby("empty_cells")):
            for name, curve in group.groupby("sampler"):
                i = names.index(name)
                ax.plot(curve["forward"], curve["masked_entropy"], label=name, linewidth=1,
                        color=colors[i % len(colors)], linestyle="-" if i < len(colors) else "--")
            ax.set_title(f"{k} empty cells")
            ax.set_xlabel("forward pass")
            ax.set_ylabel("total masked entropy (nats)")
        handles = {label: line for ax in axes[0] for line, label in zip(*ax.get_legend_handles_labels())}
        axes[0][-1].legend(list(handles.values()), list(handles.keys()), fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "entropy_trajectory.png", dpi=120)
    print((out / "testbed.md").read_text())


if __name__ == "__main__":
    main()
