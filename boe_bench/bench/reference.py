"""Harness overhead: our ``confidence`` decode vs LLaDA's ``generate.py`` low-confidence loop.

``reference_decode`` is our own minimal rewrite of what LLaDA's ``generate`` does per step
(github ML-GSAI/LLaDA, generate.py; no code copied): one forward of the whole canvas; at
temperature 0 the Gumbel step still lifts the logits to float64 and exponentiates them,
the token is their argmax; the confidence is the float64 softmax probability of that
token; positions after the current block and unmasked positions get -inf; ``topk`` of
each row's budget is written. Budgets per block as LLaDA splits them (base + remainder
first). Both decodes run the same random-weight model, prompt and schedule, interleaved
ABBA, timed by thread CPU time (``common``). The two must write the same tokens (checked;
they can differ only where our draw never picks MASK, which a random model's argmax
almost never is). Ours should cost at most what the reference's loop does.

    python -m boe_bench.bench.reference                                  # -> runs/bench/harness_overhead.csv
    python -m boe_bench.bench.reference --out results/bench/harness_overhead.csv
"""
from __future__ import annotations

import argparse

import torch

from boe_bench.bench.common import (
    SHAPES, BenchError, fail_cleanly, interleaved, load_average, machine_name, out_path, random_model, ratio_stats,
    setup_device, timed, verdict, write_results,
)
from boe_bench.samplers import Schedule, build_sampler

FIELDS = ["machine", "load_avg", "clock", "shape", "dtype", "prompt", "gen", "block", "steps", "variant", "repeats",
          "seconds_median", "seconds_min", "seconds_max", "wall_median_s", "ratio_median", "ratio_min", "ratio_max",
          "ratio_spread", "wall_ratio_median", "flag", "same_tokens"]
TARGET = 1.0


def llada_budgets(n_masked: int, steps: int) -> list[int]:
    """Tokens per step within a block, as LLaDA splits them: the remainder on the first steps."""
    base, extra = divmod(n_masked, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


@torch.no_grad()
def reference_decode(model, prompt: torch.Tensor, gen: int, steps: int, block: int) -> torch.Tensor:
    """Our rewrite of LLaDA's low-confidence loop at temperature 0 (see the module docstring)."""
    mask_id = model.mask_id
    x = torch.cat([prompt, torch.full((1, gen), mask_id, dtype=torch.long, device=prompt.device)], dim=1)
    start = prompt.shape[1]
    blocks = gen // block
    per_block = steps // blocks
    for b in range(blocks):
        end = start + (b + 1) * block
        budgets = llada_budgets(int((x[:, end - block:end] == mask_id).sum()), per_block)
        for k in budgets:
            masked = x == mask_id
            logits = model(x)
            lifted = logits.to(torch.float64).exp()  # the Gumbel step at temperature 0: noise ** 0 == 1
            tokens = lifted.argmax(-1)
            probs = torch.softmax(logits.to(torch.float64), dim=-1)
            conf = probs.gather(-1, tokens[..., None]).squeeze(-1)
            conf[:, end:] = float("-inf")
            conf = torch.where(masked, conf, float("-inf"))
            tokens = torch.where(masked, tokens, x)
            chosen = torch.zeros_like(masked)
            chosen[0, conf[0].topk(k).indices] = True
            x[chosen] = tokens[chosen]
    return x[:, start:]


def measure(args) -> tuple[list[dict], str]:
    gpu, dtype = setup_device(args.device)
    shape = args.shape or ("llada-8b" if gpu else "cpu-bench")
    if args.gen % args.block or args.steps % (args.gen // args.block):
        raise BenchError("--gen must be a multiple of --block and --steps a multiple of the number of blocks")
    model = random_model(shape, args.device, dtype)
    prompt = torch.randint(0, model.vocab_size - 1, (1, args.prompt), generator=torch.Generator().manual_seed(0))
    prompt = prompt.to(args.device)
    sampler = build_sampler("confidence")
    schedule = Schedule(gen_length=args.gen, steps=args.steps, block_length=args.block)
    ours = lambda: sampler.generate(model, [prompt[0].tolist()], schedule).tokens  # noqa: E731
    theirs = lambda: reference_decode(model, prompt, args.gen, args.steps, args.block).cpu()  # noqa: E731
    readings = interleaved({"llada_generate_rewrite": timed(theirs, args.device), "ours_confidence": timed(ours, args.device)},
                           args.repeats)
    same = bool(torch.equal(readings["ours_confidence"][0].value[0], readings["llada_generate_rewrite"][0].value[0]))
    common = {"machine": machine_name(args.device), "load_avg": load_average(),
              "clock": "cuda events" if gpu else "thread cpu", "shape": shape, "dtype": str(dtype).removeprefix("torch."),
              "prompt": args.prompt, "gen": args.gen, "block": args.block, "steps": args.steps, "same_tokens": same}
    rows = [{**common, "variant": label, **ratio_stats(readings[label], readings["llada_generate_rewrite"])}
            for label in ("llada_generate_rewrite", "ours_confidence")]
    r = rows[1]
    text = "\n".join([
        "# Harness overhead: our `confidence` decode vs LLaDA's generate.py loop (`python -m boe_bench.bench.reference`)",
        "", f"{common['machine']}, {common['clock']}, load average {common['load_avg']}. Random `{shape}` weights "
        f"({common['dtype']}), prompt {args.prompt}, L={args.gen}, {args.steps} steps, blocks of {args.block}, "
        f"temperature 0, batch 1; {args.repeats} interleaved (ABBA) repeats. The reference is our own rewrite of "
        "LLaDA's low_confidence loop (float64 lift and softmax over the whole canvas, as it does).", "",
        "| decode | seconds (median / min / max) | wall s | ratio to reference (median, spread) |", "|---|---|---|---|",
        *[f"| {x['variant']} | {x['seconds_median']:.2f} / {x['seconds_min']:.2f} / {x['seconds_max']:.2f} | "
          f"{x['wall_median_s']:.2f} | {x['ratio_median']:.3f} ({x['ratio_spread']:.1%}){' ⚑' if x['flag'] else ''} |"
          for x in rows], "",
        f"- same tokens written: {same}",
        f"- target ours <= {TARGET} x reference: {r['ratio_median']:.3f} -> "
        f"{verdict(r['ratio_median'], TARGET, r['ratio_spread'], r['ratio_min'], r['ratio_max'])}", ""])
    return rows, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default=None, choices=sorted(SHAPES))
    parser.add_argument("--prompt", type=int, default=900)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="CSV (default runs/bench/harness_overhead.csv); markdown beside it")
    args = parser.parse_args()
    out = out_path(args.out, "harness_overhead.csv")
    rows, text = measure(args)
    print(text)
    write_results(out, text, rows, FIELDS)


if __name__ == "__main__":
    fail_cleanly(main)
