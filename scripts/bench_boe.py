"""What one BoE step costs next to one Confidence step, and the live-row vs dense backward.

Writes results/bench/boe_cost.csv (one row per measurement, medians over repeats, all ratios
from the same process) and results/bench/boe_cost.md. Random weights: speed only.

    python scripts/bench_boe.py                                  # CPU: 4 layers, d=256
    python scripts/bench_boe.py --device cuda --shape llada-8b    # GPU: LLaDA-8B shape, bf16
"""
from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch

from boe_bench.samplers import build_sampler
from boe_bench.samplers.base import DecodeState
from boe_bench.samplers.boe import entropy

import sys

sys.path.insert(0, str(Path(__file__).parent))
from bench_throughput import SHAPES, random_model, sync  # noqa: E402

SHAPES.setdefault("cpu-bench", dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                    intermediate_size=1024, vocab_size=4096))
SAMPLERS = {
    "confidence": dict(name="confidence"),
    "boe_masked": dict(name="boe", rows="masked", rho=0.25),
    "boe_candidates": dict(name="boe", rows="candidates", rho=0.25),
    "boe_all": dict(name="boe", rows="all", rho=0.25),
}


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def canvas(model, length: int, prompt_length: int, device: str) -> DecodeState:
    prompt = torch.randint(0, model.vocab_size - 1, (prompt_length,)).tolist()
    return DecodeState.start(model, [prompt], length - prompt_length)


def step_time(model, spec: dict, length: int, prompt_length: int, device: str, repeats: int) -> float:
    sampler = build_sampler(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
    sampler.total_steps = 64

    def one_step():
        state = canvas(model, length, prompt_length, device)
        window = state.block_window(0, 32)
        sampler.step(model, state, window, torch.full((1,), 2, device=state.x.device))

    return timed(one_step, device, repeats)


def backward_times(model, length: int, live: int, device: str, repeats: int) -> tuple[float, float]:
    """(dense backward, live-row backward) of the entropy of ``live`` rows, backward only."""
    state = canvas(model, length, length - 64, device)
    rows = torch.arange(length - live, length, device=state.x.device)[None]

    def dense():
        embeds = model.embed(state.x).detach().requires_grad_(True)
        out, _ = model.forward_rows(embeds, state.attention_mask)
        objective = entropy(out[:, -live:]).sum()
        sync(device)
        start = time.perf_counter()
        torch.autograd.grad(objective, embeds)
        sync(device)
        return time.perf_counter() - start

    def live_rows():
        _, frozen = model.forward_with_state(state.x, state.attention_mask)
        embeds = model.embed(state.x.gather(1, rows)).detach().requires_grad_(True)
        objective = entropy(model.live_forward(frozen, rows, embeds)).sum()
        sync(device)
        start = time.perf_counter()
        torch.autograd.grad(objective, embeds)
        sync(device)
        return time.perf_counter() - start

    dense(), live_rows()
    return (statistics.median(dense() for _ in range(repeats)),
            statistics.median(live_rows() for _ in range(repeats)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default=None, choices=sorted(SHAPES))
    parser.add_argument("--lengths", default="256,512,1024")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default="results/bench/boe_cost.csv")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    shape = args.shape or ("llada-8b" if gpu else "cpu-bench")
    repeats = args.repeats or (5 if gpu else 3)
    machine = torch.cuda.get_device_name() if gpu else "2-core CPU (dev VM)"
    dtype = torch.bfloat16 if gpu else torch.float32
    torch.manual_seed(0)
    model = random_model(shape, args.device, dtype)
    common = {"machine": machine, "shape": shape, "dtype": str(dtype).removeprefix("torch.")}
    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        for split, prompt_length in (("prompt_heavy", 3 * length // 4), ("generation_only", 1)):
            base = None
            for label, spec in SAMPLERS.items():
                seconds = step_time(model, spec, length, prompt_length, args.device, repeats)
                base = base or seconds
                rows.append({**common, "measure": "step", "variant": label, "L": length, "split": split,
                             "live_rows": None, "median_s": round(seconds, 6), "ratio": round(seconds / base, 3)})
                print(rows[-1], flush=True)
        dense, live = backward_times(model, length, 32, args.device, repeats)
        for label, seconds in (("dense_backward", dense), ("live_row_backward", live)):
            rows.append({**common, "measure": "backward", "variant": label, "L": length, "split": "prompt_heavy",
                         "live_rows": 32, "median_s": round(seconds, 6), "ratio": round(seconds / dense, 3)})
            print(rows[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
