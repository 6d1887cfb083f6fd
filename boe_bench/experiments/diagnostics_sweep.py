"""Figure-4-style sweep on the puzzle model for the BoE diagnostics.

Runs `python -m boe_bench` once per (sampler, steps, puzzle set) with its own out_dir under
<runs>/ (runs/diagnostics_sweep), then writes <out>/sweep.csv (one row per finished run there),
sweep.md (solve rate mean ± std over the puzzle sets, NFE, cost) and sweep.png, and
<out>/diagnostics.{csv,md} from the `python -m boe_bench.diagnose` summaries under
<diagnose_root>/*/*/. Settings: configs/diagnostics_sweep/default.yaml (the committed sweep)
and exact.yaml (its boe_exact pass), key=value overrides on the command line. <out> is
reports/diagnostics (untracked) unless given: `out=results/diagnostics` replaces the committed
files. A finished run is not redone (the runner resumes), so re-running only fills gaps.

    python -m boe_bench.experiments.diagnostics_sweep                      # or: make diagnostics_sweep
    python -m boe_bench.experiments.diagnostics_sweep --config-name=exact
    python -m boe_bench.experiments.diagnostics_sweep sets=[0] steps=[35] limit=4 samplers=[confidence,boe]
    python -m boe_bench.experiments.diagnostics_sweep report_only=true
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from boe_bench.errors import ConfigError
from boe_bench.experiments.config import CONFIGS, load

RUNS = Path("runs/diagnostics_sweep")
OUT = Path("reports/diagnostics")


@dataclass
class Settings:
    """The sweep's settings; values in configs/diagnostics_sweep/default.yaml."""
    sets: list[int]                          # puzzle sets (task.seed)
    steps: list[int]
    limit: int                               # puzzles per set
    batch: int
    samplers: list[str]                      # configs/sampler names, each a label of its own
    variants: Optional[dict[str, list[str]]]  # label -> overrides: a sampler variant under its own label
    report_only: bool                        # only rewrite the report from the finished runs
    runs: str                                # where the runs go (one directory per cell)
    out: str                                 # where the report goes
    diagnose_root: Optional[str]             # diagnose runs to tabulate (<root>/<set>/<sampler>/summary.json; null: out)

    def check(self) -> None:
        known = sorted(p.stem for p in (CONFIGS / "sampler").glob("*.yaml"))
        unknown = [name for name in self.samplers if name not in known]
        if unknown:
            raise ConfigError(f"unknown sampler {unknown[0]!r}; known: {', '.join(known)}")
        if self.limit < 1 or self.batch < 1:
            raise ConfigError(f"limit and batch must be at least 1, got limit={self.limit} batch={self.batch}")


def run_cell(label: str, overrides: list[str], steps: int, puzzle_set: int, limit: int, batch: int,
             runs: Path = RUNS) -> None:
    out_dir = runs / label / f"set{puzzle_set}-s{steps}-n{limit}"
    command = [sys.executable, "-m", "boe_bench", *overrides, f"steps={steps}", f"task.seed={puzzle_set}",
               f"limit={limit}", f"batch_size={batch}", "progress=false", f"out_dir={out_dir}"]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})


def collect(runs: Path = RUNS) -> pd.DataFrame:
    rows = []
    for summary in sorted(runs.glob("*/*/summary.json")):
        data = json.loads(summary.read_text())
        label = summary.parent.parent.name
        puzzle_set = int(summary.parent.name.split("-")[0].removeprefix("set"))
        rows.append({"sampler": label, "steps": data["schedule"]["steps"], "puzzle_set": puzzle_set,
                     "n": data["n"], "solved": data["metrics"]["solved"], "cell_accuracy": data["metrics"]["cell_accuracy"],
                     "nfe": data["mean_nfe"], "cost_fwd_equiv": data["mean_cost_fwd_equiv"],
                     "wall_s": data["generation_wall_s"], "device": data["environment"]["device"]})
    return pd.DataFrame(rows)


def report(frame: pd.DataFrame, out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "sweep.csv", index=False)
    agg = frame.groupby(["sampler", "steps"]).agg(
        solved=("solved", "mean"), sd=("solved", "std"), sets=("solved", "size"), n=("n", "sum"),
        nfe=("nfe", "mean"), cost=("cost_fwd_equiv", "mean")).reset_index()
    lines = ["# Puzzle sweep: solve rate against steps (9x9, 70 empty cells)", "",
             "Mean ± std over puzzle sets (task.seed), each set decoded in full; n = puzzles in all sets. "
             "NFE and cost (forward-equivalents, A.3.4) per puzzle. Measured on a shared 2-core CPU VM.", "",
             "| sampler | steps | solved | sets | n | NFE | cost |", "|---|---|---|---|---|---|---|"]
    for _, r in agg.sort_values(["steps", "sampler"]).iterrows():
        sd = 0.0 if pd.isna(r.sd) else r.sd
        lines.append(f"| {r.sampler} | {r.steps} | {r.solved:.3f} ± {sd:.3f} | {r.sets} | {r.n} | {r.nfe:.1f} "
                     f"| {r.cost:.1f} |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, g in agg.groupby("sampler"):
        g = g.sort_values("steps")
        sd = g["sd"].fillna(0)
        axes[0].errorbar(g["steps"], g["solved"], yerr=sd, label=name, marker="o", capsize=3)
        axes[1].errorbar(g["cost"], g["solved"], yerr=sd, label=name, marker="o", capsize=3)
    axes[0].set_xlabel("steps")
    axes[1].set_xlabel("cost (forward-equivalents per puzzle)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("solved")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=120)
    print((out / "sweep.md").read_text())


def diagnostics_table(out: Path = OUT, diagnose_root: Path | None = None) -> None:
    """<out>/diagnostics.{csv,md}: the key numbers of every diagnose summary under
    <diagnose_root>/*/*/summary.json (default: <out>), one row per run."""
    rows = []
    for path in sorted((diagnose_root or out).glob("*/*/summary.json")):
        data = json.loads(path.read_text())
        pairs, regret = data["pairs"], data["regret"]
        rows.append({"run": f"{path.parent.parent.name}/{path.parent.name}", "steps_measured": data["measured_steps"],
                     "decode_solved": data["score"], "decode_nfe": data["mean_nfe"],
                     "rho_tis_soft": pairs["tis~soft_drop_S"]["mean"],
                     "rho_tis_hard_total": pairs["tis~hard_drop_total"]["mean"],
                     "rho_soft_hard_total": pairs["soft_drop_S~hard_drop_total"]["mean"],
                     "rho_live_dense": pairs["tis~tis_dense"]["mean"],
                     "agree_tis_soft": data["agreement"]["agree[tis,soft_drop_S]"],
                     **{f"regret_{k}": v for k, v in regret.items()}})
    if not rows:
        return
    frame = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "diagnostics.csv", index=False)
    fmt = lambda v: "–" if v is None or pd.isna(v) else f"{v:.2f}"  # noqa: E731
    lines = ["# BoE signal diagnostics, one row per `python -m boe_bench.diagnose` run", "",
             "Means over measured steps of the per-step Spearman correlation over a step's candidates, the top-b "
             "agreement of TIS with the exact soft-write drop, and the regret (nats of total masked entropy left on "
             "the table by each rule's picks vs the best single reveal). Details: each run's summary.md.", "",
             "| run | measured steps | decode solved | rho(TIS, exact soft) | rho(TIS, hard total) | rho(exact soft, hard total) "
             "| rho(live, dense TIS) | top-b TIS = exact | regret chosen | TIS | exact soft | confidence | random |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        lines.append(f"| {r.run} | {r.steps_measured} | {fmt(r.decode_solved)} | {fmt(r.rho_tis_soft)} "
                     f"| {fmt(r.rho_tis_hard_total)} | {fmt(r.rho_soft_hard_total)} | {fmt(r.rho_live_dense)} "
                     f"| {fmt(r.agree_tis_soft)} | {fmt(r.regret_chosen)} | {fmt(r.regret_tis)} "
                     f"| {fmt(r.regret_soft_drop_S)} | {fmt(r.regret_confidence)} | {fmt(r.regret_random)} |")
    (out / "diagnostics.md").write_text("\n".join(lines) + "\n")
    print((out / "diagnostics.md").read_text())


def main(argv: list[str] | None = None) -> None:
    args = load("diagnostics_sweep", Settings, argv, __doc__)
    runs, out = Path(args.runs), Path(args.out)
    if not args.report_only:
        cells = [(name, [f"sampler={name}"]) for name in args.samplers]
        cells += list((args.variants or {}).items())
        for puzzle_set in args.sets:
            for steps in args.steps:
                for label, overrides in cells:
                    run_cell(label, overrides, steps, puzzle_set, args.limit, args.batch, runs)
    finished = collect(runs)
    if finished.empty:
        print(f"no finished sweep runs under {runs}: no sweep report")
    else:
        report(finished, out)
    diagnostics_table(out, Path(args.diagnose_root) if args.diagnose_root else None)


if __name__ == "__main__":
    main()
