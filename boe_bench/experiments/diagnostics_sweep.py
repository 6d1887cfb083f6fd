"""Figure-4-style sweep on the puzzle model for the BoE diagnostics.

Runs `python -m boe_bench` once per (sampler, steps, puzzle set) with its own out_dir under
runs/diagnostics_sweep/, then writes <out>/sweep.csv (one row per run), sweep.md (solve rate
mean ± std over the puzzle sets, NFE, cost) and sweep.png, and <out>/diagnostics.{csv,md} from
the `python -m boe_bench.diagnose` summaries under <diagnose-root>/*/*/. <out> is
reports/diagnostics (untracked) unless given: `--out results/diagnostics` replaces the
committed files. A finished run is not redone (the runner resumes), so re-running only fills
gaps.

    python -m boe_bench.experiments.diagnostics_sweep --sets 0,1,2 --steps 35,70 --limit 10 \\
        --samplers confidence,boe,boe_exact,lookum [--extra 'boe_minmax=sampler=boe sampler.tis_normalise=minmax']
    python -m boe_bench.experiments.diagnostics_sweep --report-only
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

RUNS = Path("runs/diagnostics_sweep")
OUT = Path("reports/diagnostics")


def run_cell(label: str, overrides: list[str], steps: int, puzzle_set: int, limit: int, batch: int) -> None:
    out_dir = RUNS / label / f"set{puzzle_set}-s{steps}-n{limit}"
    command = [sys.executable, "-m", "boe_bench", *overrides, f"steps={steps}", f"task.seed={puzzle_set}",
               f"limit={limit}", f"batch_size={batch}", "progress=false", f"out_dir={out_dir}"]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})


def collect() -> pd.DataFrame:
    rows = []
    for summary in sorted(RUNS.glob("*/*/summary.json")):
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
    parser = argparse.ArgumentParser(prog="python -m boe_bench.experiments.diagnostics_sweep",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="0,1,2")
    parser.add_argument("--steps", default="35,70")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--samplers", default="confidence,boe,boe_exact,lookum")
    parser.add_argument("--extra", action="append", default=[],
                        help="label=override override ...: a sampler variant under its own label")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT, help="where the sweep's report goes")
    parser.add_argument("--diagnose-root", type=Path, default=None,
                        help="diagnose runs to tabulate (<root>/<set>/<sampler>/summary.json; default: --out)")
    args = parser.parse_args(argv)
    if not args.report_only:
        cells = [(name, [f"sampler={name}"]) for name in args.samplers.split(",") if name]
        cells += [(spec.split("=", 1)[0], spec.split("=", 1)[1].split()) for spec in args.extra]
        for puzzle_set in map(int, args.sets.split(",")):
            for steps in map(int, args.steps.split(",")):
                for label, overrides in cells:
                    run_cell(label, overrides, steps, puzzle_set, args.limit, args.batch)
    runs = collect()
    if runs.empty:
        print(f"no finished sweep runs under {RUNS}: no sweep report")
    else:
        report(runs, args.out)
    diagnostics_table(args.out, args.diagnose_root)


if __name__ == "__main__":
    main()
