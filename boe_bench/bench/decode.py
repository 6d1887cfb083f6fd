"""Whole-decode cost of BoE next to Confidence on a GSM8K-shaped job (Table 5's setting).

One job (by default; ``--prompt``/``--gen`` set another): a 5-shot-sized prompt (900 tokens
of random ids), L = 128 generated tokens, one token per step (128 steps), blocks of 32, no
early stop. Confidence and each BoE reading at
rho 0.10 / 0.25 / 0.50 decode it end to end on the same random-weight model in one process
(``common``: thread CPU time on a CPU, CUDA events on a GPU). On a CPU the decodes of a repeat
run side by side in ``lockstep``, one step of each at a time in ABBA order; on a GPU whole
decodes are interleaved ABBA over repeats. Reported per variant: its time (median, min, max
over repeats), its ratio to the Confidence decode of the same repeat (median, spread), on a
CPU the floor ratio (every step's fastest repeat, ``floor_ratio``), the accounted ratio
(cost_fwd_equiv over Confidence's) and the gap between measured and accounted, and, on a CPU,
that gap split step by step (``step_decomposition``): what a ranking step costs whatever its
live rows, what its live rows cost against their accounting, and how much of the gap lies
outside the ranking steps; and, on a CPU, the read floor (``read_floor``: what one live row's
input gradient must read, over a forward) and the roofline it sets (``roofline``: each
ranking step at the larger of its accounting and one forward plus that floor): what the
decode would cost on this machine with no operator overhead; and the product bound (each
ranking step at one forward plus the bare matrix products of its own live pass, at its own
row counts, ``product_floor``): what this machine's BLAS charges for those products alone.

    python -m boe_bench.bench.decode                                    # CPU -> runs/bench/boe_decode.csv
    python -m boe_bench.bench.decode --out results/bench/boe_decode.csv # the committed table
    python -m boe_bench.bench.decode --device cuda --batch 1,8,32 --out $OUT/decode_gpu.csv
    python -m boe_bench.bench.decode --merge decode_gpu.csv --out results/bench/boe_decode.csv
    python -m boe_bench.bench.decode --rhos 0.25 --autograd-twin        # A/B: hand-written backward vs autograd
    python -m boe_bench.bench.decode --rhos 0.25 --compiled             # also each BoE variant, compile_backward on
    python -m boe_bench.bench.decode --prompt 128 --gen 256             # a zero-shot-shaped job (few prompt rows)
    python -m boe_bench.bench.decode --rhos 0.25 --memory-load 1024     # beside a neighbour's memory traffic

Rows of this run's (machine, batch, prompt, gen) replace earlier ones in the CSV; the markdown beside it
is rebuilt from the whole CSV.
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field

import torch

from boe_bench.bench.common import (
    SHAPES, BenchError, Reading, fail_cleanly, floor_ratio, interleaved, load_average, lockstep, machine_name,
    memory_load, merge_csv, out_path, random_model, ratio_stats, read_csv, setup_device, spread, timed, verdict,
    write_results,
)
from boe_bench.models.transformer import block_maps
from boe_bench.samplers import Schedule, build_sampler

PROMPT, GEN, BLOCK = 900, 128, 32
DEFAULT_ROWS, DEFAULT_RHO = "masked", 0.25
READINGS = ("candidates", "masked")
# The issue's targets (CPU time, whole decode): the default and rows: candidates (Table 5's figure).
TARGETS = {("masked", 0.25): 1.15, ("candidates", 0.25): 1.08}
GPU_TARGET = 1.10  # the default at batch >= 8
GAP_LIMIT = 0.05
FLOOR_REPEATS = 15  # read_floor: one forward and one set of reads each, about a forward's time
PRODUCT_REPEATS = 5  # product_floors: as many, at each live-row count a decode ranked with
FIELDS = ["machine", "load_avg", "batch", "shape", "prompt", "gen", "dtype", "clock", "variant", "rows", "rho", "repeats",
          "seconds_median", "seconds_min", "seconds_max", "wall_median_s", "ratio_median", "ratio_min", "ratio_max",
          "ratio_spread", "wall_ratio_median", "flag", "ratio_floor", "interleave", "nfe", "cost_fwd_equiv",
          "accounted_ratio", "gap", "rank_steps", "fixed_per_rank_step", "backward_scale", "unaccounted_rank",
          "unaccounted_other", "read_floor", "bound", "product_bound", "note"]


# Variants decoded on a twin model whose live blocks build their graph with autograd
# (``TransformerDenoiser.BACKWARD_BY_HAND = False``): the implementation before the
# hand-written backward, side by side with it (``--autograd-twin``). Not held to the targets.
TWIN = "_autograd"
# Variants decoded with the sampler's ``compile_backward`` on (``--compiled``): the same model,
# the live blocks' backward through torch.compile. Held to the targets beside the default's.
COMPILED = "_compiled"


def variants(readings: list[str], rhos: list[float], dense: bool, twin: bool = False,
             compiled: bool = False) -> dict[str, dict]:
    out = {"confidence": dict(name="confidence")}
    for rows in readings:
        for rho in rhos:
            out[f"boe_{rows}_rho{rho:.2f}"] = dict(name="boe", rows=rows, rho=rho)
            if twin:
                out[f"boe_{rows}_rho{rho:.2f}{TWIN}"] = dict(name="boe", rows=rows, rho=rho)
            if compiled:
                out[f"boe_{rows}_rho{rho:.2f}{COMPILED}"] = dict(name="boe", rows=rows, rho=rho, compile_backward=True)
    if dense:
        out["boe_all_rho0.25"] = dict(name="boe", rows="all", rho=0.25)
    return out


@dataclass
class Decoded:
    """What one decode hands the bench: the first example's accounting, the accounted cost
    (forward-equivalents, A.3.4) of each of its steps, in order, and each step's live rows
    (``live_rows``: rows through the blocks' backward, rows through the LM head's)."""

    accounting: object
    step_costs: list[float]
    step_rows: list[tuple[int, int]] = field(default_factory=list)


def live_rows(fwd: int, bwd: int) -> tuple[int, int]:
    """(rows through the blocks' backward, rows through the LM head's) of one step whose
    accounting counted ``fwd`` live-row forward rows and ``bwd`` backward rows. The blocks run
    every backward row; the head runs them too, except under ``candidates``' leave-one-out,
    whose |C| copies of |C| rows (bwd = |C|^2, fwd = |C|) share the head's values and take its
    input gradient over the |C| rows once (``_HeadEntropy``)."""
    return bwd, (fwd if 0 < fwd < bwd else bwd)


def decode_fn(model, spec: dict, prompts: list[list[int]], gen: int):
    """A callable ``run(pause)`` decoding the job once, calling ``pause()`` before every step
    (``lockstep``); returns a ``Decoded``."""
    sampler = build_sampler(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
    schedule = Schedule(gen_length=gen, steps=gen, block_length=BLOCK)
    step = sampler.step

    def run(pause):
        costs, rows = [], []

        def paused_step(model, state, *args, **kwargs):
            pause()
            acc = state.accounting[0]
            before = acc.cost_fwd_equiv, acc.live_rows_fwd, acc.live_rows_bwd
            out = step(model, state, *args, **kwargs)
            costs.append(acc.cost_fwd_equiv - before[0])
            rows.append(live_rows(acc.live_rows_fwd - before[1], acc.live_rows_bwd - before[2]))
            return out

        sampler.step = paused_step  # this instance only: the sampler's own loop calls it
        return Decoded(sampler.generate(model, prompts, schedule).accounting[0], costs, rows)

    return run


def step_decomposition(readings: list[Reading], baseline: list[Reading]) -> dict:
    """Where a decode's time above its accounting goes, step by step (CPU ``lockstep``
    readings; empty otherwise). For step s: r_s, its fastest repeat over Confidence's same
    step's fastest, and c_s, its accounted cost over Confidence's (1 where the step does not
    rank, i.e. runs no backward). Over the steps that rank (c_s > 1), the least-squares line
    r_s - 1 = fixed + scale (c_s - 1): ``fixed_per_rank_step`` is what a ranking step costs
    whatever its live rows (in Confidence steps; the accounting charges such a cost nothing),
    ``backward_scale`` what one accounted forward-equivalent of live-row work costs (1 where
    the accounting is exact). And the decode's floor ratio minus its accounted ratio, split
    into the ranking steps' part (``unaccounted_rank``: sum of their time minus c_s times
    Confidence's, over Confidence's decode) and the rest (``unaccounted_other``: the other
    steps and the set-up before the first; the finish is timed with the last step); the two add up
    to the floor ratio minus the accounted ratio weighted by Confidence's step times."""
    costs, base_costs = readings[-1].value.step_costs, baseline[-1].value.step_costs
    slices = {len(r.steps or ()) for r in (*readings, *baseline)}
    if slices != {len(costs) + 1} or len(costs) != len(base_costs) or not costs:
        return {}
    fastest = lambda rs: [min(column) for column in zip(*(r.steps for r in rs))]  # noqa: E731
    mine, base = fastest(readings), fastest(baseline)
    total = sum(base)
    ratio = [a / b for a, b in zip(mine[1:], base[1:])]
    accounted = [c / b for c, b in zip(costs, base_costs)]
    ranking = [i for i, c in enumerate(accounted) if c > 1 + 1e-9]
    rank_part = sum(mine[i + 1] - accounted[i] * base[i + 1] for i in ranking)
    out = {"rank_steps": len(ranking), "unaccounted_rank": round(rank_part / total, 4),
           "unaccounted_other": round((sum(mine) - sum(base) - sum(mine[i + 1] - base[i + 1] for i in ranking))
                                      / total, 4)}
    xs, ys = [accounted[i] - 1 for i in ranking], [ratio[i] - 1 for i in ranking]
    if len(set(xs)) > 1:
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        scale = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        out.update(fixed_per_rank_step=round(my - scale * mx, 4), backward_scale=round(scale, 4))
    return out


def roofline(step_costs: list[float], base_costs: list[float], floor: float | list[float],
             accounted: bool = True) -> float:
    """A decode's cost over Confidence's accounted cost if each ranking step (accounted above
    Confidence's same step) cost one forward plus ``floor``: the larger of that and its
    accounting (``accounted``), or that alone. ``floor``: one share of a forward for every
    step (``read_floor``: the reads its backward's matmuls make whatever its live rows), or
    one per step (``product_floor`` at the step's own live rows). A.3.4 counts a step's live
    rows, which on a CPU bounds its backward from below only while they are many; with few,
    the reads bound it. What a decode measures above the first is the implementation's
    (operator dispatch, small operators, products slower than their reads); above the
    second, with ``product_floor``, the rest of the pass: operator dispatch, elementwise work,
    and what its products lose inside a decode against bare."""
    floors = floor if isinstance(floor, list) else [floor] * len(step_costs)
    total = sum((max(c, b * (1 + f)) if accounted else b * (1 + f)) if c > b * (1 + 1e-9) else c
                for c, b, f in zip(step_costs, base_costs, floors))
    return total / sum(base_costs)


def product_floor(model, batch: int, length: int, repeats: int, device: str, block_rows: int = 1,
                  head_rows: int = 1) -> dict:
    """What a live pass's matrix products cost by themselves, as a share of one forward over
    ``batch`` canvases of ``length`` rows: every block's weights once at ``block_rows`` rows per
    canvas (input gradients g W from each map's output side), the LM head's at ``head_rows``,
    and each layer's frozen keys and values three times: the scores q K^T for ``head_rows``
    live queries (under ``candidates``' leave-one-out the copies share them, as they share the
    head's values: ``live_rows``), dP = g V^T and dq = dS K for ``block_rows``; nothing else
    around them. Each repeat times a full forward, then these products over the keys and
    values it just wrote, as a ranking step's backward follows its forward. At one row each (``read_floor``) this is what a live
    row must read, in any implementation: A.3.4 charges a live row 1/L of a forward per pass,
    and on a CPU, where one row's matmuls run at the speed of memory, the reads cost more. At
    a step's own rows it is what this machine's BLAS charges for the products that step
    computes, with no operator dispatch or elementwise work. Returns the median share, its
    spread over repeats, and the forward's and the products' median seconds."""
    # In the backward's order: the LM head, then the blocks from the last, each from down to q.
    maps = [model.hf.lm_head] + [m for layer in reversed(model.hf.model.layers) for m in reversed(block_maps(layer))]
    dtype = model.hf.lm_head.weight.dtype
    grads = [torch.randn(batch * (head_rows if i == 0 else block_rows), m.out_features, dtype=dtype, device=device)
             for i, m in enumerate(maps)]
    ids = torch.randint(0, model.vocab_size - 1, (batch, length), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    groups, head_dim = model.n_kv_heads, model.head_dim
    query = torch.randn(batch, groups, model.n_heads // groups * head_rows, head_dim, dtype=dtype, device=device)
    grad = torch.randn(batch, groups, model.n_heads // groups * block_rows, head_dim, dtype=dtype, device=device)
    d_scores = torch.randn(batch, groups, model.n_heads // groups * block_rows, length, dtype=dtype, device=device)
    held = {}

    def forward():
        with torch.no_grad():
            held["frozen"] = model.forward_with_state(ids)[1]

    def products():
        with torch.no_grad():
            for g, m in zip(grads, maps):
                g @ m.weight
            for k, v in zip(held["frozen"].keys, held["frozen"].values):
                query @ k.transpose(-1, -2)
                grad @ v.transpose(-1, -2)
                d_scores @ k

    forward(), products()  # warm-up
    times = {"forward": [], "products": []}
    for _ in range(repeats):
        times["forward"].append(timed(forward, device)().seconds)
        times["products"].append(timed(products, device)().seconds)
    shares = [r / f for r, f in zip(times["products"], times["forward"])]
    return {"share": round(statistics.median(shares), 4), "spread": round(spread(shares), 4),
            "forward_s": round(statistics.median(times["forward"]), 6),
            "products_s": round(statistics.median(times["products"]), 6)}


def read_floor(model, batch: int, length: int, repeats: int, device: str) -> dict:
    """``product_floor`` at one live row: what one live row's input gradient must read (every
    weight once, each layer's frozen keys and values three times), as a share of a forward."""
    out = product_floor(model, batch, length, repeats, device)
    return {"read_floor": out["share"], "read_floor_spread": out["spread"], "forward_s": out["forward_s"],
            "reads_s": out["products_s"]}


def product_floors(model, batch: int, length: int, decoded: list, repeats: int, device: str) -> dict:
    """``product_floor`` share at every (block rows, head rows) a ranking step of these decodes
    (``Decoded``) ran, measured once each."""
    pairs = sorted({rows for d in decoded for rows in d.step_rows if rows[0] > 0})
    print(f"product floors at {len(pairs)} live-row counts ({repeats} repeats each)", flush=True)
    return {pair: product_floor(model, batch, length, repeats, device, *pair)["share"] for pair in pairs}


def measure(args) -> list[dict]:
    gpu, dtype = setup_device(args.device, args.threads)
    shape = args.shape or ("llada-8b" if gpu else "cpu-bench")
    if args.gen % BLOCK:
        raise BenchError(f"--gen must be a multiple of the block ({BLOCK}), got {args.gen}")
    model = random_model(shape, args.device, dtype)
    if args.compiled and gpu:
        raise BenchError("--compiled is a CPU variant (on a GPU the live pass is replayed as a CUDA graph)")
    specs = variants(args.readings.split(","), [float(r) for r in args.rhos.split(",")], args.dense,
                     args.autograd_twin, args.compiled)
    twin = None
    if args.autograd_twin:
        twin = random_model(shape, args.device, dtype)  # the same seed: the same weights
        twin.BACKWARD_BY_HAND = False
    unknown = set(args.readings.split(",")) - {"masked", "candidates", "all"}
    if unknown:
        raise BenchError(f"unknown --readings {', '.join(sorted(unknown))}; choose from masked, candidates, all")
    if args.memory_load < 0:
        raise BenchError(f"--memory-load must be megabytes >= 0 (0: no load), got {args.memory_load}")
    if args.memory_load and gpu:
        raise BenchError("--memory-load is a CPU measurement (a GPU decode does not wait on host memory)")
    machine = machine_name(args.device, args.machine)
    if args.memory_load:
        machine += f", {args.memory_load} MB memory load on the other core"
    rows = []
    for batch in (int(b) for b in args.batch.split(",")):
        generator = torch.Generator().manual_seed(batch)
        # Random ids below the special tokens' range stand in for the 5-shot prompt's text.
        prompts = [torch.randint(0, model.vocab_size - 1, (args.prompt,), generator=generator).tolist()
                   for _ in range(batch)]
        decodes = {label: decode_fn(twin if label.endswith(TWIN) else model, spec, prompts, args.gen)
                   for label, spec in specs.items()}
        loads = []

        def progress(repeat, label, reading):
            loads.append(load_average())
            print(f"batch {batch} repeat {repeat} {label}: {reading.seconds:.2f}s (wall {reading.wall_s:.2f}s, "
                  f"load {loads[-1]})", flush=True)

        # Warm-up (both): one whole untimed decode of every variant (allocator, kernels, CUDA
        # graphs). A decode in few steps was not enough on the CPU: the first timed repeat ran 5-15% slow.
        if gpu:
            runs = {label: timed(lambda run=run: run(lambda: None), args.device) for label, run in decodes.items()}
            readings = interleaved(runs, args.repeats, progress=progress)
            floor = {}
        else:
            with memory_load(args.memory_load):
                readings = lockstep(decodes, args.repeats, progress=progress)
                floor = read_floor(model, batch, args.prompt + args.gen, FLOOR_REPEATS, args.device)
                floors = product_floors(model, batch, args.prompt + args.gen,
                                        [readings[label][-1].value for label in specs if label != "confidence"],
                                        PRODUCT_REPEATS, args.device)
        base = readings["confidence"][0].value.accounting
        for label, spec in specs.items():
            acc = readings[label][-1].value.accounting
            stats = ratio_stats(readings[label], readings["confidence"])
            stats["ratio_floor"] = "" if gpu else round(floor_ratio(readings[label], readings["confidence"]), 4)
            stats["interleave"] = "decode" if gpu else "step"
            if label != "confidence":
                stats.update(step_decomposition(readings[label], readings["confidence"]))
                if floor:
                    decoded, baseline = readings[label][-1].value, readings["confidence"][-1].value
                    stats["bound"] = round(roofline(decoded.step_costs, baseline.step_costs, floor["read_floor"]), 4)
                    own = [floors.get(rows, 0.0) for rows in decoded.step_rows]
                    stats["product_bound"] = round(roofline(decoded.step_costs, baseline.step_costs, own, accounted=False), 4)
            accounted = acc.cost_fwd_equiv / base.cost_fwd_equiv
            rows.append({"machine": machine, "load_avg": f"{loads[0]} .. {loads[-1]}", "batch": batch, "shape": shape,
                         "prompt": args.prompt, "gen": args.gen, "dtype": str(dtype).removeprefix("torch."), "clock": "cuda events" if gpu else "thread cpu",
                         "variant": label, "rows": spec.get("rows", ""), "rho": spec.get("rho", ""), **stats,
                         "nfe": acc.nfe, "cost_fwd_equiv": round(acc.cost_fwd_equiv, 2),
                         "accounted_ratio": round(accounted, 4), "gap": round(stats["ratio_median"] - accounted, 4),
                         "read_floor": floor.get("read_floor", ""), "note": args.note})
    return rows


def key(row: dict) -> tuple:
    """Rows of one run: (machine, batch, prompt, gen); rows from before the job-shape columns
    are the GSM8K-shaped job."""
    return row["machine"], str(row["batch"]), str(row.get("prompt") or PROMPT), str(row.get("gen") or GEN)


def summary(rows: list[dict]) -> str:
    lines = ["# Whole-decode cost, BoE vs Confidence (`python -m boe_bench.bench.decode`)", "",
             f"GSM8K-shaped job (where a heading names no other prompt and L): {PROMPT}-token prompt (random ids "
             f"standing in for the 5-shot prompt), L={GEN}, one token per step, blocks of {BLOCK}, decoded end to end by every variant on the same "
             "random-weight model in one process. Interleaving (named in each heading): `step`, the decodes of a "
             "repeat side by side, one step of each at a time in ABBA order (CPU runs since this was added); "
             "`decode`, whole decodes ABBA over repeats (GPU, and earlier CPU runs). Time: thread CPU time on a CPU "
             "(one torch thread), CUDA events on a GPU; wall clock beside it. `ratio`: a decode's time over the "
             "Confidence decode of the same repeat (median; spread = (max - min) / median over repeats, ⚑ above "
             "10%); `floor`: every step's fastest repeat, summed, over Confidence's (interference taken out as far "
             "as the repeats allow); `accounted`: cost_fwd_equiv over Confidence's (A.3.4); `gap` = ratio - "
             "accounted. CPU model: "
             "LLaDA-shaped, 4 layers, d=256, MLP 1024, vocab 4096, float32. GPU: LLaDA-8B shape, bf16.", ""]
    for group in dict.fromkeys(key(r) for r in rows):
        mine = [r for r in rows if key(r) == group]
        interleave = mine[0].get("interleave") or "decode"  # rows from before the column: whole decodes
        job = "" if (group[2], group[3]) == (str(PROMPT), str(GEN)) else f", prompt {group[2]}, L={group[3]}"
        lines += [f"## {group[0]}, batch {group[1]}{job} ({mine[0].get('clock', '')}, interleaved by {interleave}, "
                  f"load average {mine[0].get('load_avg', '')})",
                  "", "| variant | seconds (median / min / max) | wall s | ratio (median, spread) | wall ratio "
                  "| floor | accounted | gap | NFE | cost |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in mine:
            floor = f"{float(r['ratio_floor']):.3f}" if r.get("ratio_floor") not in (None, "") else "-"
            lines.append(f"| {r['variant']} | {float(r['seconds_median']):.2f} / {float(r['seconds_min']):.2f} / "
                         f"{float(r['seconds_max']):.2f} | {float(r['wall_median_s']):.2f} | "
                         f"{float(r['ratio_median']):.3f} ({float(r['ratio_spread']):.1%}){' ⚑' if r['flag'] else ''} "
                         f"| {float(r['wall_ratio_median']):.3f} | {floor} | {float(r['accounted_ratio']):.3f} | "
                         f"{float(r['gap']):+.3f} | {r['nfe']} | {r['cost_fwd_equiv']} |")
        lines += [""] + targets(mine, gpu=mine[0].get("clock") == "cuda events", job=group[2:] == (str(PROMPT), str(GEN)))
        lines += decomposition(mine)
        note = next((r["note"] for r in mine if r.get("note")), "")
        if note:
            lines += ["", note]
        lines.append("")
    if not any(r.get("clock") == "cuda events" for r in rows):
        lines += ["## GPU", "", "Not measured: no GPU was lent to this run. On a GPU machine: "
                  "`python -m boe_bench.bench.decode --device cuda --batch 1,8,32 --out gpu.csv`, then "
                  "`python -m boe_bench.bench.decode --merge gpu.csv --out results/bench/boe_decode.csv` here. "
                  f"Target there: BoE (default) at batch >= 8 <= {GPU_TARGET}x Confidence.", ""]
    return "\n".join(lines)


def decomposition(rows: list[dict]) -> list[str]:
    """The per-step split of each variant's time above its accounting (``step_decomposition``),
    for runs that recorded it."""
    mine = [r for r in rows if r.get("rank_steps") not in (None, "")]
    if not mine:
        return []
    num = lambda r, f, fmt: format(float(r[f]), fmt) if r.get(f) not in (None, "") else "-"  # noqa: E731
    lines = ["", "Step by step (each step's fastest repeat over Confidence's same step): `fixed`, what a ranking step "
             "costs whatever its live rows, in Confidence steps, and `scale`, what one accounted forward-equivalent "
             "of live-row work costs, from the line through the ranking steps; floor minus accounted, split into the "
             "ranking steps' part and the rest's. `read floor`: what one live row's input gradient must read (every "
             "weight once, each layer's frozen keys and values three times, as bare one-row matmuls), timed right "
             "after a forward, over that forward; `bound`: the decode's ratio where each ranking step costs the larger "
             "of its accounting and one forward plus the read floor (`roofline`); `product bound`: the decode's ratio "
             "where each ranking step costs one forward plus the bare matrix products of its own live pass at its own "
             "row counts, timed the same way (`product_floor`): what this machine's BLAS charges for the products "
             "alone; above it lies the rest of the pass (operator dispatch, elementwise work, and what the products "
             "lose inside a decode against bare).", "",
             "| variant | ranking steps | fixed | scale | unaccounted: ranking steps / rest | read floor | bound | "
             "product bound |", "|---|---|---|---|---|---|---|---|"]
    for r in mine:
        lines.append(f"| {r['variant']} | {r['rank_steps']} | {num(r, 'fixed_per_rank_step', '+.3f')} | "
                     f"{num(r, 'backward_scale', '.2f')} | {num(r, 'unaccounted_rank', '+.3f')} / "
                     f"{num(r, 'unaccounted_other', '+.3f')} | {num(r, 'read_floor', '.3f')} | "
                     f"{num(r, 'bound', '.3f')} | {num(r, 'product_bound', '.3f')} |")
    return lines


def targets(rows: list[dict], gpu: bool, job: bool = True) -> list[str]:
    """The targets for this run, met or missed and by how much; the speed targets only on the
    job they were set for (``job``: the GSM8K shape), the gap to the accounting on every job."""
    rows = [r for r in rows if not r["variant"].endswith(TWIN)]
    # The default implementation's rows, then those with the compiled backward (``--compiled``).
    by = {(r["rows"], float(r["rho"]), r["variant"].endswith(COMPILED)): r for r in rows if r["rows"]}
    out = []
    for compiled in (False, True):
        for (reading, rho), limit in TARGETS.items() if job else ():
            r = by.get((reading, rho, compiled))
            if r is None:
                continue
            if gpu:
                if int(r["batch"]) < 8 or reading != DEFAULT_ROWS:
                    continue
                limit = GPU_TARGET
            result = verdict(float(r['ratio_median']), limit, float(r['ratio_spread']), float(r['ratio_min']),
                             float(r["ratio_max"]))
            out.append(f"- target BoE (rows: {reading}, rho {rho}{', compile_backward' if compiled else ''}) <= "
                       f"{limit} x Confidence: {float(r['ratio_median']):.3f} -> {result}"
                       f" (accounted {float(r['accounted_ratio']):.3f}"
                       + (f"; bound {float(r['bound']):.3f}" if r.get("bound") not in (None, "") else "") + ")")
    gaps = [(r["variant"], float(r["gap"])) for r in rows if r["rows"]]
    if gaps:
        bad = [f"{v} {g:+.3f}" for v, g in gaps if abs(g) > GAP_LIMIT]
        out.append(f"- measured within {GAP_LIMIT} of accounted: {len(gaps) - len(bad)} of {len(gaps)} variants"
                   + (f"; not: {', '.join(bad)}" if bad else ""))
    for reading, compiled in sorted({(k[0], k[2]) for k in by}):
        mine = sorted((r for r in rows if r["rows"] == reading and r["variant"].endswith(COMPILED) == compiled),
                      key=lambda r: float(r["rho"]))
        if len({float(r["rho"]) for r in mine}) < 2:  # one rho (e.g. an A/B of two code versions)
            continue
        costs = [float(r["cost_fwd_equiv"]) for r in mine]
        measured = [float(r["ratio_median"]) for r in mine]
        ordered = lambda xs: all(a < b for a, b in zip(xs, xs[1:]))  # noqa: E731
        out.append(f"- rows: {reading}{', compile_backward' if compiled else ''}, rho {' < '.join(str(r['rho']) for r in mine)}: cost "
                   f"{' / '.join(f'{c:g}' for c in costs)} ({'rising' if ordered(costs) else 'NOT rising'}), "
                   f"measured ratio {' / '.join(f'{m:.3f}' for m in measured)} "
                   f"({'rising' if ordered(measured) else 'NOT rising'})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default=None, choices=sorted(SHAPES))
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes (GPU: 1,8,32)")
    parser.add_argument("--readings", default=",".join(READINGS), help="BoE rows readings to time")
    parser.add_argument("--rhos", default="0.10,0.25,0.50")
    parser.add_argument("--dense", action="store_true", help="also time rows: all (the dense backward) at rho 0.25")
    parser.add_argument("--autograd-twin", action="store_true",
                        help="also decode every BoE variant on a twin model whose live blocks use autograd "
                             "(the implementation before the hand-written backward), side by side")
    parser.add_argument("--compiled", action="store_true",
                        help="also decode every BoE variant with compile_backward on (the live blocks' backward "
                             "through torch.compile; CPU), side by side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=PROMPT,
                        help=f"prompt tokens ({PROMPT}: the GSM8K 5-shot shape the targets are set on; 128 with "
                             "--gen 256: a zero-shot prompt, where most steps take the fused live route)")
    parser.add_argument("--gen", type=int, default=GEN, help="generated tokens = steps (a multiple of the block)")
    parser.add_argument("--threads", type=int, default=1, help="CPU torch threads (thread CPU time needs 1)")
    parser.add_argument("--memory-load", type=int, default=0, metavar="MB",
                        help="CPU: run a process copying MB megabytes back and forth beside the decodes "
                             "(a neighbour's memory traffic, on purpose); named in the rows' machine")
    parser.add_argument("--machine", default=None, help="machine name for the rows (default: detected)")
    parser.add_argument("--note", default="", help="a sentence printed under this run's table")
    parser.add_argument("--out", default=None, help="CSV to merge into (default runs/bench/boe_decode.csv)")
    parser.add_argument("--merge", default=None, help="a CSV from another machine to fold into --out")
    args = parser.parse_args()
    out = out_path(args.out, "boe_decode.csv")
    rows = read_csv(args.merge) if args.merge else measure(args)
    merged = merge_csv(rows, out, FIELDS, key)
    write_results(out, summary(merged))


if __name__ == "__main__":
    fail_cleanly(main)
