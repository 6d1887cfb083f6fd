"""Where one BoE step's time goes, next to one Confidence step (torch.profiler).

The step of ``bench.step`` (first block, budget 2, rho 0.25; L = 1024 prompt-heavy by
default, |M| = L/4 masked rows), profiled ``--repeats`` times per variant, interleaved.
The step's pieces are labelled from outside the sampler (wrapped in
``torch.profiler.record_function`` here, so the sampler itself carries no profiling code):

- forward: the step's forward (Confidence: no grad; BoE ``masked``: the forward that keeps
  autograd for the live rows, so its excess over Confidence's is graph bookkeeping);
- live-row recompute (``candidates``): the live-row forward after the step forward;
- live-row backward: autograd from S to the live embeddings, and reading TIS off it;
- soft write: De_i = E^T pi_i - e_m at the candidates;
- draw: the token drawn at every position;
- candidates and ranking: confidences, entropies, the candidate set, the gated score, the
  top-b choice and the commit;
- Python and dispatch overhead: the step's CPU time not spent inside any aten operator.

Each share is of one Confidence step's profiled CPU time. ``accounted`` is what
cost_fwd_equiv charges for the piece (per forward-equivalent, what Confidence's step spends on
it; plus the backward 2|A|/L and the recompute |A|/L), so ``unaccounted`` = measured share - accounted share.

    python -m boe_bench.bench.profile                                   # -> runs/bench/boe_profile.{csv,md}
    python -m boe_bench.bench.profile --out results/bench/boe_profile.csv
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import statistics

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from boe_bench.bench.common import (
    BenchError, abba_order, fail_cleanly, load_average, machine_name, out_path, random_model, setup_device,
    write_results,
)
from boe_bench.bench.step import BLOCK, BUDGET, VARIANTS, step_run
from boe_bench.samplers import boe as boe_module
from boe_bench.samplers.base import DecodeState, Sampler

PHASES = ["forward", "live-row recompute", "live-row backward", "soft write", "draw", "candidates and ranking",
          "Python and dispatch overhead"]
FIELDS = ["machine", "load_avg", "shape", "L", "prompt", "variant", "phase", "cpu_ms", "share_of_confidence_step",
          "accounted_share", "unaccounted_share", "aten_ops"]


def labelled(label: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with record_function(label):
            return fn(*args, **kwargs)
    return wrapper


@contextlib.contextmanager
def phases(model):
    """Label the step's pieces for the profiler; everything is restored on exit."""
    patches = [
        (model, "forward_live", "forward"), (model, "forward_with_state", "forward"), (model, "forward", "forward"),
        (boe_module.BoESampler, "dense_forward", "forward"),
        (model, "live_forward", "live-row recompute"), (model, "live_forward_copies", "live-row recompute"),
        (model, "live_head_copies", "live-row recompute"),
        (boe_module.BoESampler, "one_pass_tis", "live-row backward"),
        (boe_module, "live_tis_pass", "live-row backward"), (boe_module.BoESampler, "dense_tis", "live-row backward"),
        (boe_module, "soft_write_shift", "soft write"),
        (Sampler, "draw", "draw"),
        (boe_module.BoESampler, "read_candidates", "candidates and ranking"),
        (boe_module.BoESampler, "score_of", "candidates and ranking"),
        (DecodeState, "top_per_row", "candidates and ranking"), (DecodeState, "commit", "candidates and ranking"),
    ]
    from boe_bench.samplers.confidence import ConfidenceSampler

    patches.append((ConfidenceSampler, "score", "candidates and ranking"))
    saved = []
    for owner, name, label in patches:
        original = vars(owner).get(name)
        saved.append((owner, name, original))
        wrapped = labelled(label, getattr(owner, name))
        setattr(owner, name, staticmethod(wrapped) if isinstance(original, staticmethod) else wrapped)
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            if original is None:  # inherited, or a method of an instance's class
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def outermost(events: list) -> list:
    """The events not nested inside another of ``events`` (nested ranges are contained)."""
    out, end = [], -1
    for e in sorted(events, key=lambda e: (e.time_range.start, -e.time_range.end)):
        if e.time_range.start >= end:
            out.append(e)
            end = e.time_range.end
    return out


def breakdown(prof) -> dict[str, tuple[float, int]]:
    """{piece: (CPU ms, top-level aten ops)} of one profiled step ("step" is the whole).
    Each top-level aten operator's time goes to the innermost label around it (the live-row
    forward inside the backward's label is the recompute); "other" is operator time outside
    every label; "Python and dispatch overhead" is the step's time outside every operator,
    so the pieces add up to the step."""
    events = prof.events()
    step = next(e for e in events if e.name == "step")
    labels = sorted((e for e in events if e.name in PHASES), key=lambda e: e.time_range.start)
    top = outermost([e for e in events if e.name.startswith("aten::")])
    out = {phase: [0.0, 0] for phase in PHASES + ["other"]}
    for e in top:
        around = [o for o in labels if o.time_range.start <= e.time_range.start and e.time_range.end <= o.time_range.end]
        piece = max(around, key=lambda o: o.time_range.start).name if around else "other"
        out[piece][0] += e.cpu_time_total / 1000
        out[piece][1] += 1
    total = step.cpu_time_total / 1000
    out["Python and dispatch overhead"] = [total - sum(e.cpu_time_total for e in top) / 1000, 0]
    out["step"] = [total, len(top)]
    return {k: (v[0], v[1]) for k, v in out.items()}


def profile_variants(model, specs: dict, length: int, prompt: int, repeats: int) -> tuple[dict, dict]:
    """({variant: {piece: (median CPU ms, ops)}}, {variant: accounting}), the variants' steps
    profiled in turn, ABBA."""
    made = {label: step_run(model, spec, length, prompt) for label, spec in specs.items()}
    runs = {label: [] for label in made}
    for fn, _ in made.values():
        fn()  # warm-up
    with phases(model):
        for repeat in range(repeats):
            for label in abba_order(list(made), repeat):
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    with record_function("step"):
                        made[label][0]()
                runs[label].append(breakdown(prof))
    medians = {label: {k: (statistics.median(r[k][0] for r in rs), rs[0][k][1]) for k in rs[0]}
               for label, rs in runs.items()}
    return medians, {label: state.accounting[0] for label, (_, state) in made.items()}


def accounted_shares(acc, length: int, confidence: dict[str, float]) -> dict[str, float]:
    """What cost_fwd_equiv charges each piece, in Confidence steps: each forward-equivalent
    (nfe) pays for what a Confidence step spends on that piece (its forward, draw, ranking,
    overhead), the live-row recompute |A|/L and the backward 2|A|/L come on top."""
    out = {piece: acc.nfe * share for piece, share in confidence.items()}
    out["live-row recompute"] = out.get("live-row recompute", 0.0) + acc.live_rows_fwd / length
    out["live-row backward"] = out.get("live-row backward", 0.0) + 2 * acc.live_rows_bwd / length
    return out


def measure(args) -> tuple[list[dict], str]:
    setup_device("cpu")
    if args.device != "cpu":
        raise BenchError("the profile runs on the CPU only here (the GPU's is in bench.step's --device cuda rows)")
    model = random_model(args.shape, "cpu", torch.float32)
    length = args.length
    prompt = args.prompt if args.prompt is not None else 3 * length // 4
    specs = {k: VARIANTS[k] for k in ("confidence", "boe_masked", "boe_candidates")}
    results, accounts = profile_variants(model, specs, length, prompt, args.repeats)
    base = results["confidence"]["step"][0]
    machine, load = machine_name("cpu"), load_average()
    rows = []
    confidence = {piece: ms / base for piece, (ms, _) in results["confidence"].items() if piece != "step"}
    for label in specs:
        acc_shares = accounted_shares(accounts[label], length, confidence)
        for phase in PHASES + ["other", "step"]:
            ms, ops = results[label][phase]
            share = ms / base
            accounted = acc_shares.get(phase, 0.0) if phase != "step" else accounts[label].cost_fwd_equiv
            rows.append({"machine": machine, "load_avg": load, "shape": args.shape, "L": length, "prompt": prompt,
                         "variant": label, "phase": phase, "cpu_ms": round(ms, 2),
                         "share_of_confidence_step": round(share, 4), "accounted_share": round(accounted, 4),
                         "unaccounted_share": round(share - accounted, 4) if label != "confidence" else "",
                         "aten_ops": ops})
    return rows, report(rows, args, base)


def report(rows: list[dict], args, base_ms: float) -> str:
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    get = lambda v, p: next(r for r in rows if r["variant"] == v and r["phase"] == p)  # noqa: E731
    lines = ["# One BoE step vs one Confidence step, profiled (`python -m boe_bench.bench.profile`)", "",
             f"{rows[0]['machine']}, one torch thread, load average {rows[0]['load_avg']}. Random `{args.shape}` "
             f"weights (4 layers, d=256, vocab 4096, float32), L={args.length}, prompt {rows[0]['prompt']} "
             f"(|M| = {args.length - int(rows[0]['prompt'])}), first block (block {BLOCK}, budget {BUDGET}, rho 0.25); torch.profiler CPU "
             f"totals, median of {args.repeats} profiled steps per variant. Shares are of one Confidence step "
             f"({base_ms:.1f} ms profiled); `acc.` is what cost_fwd_equiv charges the piece (Confidence's share of it per NFE, plus 2|A|/L for the backward and |A|/L for a recompute); `unacc.` = share - "
             "acc. The profiler's own per-operator cost inflates every share a little and the Python row most.", "",
             "| piece | " + " | ".join(f"{v} share (acc. / unacc.) [ops]" for v in variants) + " |",
             "|---|" + "---|" * len(variants)]
    for phase in PHASES + ["other", "step"]:
        cells = []
        for v in variants:
            r = get(v, phase)
            extra = f" ({float(r['accounted_share']):.3f} / {float(r['unaccounted_share']):+.3f})" \
                if v != "confidence" else ""
            cells.append(f"{float(r['share_of_confidence_step']):.3f}{extra} [{r['aten_ops']}]")
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="cpu-bench")
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--prompt", type=int, default=None, help="prompt tokens (default 3/4 of --length)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--notes", default=None, help="a markdown file appended under the table")
    parser.add_argument("--out", default=None, help="CSV (default runs/bench/boe_profile.csv); markdown beside it")
    args = parser.parse_args()
    if args.length <= BLOCK * 4:
        raise BenchError(f"--length must be over {BLOCK * 4} (prompt 3L/4 plus a block), got {args.length}")
    out = out_path(args.out, "boe_profile.csv")
    rows, text = measure(args)
    if args.notes:
        text += "\n" + open(args.notes).read()
    print(text)
    write_results(out, text, rows, FIELDS)


if __name__ == "__main__":
    fail_cleanly(main)
