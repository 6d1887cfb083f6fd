"""What one BoE step costs next to one Confidence step, and the live-row vs dense backward.

Random weights (speed only). One decoding step at the first block (block 32, budget 2,
rho 0.25), medians over repeats, every ratio taken against a reference timed in the same
process. Rows of this machine replace its earlier rows in the CSV; other machines' rows
stay, and the markdown summary is rebuilt from the whole CSV.

    python scripts/bench_boe.py                                   # CPU: 4 layers, d=256
    python scripts/bench_boe.py --device cuda --out $OUT/gpu.csv  # GPU: LLaDA-8B shape, bf16
    python scripts/bench_boe.py --merge gpu.csv                   # fold a GPU CSV into results/
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

from boe_bench.samplers import build_sampler
from boe_bench.samplers.base import DecodeState, entropy
from boe_bench.samplers.boe_live import LiveInputs, LivePassGraphs, live_tis_pass, padded_frozen

sys.path.insert(0, str(Path(__file__).parent))
from bench_throughput import SHAPES, random_model, sync  # noqa: E402

SHAPES.setdefault("cpu-bench", dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                    intermediate_size=1024, vocab_size=4096))
VARIANTS = {
    "confidence": dict(name="confidence"),
    "boe_masked": dict(name="boe", rows="masked", rho=0.25),
    "boe_candidates": dict(name="boe", rows="candidates", rho=0.25),
    "boe_all": dict(name="boe", rows="all", rho=0.25),
}
GPU_ONLY = {  # the same readings without CUDA graphs, to show what the graphs buy
    "boe_masked_eager": dict(name="boe", rows="masked", rho=0.25, cuda_graphs=False),
    "boe_candidates_eager": dict(name="boe", rows="candidates", rho=0.25, cuda_graphs=False),
}
FIELDS = ["machine", "batch", "shape", "dtype", "measure", "variant", "L", "split", "live_rows", "repeats", "median_s",
          "ratio", "ratio_to", "nfe", "live_rows_fwd", "live_rows_bwd", "cost_fwd_equiv"]
BLOCK, BUDGET, LIVE = 32, 2, 32


def timed(fn, device: str):
    """fn as a callable that returns its own wall time (device work included)."""
    def run() -> float:
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - start
    return run


def round_robin(runs: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each run, timing them in turn so that load from other processes
    (the dev VM's cores are shared) hits every variant alike."""
    for run in runs.values():
        run()  # warm-up (and CUDA-graph capture)
    times = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            times[label].append(run())
    return {label: statistics.median(t) for label, t in times.items()}


def median_time(fn, device: str, repeats: int) -> float:
    return round_robin({"only": timed(fn, device)}, repeats)["only"]


def canvas(model, length: int, prompt_length: int, batch: int = 1) -> DecodeState:
    generator = torch.Generator().manual_seed(length + prompt_length)
    prompts = [torch.randint(0, model.vocab_size - 1, (prompt_length,), generator=generator).tolist()
               for _ in range(batch)]
    return DecodeState.start(model, prompts, length - prompt_length)


def step_run(model, spec: dict, length: int, prompt_length: int, device: str, batch: int = 1):
    """(a timed run of one step of the whole batch, the first example's accounting)."""
    sampler = build_sampler(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
    sampler.total_steps = 64
    state = canvas(model, length, prompt_length, batch)
    start_x = state.x.clone()
    window = state.block_window(0, BLOCK)
    budget = torch.full((batch,), BUDGET, device=state.x.device)

    def one_step():
        state.x, state.extras = start_x.clone(), {}
        for acc in state.accounting:
            acc.__init__(seq_len=length)
        sampler.step(model, state, window, budget)

    return timed(one_step, device), state.accounting[0]


def backward_costs(model, length: int, device: str, repeats: int) -> dict[str, float]:
    """Seconds of: the dense backward of S over LIVE target rows; the eager live-row backward
    over those rows; and, on a GPU, the whole graphed live-row pass (forward and backward)."""
    state = canvas(model, length, length - 64)
    rows = torch.arange(length - LIVE, length, device=state.x.device)[None]
    _, frozen = model.forward_with_state(state.x, state.attention_mask)
    live_embeds = model.embed(state.x.gather(1, rows))

    def backward_only(make_objective, leaf):
        def run():
            objective = make_objective()
            sync(device)
            start = time.perf_counter()
            torch.autograd.grad(objective, leaf)
            sync(device)
            return time.perf_counter() - start
        return run

    dense_leaf = model.embed(state.x).detach().requires_grad_(True)
    live_leaf = live_embeds.detach().requires_grad_(True)
    out = round_robin({
        "dense_backward": backward_only(
            lambda: entropy(model.forward_rows(dense_leaf, state.attention_mask)[0][:, -LIVE:]).sum(), dense_leaf),
        "live_row_backward": backward_only(
            lambda: entropy(model.live_forward(frozen, rows, live_leaf)).sum(), live_leaf),
    }, repeats)
    if device.startswith("cuda"):
        inputs = LiveInputs(rows, live_embeds, torch.randn_like(live_embeds), torch.ones(rows.shape, device=device))
        graphs = LivePassGraphs()
        out["live_row_pass_eager"] = median_time(lambda: live_tis_pass(model, frozen, inputs), device, repeats)
        out["live_row_pass_graphed"] = median_time(lambda: graphs(model, frozen, inputs), device, repeats)
    return out


def graph_checks(model, length: int, device: str) -> dict[str, float]:
    """Relative differences ||a - b|| / ||b|| of live-row TIS vectors (32 rows, L = length):
    graph replay vs the same function run eagerly on the same padded layout (the graph
    itself), the padded layout vs the exact one (one extra masked key slot, in bf16), and
    two eager runs of the exact layout (run-to-run noise)."""
    state = canvas(model, length, 3 * length // 4)
    _, frozen = model.forward_with_state(state.x, state.attention_mask)
    rows = torch.arange(length - LIVE, length, device=device)[None]
    embeds = model.embed(state.x.gather(1, rows))
    delta = torch.randn_like(embeds) * embeds.std()
    rel = lambda a, b: float((a - b).float().norm() / b.float().norm())  # noqa: E731
    out = {}
    for name, weights in (("masked", torch.ones(rows.shape, device=device)),
                          ("leave_one_out", 1 - torch.eye(LIVE, device=device)[:, None, :])):
        inputs = LiveInputs(rows, embeds, delta, weights)
        graphs = LivePassGraphs()
        graphs(model, frozen, inputs)
        graphed = graphs(model, frozen, inputs)
        same_layout = live_tis_pass(model, padded_frozen(frozen), inputs)
        exact = live_tis_pass(model, frozen, inputs)
        out[f"{name}_graph_vs_eager_same_layout"] = rel(graphed, same_layout)
        out[f"{name}_padded_vs_exact_layout"] = rel(same_layout, exact)
        out[f"{name}_eager_run_to_run"] = rel(live_tis_pass(model, frozen, inputs), exact)
    return out


def profile_step(model, spec: dict, length: int, path: Path) -> None:
    """Where one step's time goes (torch.profiler table, by device time), for the record."""
    from torch.profiler import ProfilerActivity, profile

    run, _ = step_run(model, spec, length, 3 * length // 4, "cuda")
    run()  # capture outside the profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
    path.write_text(prof.key_averages().table(sort_by="device_time_total", row_limit=25))


def measure(args) -> list[dict]:
    gpu = args.device.startswith("cuda")
    shape = args.shape or ("llada-8b" if gpu else "cpu-bench")
    repeats = args.repeats or (5 if gpu else 3)
    if not gpu:
        torch.set_num_threads(1)  # the dev VM's two cores are shared: one thread times steadier
    machine = torch.cuda.get_device_name() if gpu else "2-core CPU (dev VM)"
    dtype = torch.bfloat16 if gpu else torch.float32
    torch.manual_seed(0)
    model = random_model(shape, args.device, dtype)
    common = {"machine": machine, "shape": shape, "dtype": str(dtype).removeprefix("torch."), "repeats": repeats,
              "batch": args.batch}
    variants = {**VARIANTS, **(GPU_ONLY if gpu else {})}
    if args.variants:
        variants = {k: v for k, v in variants.items() if k in args.variants.split(",")}
    rows = []

    def emit(**row):
        rows.append({**common, **row})
        print({k: v for k, v in rows[-1].items() if k not in common}, flush=True)

    for length in [int(x) for x in args.lengths.split(",")]:
        for split, prompt_length in (("prompt_heavy", 3 * length // 4), ("generation_only", 1)):
            runs = {label: step_run(model, spec, length, prompt_length, args.device, args.batch)
                    for label, spec in variants.items()}
            seconds = round_robin({label: run for label, (run, _) in runs.items()}, repeats)
            base = seconds.get("confidence") or next(iter(seconds.values()))
            for label, (_, acc) in runs.items():
                emit(measure="step", variant=label, L=length, split=split, median_s=round(seconds[label], 6),
                     ratio=round(seconds[label] / base, 3), ratio_to="confidence step", nfe=acc.nfe,
                     live_rows_fwd=acc.live_rows_fwd, live_rows_bwd=acc.live_rows_bwd,
                     cost_fwd_equiv=round(acc.cost_fwd_equiv, 4))
            del runs
        if args.batch != 1 or args.variants:
            continue  # the backward and graph checks are batch-1 measurements
        costs = backward_costs(model, length, args.device, repeats)
        for label, seconds in costs.items():
            emit(measure="backward", variant=label, L=length, split="prompt_heavy", live_rows=LIVE,
                 median_s=round(seconds, 6), ratio=round(seconds / costs["dense_backward"], 3),
                 ratio_to="dense backward")
    if gpu and args.profile and args.batch == 1:
        profile_step(model, VARIANTS["boe_candidates"], 1024, Path(args.profile))
    if gpu and args.batch == 1 and not args.variants:
        for label, value in graph_checks(model, 1024, args.device).items():
            emit(measure="check", variant=f"tis_rel_diff_{label}", L=1024, split="prompt_heavy", ratio=f"{value:.2e}")
    return rows


def merge(rows: list[dict], path: Path) -> list[dict]:
    """This run's (machine, batch) pairs replace their earlier rows; all other rows are kept."""
    runs = {(r["machine"], str(r.get("batch") or 1)) for r in rows}
    kept = []
    if path.exists():
        with path.open() as f:
            kept = [r for r in csv.DictReader(f) if (r["machine"], str(r.get("batch") or 1)) not in runs]
    merged = [{**r, "batch": r.get("batch") or 1} for r in kept + rows]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(merged)
    return merged


def summary(rows: list[dict]) -> str:
    """Markdown: step and backward ratios per (machine, batch) and length, then the targets."""
    def value(group, measure, variant, length, split="prompt_heavy", field="ratio"):
        hit = [r for r in rows if (r["machine"], str(r.get("batch") or 1)) == group and r["measure"] == measure
               and r["variant"] == variant and str(r["L"]) == str(length) and r["split"] == split]
        return hit[0][field] if hit else ""

    groups = list(dict.fromkeys((r["machine"], str(r.get("batch") or 1)) for r in rows))
    lines = ["# BoE step cost vs Confidence (scripts/bench_boe.py)", "",
             f"Random weights, one step at the first block (block {BLOCK}, budget {BUDGET}, rho 0.25), medians "
             "over repeats, ratios to a reference timed in the same process. CPU: 4 layers, d=256, vocab 4096, "
             "float32. GPU: LLaDA-8B shape (32 layers, d=4096, MLP 12288, vocab 126464), bf16. BoE variants on "
             "a GPU replay the live-row pass as a CUDA graph; `_eager` rows run it op by op.", ""]
    for group in groups:
        mine = [r for r in rows if (r["machine"], str(r.get("batch") or 1)) == group]
        lengths = sorted({int(r["L"]) for r in mine})
        lines += [f"## {group[0]}, batch {group[1]}", "",
                  "| ratio | " + " | ".join(f"L={n}" for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
        variants = [v for v in dict.fromkeys(r["variant"] for r in mine if r["measure"] == "step") if v != "confidence"]
        for split in ("prompt_heavy", "generation_only"):
            for variant in variants:
                cells = [str(value(group, "step", variant, n, split)) for n in lengths]
                if any(cells):
                    lines.append(f"| {variant} step / confidence step ({split}) | " + " | ".join(cells) + " |")
        for variant in ("live_row_backward", "live_row_pass_eager", "live_row_pass_graphed"):
            cells = [str(value(group, "backward", variant, n)) for n in lengths]
            if any(cells):
                lines.append(f"| {variant} ({LIVE} rows) / dense backward | " + " | ".join(cells) + " |")
        conf = [str(value(group, "step", "confidence", n, field="median_s")) for n in lengths]
        lines += ["| confidence step, seconds (prompt_heavy) | " + " | ".join(conf) + " |", ""]
        lines += [f"- {r['variant']}: {r['ratio']}" for r in mine if r["measure"] == "check"]
        verdict = lambda x, limit: "not measured" if x != x else "met" if x <= limit else "MISSED"  # noqa: E731
        if group[1] == "1":
            backward = min([float(x) for x in [value(group, "backward", v, 1024)
                                               for v in ("live_row_backward", "live_row_pass_graphed")] if x != ""]
                           or [float("nan")])
            lines.append(f"- target live-row backward <= 0.10 x dense at L=1024 ({LIVE} rows): "
                         f"{backward:.3f} -> {verdict(backward, 0.10)}")
        for variant, label in (("boe_masked", "rows: masked, the default, one pass"),
                               ("boe_candidates", "rows: candidates")):
            step = float(value(group, "step", variant, 1024) or "nan")
            lines.append(f"- target BoE ({label}) step <= 1.3 x Confidence at L=1024 prompt-heavy: "
                         f"{step:.2f} -> {verdict(step, 1.3)}")
        lines.append("")
    if any(r["machine"].startswith("2-core") for r in rows):
        lines += ["## Reading the CPU rows", "",
                  "`rows: masked` (the default) runs in one pass: the step forward keeps autograd for the masked "
                  "rows only, so a step costs one forward plus a backward over the |M| masked rows, 2|M|/L of a "
                  "forward by the accounting (|M| = 256 of L = 1024 prompt-heavy: cost 1.5, down from 1.75 with the "
                  "separate recompute). That backward is the reading's floor: the 1.3 target is out of its reach "
                  "while a quarter of the canvas is masked (generation_only, |M| ~ L, is a dense backward in all but "
                  "name, which is why that row exceeds `boe_all`'s cost there). `rows: candidates` recomputes |C| rows "
                  "and runs |C| small backwards (exact leave-one-out), which per-operation overhead dominates on a "
                  "CPU. The VM's 2 cores were shared with 7 other jobs: two runs of this table gave masked 1.55 / "
                  "1.69 and candidates 1.36 / 1.50 at L=1024 prompt-heavy (Confidence's step 0.44 s in one, 1.0 s in "
                  "the other); the later run is shown. The whole-decode ratios are in `boe_decode.md`.", ""]
    if any(r["shape"] == "llada-8b" for r in rows):
        lines += ["## Reading the GPU rows", "",
                  "At batch 1 the LLaDA-8B-shaped live-row pass is bound by weight reads, not by rows: its forward "
                  "and its backward each read all ~15 GB of bf16 weights (~5 ms each at the H100's ~3 TB/s), "
                  "whatever |A| is. So 0.10 of a dense backward (~50 ms at L=1024, itself partly launch-bound) "
                  "is about one weight read, and a BoE step (a full forward, ~36 ms at L=1024, plus that pass) "
                  "cannot go below ~1.3x Confidence even at full bandwidth. Op by op (`_eager`) the pass is worse: "
                  "launching ~100 kernels per layer through autograd costs more than the dense backward; the "
                  "CUDA graph removes that (the graphed pass, forward and backward together, takes ~23 ms at "
                  "every L). The `check` lines show the graph computes what the eager code does: its TIS differs "
                  "from an eager run on the same layout by no more than two eager bf16 runs differ from each "
                  "other. Batching prompts shares the weight reads among examples (`--batch`).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default=None, choices=sorted(SHAPES))
    parser.add_argument("--lengths", default="256,512,1024")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1, help="prompts per step (backward checks run at 1 only)")
    parser.add_argument("--variants", default=None, help="comma-separated subset of the step variants")
    parser.add_argument("--out", default="results/bench/boe_cost.csv")
    parser.add_argument("--profile", default=None, help="GPU: write a profile of one BoE step here")
    parser.add_argument("--merge", default=None, help="a CSV from another machine to fold into --out")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge:
        with open(args.merge) as f:
            rows = list(csv.DictReader(f))
    else:
        rows = measure(args)
    merged = merge(rows, out)
    out.with_suffix(".md").write_text(summary(merged))
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
