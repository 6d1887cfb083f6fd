"""Batch throughput of the sampler protocol on a random-initialised LLaDA-shaped model.

Times full generations with the Confidence sampler (the protocol's cost floor: one forward
per step) at several batch sizes and writes a CSV (primary time: thread CPU on a CPU, CUDA
events on a GPU). On a GPU the default is the LLaDA-8B shape in bf16; on a CPU a small shape so it finishes in minutes.
The weights are random: this measures speed, never quality.

    python -m boe_bench.bench.throughput                        # CPU -> runs/bench/throughput.csv
    python -m boe_bench.bench.throughput --device cuda --out results/bench/throughput_h100.csv
"""
from __future__ import annotations

import argparse
import statistics

import torch

from boe_bench.bench.common import (
    SHAPES, fail_cleanly, load_average, machine_name, out_path, random_model, setup_device, spread, timed, write_csv,
)
from boe_bench.samplers import Schedule, build_sampler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default=None, choices=sorted(SHAPES))
    parser.add_argument("--batch-sizes", default=None)
    parser.add_argument("--prompt-length", type=int, default=None)
    parser.add_argument("--gen-length", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="CSV (default runs/bench/throughput.csv)")
    args = parser.parse_args()
    gpu, dtype = setup_device(args.device)
    shape = args.shape or ("llada-8b" if gpu else "cpu-small")
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,4,16,32" if gpu else "1,4,8")).split(",")]
    prompt_length = args.prompt_length or (256 if gpu else 64)
    gen_length = args.gen_length or (256 if gpu else 64)
    machine = machine_name(args.device)
    model = random_model(shape, args.device, dtype)
    schedule = Schedule(gen_length, gen_length // 2, 32)
    sampler = build_sampler("confidence", stop_early=False)
    rows = []
    for batch in batch_sizes:
        prompts = [torch.randint(0, model.vocab_size - 1, (prompt_length,)).tolist() for _ in range(batch)]
        sampler.generate(model, prompts, Schedule(32, 2, 32))  # warm-up: kernels, allocator
        run = timed(lambda: sampler.generate(model, prompts, schedule), args.device)
        readings = [run() for _ in range(args.repeats)]
        out = readings[-1].value
        seconds = statistics.median(r.seconds for r in readings)
        rows.append({
            "machine": machine, "shape": shape, "dtype": str(dtype).removeprefix("torch."), "sampler": "confidence",
            "batch_size": batch, "prompt_length": prompt_length, "gen_length": gen_length, "steps": schedule.steps,
            "clock": "cuda events" if gpu else "thread cpu", "load_avg": load_average(),
            "median_s": round(seconds, 4), "spread": round(spread([r.seconds for r in readings]), 4),
            "step_ms": round(1000 * seconds / schedule.steps, 3),
            "tokens_per_s": round(batch * gen_length / seconds, 1), "nfe": out.accounting[0].nfe,
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if gpu else None,
        })
        print(rows[-1], flush=True)
    out_path_ = out_path(args.out, "throughput.csv")
    write_csv(rows, out_path_, list(rows[0]))
    print(f"wrote {out_path_}")


if __name__ == "__main__":
    fail_cleanly(main)
