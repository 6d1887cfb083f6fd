"""Whole-decode wall clock of BoE next to Confidence on a GSM8K-shaped job (Table 5's setting).

One job: a 5-shot-sized prompt (~900 tokens of random ids), L = 128 generated tokens, one
token per step (128 steps), blocks of 32, no early stop. Confidence and each BoE reading at
rho 0.10 / 0.25 / 0.50 decode it end to end on the same random-weight model in one process,
round-robin over repeats (so load from other processes hits every variant alike). Reported:
each variant's wall clock over repeats (min / median / max) and its ratio to the
Confidence decode of the same repeat (min / median / max over repeats), with the
forward-equivalent cost (A.3.4) beside it.

    python scripts/bench_decode.py                                        # CPU: 4 layers, d=256
    python scripts/bench_decode.py --device cuda --batch 1,8,32 --out $OUT/decode_gpu.csv
                                                                          # GPU: LLaDA-8B shape, bf16
    python scripts/bench_decode.py --merge decode_gpu.csv                 # fold a GPU CSV into results/

Rows of this run's (machine, batch) replace earlier ones in the CSV; the markdown summary is
rebuilt from the whole CSV.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

from boe_bench.samplers import Schedule, build_sampler

sys.path.insert(0, str(Path(__file__).parent))
from bench_boe import SHAPES, random_model, sync  # noqa: E402

PROMPT, GEN, BLOCK = 900, 128, 32
CPU_MACHINE = "2-core CPU VM (shared)"
DEFAULT_ROWS = "masked"
READINGS = ("candidates", "masked")
FIELDS = ["machine", "batch", "shape", "dtype", "variant", "rows", "rho", "repeats", "wall_min_s", "wall_median_s",
          "wall_max_s", "ratio_min", "ratio_median", "ratio_max", "nfe", "cost_fwd_equiv", "note"]


def variants(readings: list[str], rhos: list[float], dense: bool) -> dict[str, dict]:
    out = {"confidence": dict(name="confidence")}
    for rows in readings:
        for rho in rhos:
            out[f"boe_{rows}_rho{rho:.2f}"] = dict(name="boe", rows=rows, rho=rho)
    if dense:
        out["boe_all_rho0.25"] = dict(name="boe", rows="all", rho=0.25)
    return out


def decode_run(model, spec: dict, prompts: list[list[int]], device: str, gen: int = GEN):
    """A callable decoding the job once; returns (seconds, the first example's accounting)."""
    sampler = build_sampler(spec["name"], **{k: v for k, v in spec.items() if k != "name"})

    def run(steps: int | None = None):
        schedule = Schedule(gen_length=gen, steps=steps or gen, block_length=BLOCK)
        sync(device)
        start = time.perf_counter()
        out = sampler.generate(model, prompts, schedule)
        sync(device)
        return time.perf_counter() - start, out.accounting[0]
    return run


def measure(args) -> list[dict]:
    gpu = args.device.startswith("cuda")
    shape = args.shape or ("llada-8b" if gpu else "cpu-bench")
    dtype = torch.bfloat16 if gpu else torch.float32
    if not gpu:
        torch.set_num_threads(args.threads)
    machine = args.machine or (torch.cuda.get_device_name() if gpu else CPU_MACHINE)
    torch.manual_seed(0)
    model = random_model(shape, args.device, dtype)
    specs = variants(args.readings.split(","), [float(r) for r in args.rhos.split(",")], args.dense)
    rows = []
    for batch in (int(b) for b in args.batch.split(",")):
        generator = torch.Generator().manual_seed(batch)
        # Random ids below the special tokens' range stand in for the 5-shot prompt's text.
        prompts = [torch.randint(0, model.vocab_size - 1, (args.prompt,), generator=generator).tolist()
                   for _ in range(batch)]
        runs = {label: decode_run(model, spec, prompts, args.device, args.gen) for label, spec in specs.items()}
        for run in runs.values():  # warm-up (allocator, kernels, CUDA graphs): a decode in few steps
            run(steps=args.gen // BLOCK * 2)
        times, accounting = {label: [] for label in runs}, {}
        for repeat in range(args.repeats):
            for label, run in runs.items():
                seconds, accounting[label] = run()
                times[label].append(seconds)
                print(f"batch {batch} repeat {repeat} {label}: {times[label][-1]:.2f}s", flush=True)
            if args.progress:  # a long CPU run leaves its repeats so far behind
                write(args, rows + table(machine, batch, shape, dtype, specs, times, accounting, args.note))
        rows += table(machine, batch, shape, dtype, specs, times, accounting, args.note)
    return rows


def table(machine, batch, shape, dtype, specs, times, accounting, note) -> list[dict]:
    rows = []
    for label, spec in specs.items():
        ratios = [t / c for t, c in zip(times[label], times["confidence"])]
        acc = accounting[label]
        rows.append({"machine": machine, "batch": batch, "shape": shape, "dtype": str(dtype).removeprefix("torch."),
                     "variant": label, "rows": spec.get("rows", ""), "rho": spec.get("rho", ""),
                     "repeats": len(times[label]), "wall_min_s": round(min(times[label]), 3),
                     "wall_median_s": round(statistics.median(times[label]), 3),
                     "wall_max_s": round(max(times[label]), 3), "ratio_min": round(min(ratios), 3),
                     "ratio_median": round(statistics.median(ratios), 3), "ratio_max": round(max(ratios), 3),
                     "nfe": acc.nfe, "cost_fwd_equiv": round(acc.cost_fwd_equiv, 2), "note": note})
    return rows


def write(args, rows: list[dict]) -> None:
    out = Path(args.out)
    merged = merge(rows, out)
    out.with_suffix(".md").write_text(summary(merged))


def merge(rows: list[dict], path: Path) -> list[dict]:
    """This run's (machine, batch) pairs replace their earlier rows; all other rows are kept."""
    runs = {(r["machine"], str(r["batch"])) for r in rows}
    kept = []
    if path.exists():
        with path.open() as f:
            kept = [r for r in csv.DictReader(f) if (r["machine"], str(r["batch"])) not in runs]
    merged = kept + rows
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(merged)
    return merged


def summary(rows: list[dict]) -> str:
    lines = ["# Whole-decode wall clock, BoE vs Confidence (scripts/bench_decode.py)", "",
             f"GSM8K-shaped job: {PROMPT}-token prompt (random ids standing in for the 5-shot prompt), "
             f"L={GEN}, one token per step, blocks of {BLOCK}, decoded end to end by every variant on the same "
             "random-weight model in one process, round-robin over repeats. `ratio` is a decode's wall clock over "
             "the Confidence decode of the same repeat (min / median / max over repeats); `cost` is forward-"
             "equivalents per example (A.3.4). CPU: LLaDA-shaped 4 layers, d=256, MLP 1024, vocab 4096, float32, "
             "one thread. GPU: LLaDA-8B shape, bf16.", ""]
    for group in dict.fromkeys((r["machine"], str(r["batch"])) for r in rows):
        mine = [r for r in rows if (r["machine"], str(r["batch"])) == group]
        lines += [f"## {group[0]}, batch {group[1]}", "",
                  "| variant | wall s (min / median / max) | ratio to Confidence (min / median / max) | NFE | cost |",
                  "|---|---|---|---|---|"]
        for r in mine:
            lines.append(f"| {r['variant']} | {float(r['wall_min_s']):.2f} / {float(r['wall_median_s']):.2f} / "
                         f"{float(r['wall_max_s']):.2f} | {float(r['ratio_min']):.3f} / {float(r['ratio_median']):.3f}"
                         f" / {float(r['ratio_max']):.3f} | {r['nfe']} | {r['cost_fwd_equiv']} |")
        lines += [""] + targets(mine, gpu=group[0] != CPU_MACHINE)
        note = next((r["note"] for r in mine if r.get("note")), "")
        if note:
            lines += ["", note]
        lines.append("")
    if not any(r["machine"] != CPU_MACHINE for r in rows):
        lines += ["## GPU", "", "Not measured: no GPU was available to this run. On a GPU machine: "
                  "`python scripts/bench_decode.py --device cuda --batch 1,8,32 --out gpu.csv`, then "
                  "`python scripts/bench_decode.py --merge gpu.csv` here. Target there: BoE (default) at batch >= 8 "
                  "<= 1.15x Confidence.", ""]
    return "\n".join(lines)


def targets(rows: list[dict], gpu: bool) -> list[str]:
    """The issue's targets for this (machine, batch), met or missed and by how much."""
    ratio = {(r["rows"], float(r["rho"])): float(r["ratio_median"]) for r in rows if r["rows"]}
    out = []
    default = ratio.get((DEFAULT_ROWS, 0.25))
    limit = 1.15 if gpu else 1.25
    if default is not None and (not gpu or int(rows[0]["batch"]) >= 8):
        verdict = "met" if default <= limit else f"MISSED by {default - limit:.2f}"
        out.append(f"- target BoE (rows: {DEFAULT_ROWS}, rho 0.25) <= {limit} x Confidence (median): "
                   f"{default:.3f} -> {verdict}")
    for reading in sorted({k[0] for k in ratio}):
        costs = [float(r["cost_fwd_equiv"]) for r in sorted(rows, key=lambda r: float(r["rho"] or 0))
                 if r["rows"] == reading]
        walls = [ratio[k] for k in sorted(k for k in ratio if k[0] == reading)]
        ordered = lambda xs: all(a < b for a, b in zip(xs, xs[1:]))  # noqa: E731
        out.append(f"- rows: {reading}, rho 0.10 < 0.25 < 0.50: cost {' / '.join(f'{c:g}' for c in costs)} "
                   f"({'increasing' if ordered(costs) else 'NOT increasing'}), wall ratio "
                   f"{' / '.join(f'{w:.3f}' for w in walls)} ({'increasing' if ordered(walls) else 'NOT increasing'})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default=None, choices=sorted(SHAPES))
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes (GPU: 1,8,32)")
    parser.add_argument("--readings", default=",".join(READINGS), help="BoE rows readings to time")
    parser.add_argument("--rhos", default="0.10,0.25,0.50")
    parser.add_argument("--dense", action="store_true", help="also time rows: all (the dense backward) at rho 0.25")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=PROMPT, help="prompt tokens (smoke tests only)")
    parser.add_argument("--gen", type=int, default=GEN, help="generated tokens = steps (smoke tests only)")
    parser.add_argument("--threads", type=int, default=1, help="CPU torch threads")
    parser.add_argument("--machine", default=None, help="machine name for the report")
    parser.add_argument("--note", default="", help="a sentence printed under this run's table (e.g. contention)")
    parser.add_argument("--out", default="results/bench/boe_decode.csv")
    parser.add_argument("--progress", action="store_true", help="rewrite the CSV/markdown after every repeat")
    parser.add_argument("--merge", default=None, help="a CSV from another machine to fold into --out")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge:
        with open(args.merge) as f:
            rows = list(csv.DictReader(f))
    else:
        rows = measure(args)
    write(args, rows)
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
