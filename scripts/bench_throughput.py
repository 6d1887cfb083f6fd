"""Batch throughput of the sampler protocol on a random-initialised LLaDA-shaped model.

Times full generations with the Confidence sampler (the protocol's cost floor: one forward
per step) at several batch sizes and writes results/bench/throughput.csv. On a GPU the
default is the LLaDA-8B shape in bf16; on a CPU a small shape so it finishes in minutes.
The weights are random: this measures speed, never quality.

    python scripts/bench_throughput.py                       # CPU, small shape
    python scripts/bench_throughput.py --device cuda --shape llada-8b
"""
from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from boe_bench.models.tiny import build_char_tokenizer
from boe_bench.models.transformer import TransformerDenoiser
from boe_bench.samplers import Schedule, build_sampler

SHAPES = {
    # LLaDA-8B: 32 layers, d=4096, 32 heads (no GQA), MLP 12288, vocab 126464.
    "llada-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, intermediate_size=12288,
                     vocab_size=126464),
    "cpu-small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                      vocab_size=512),
}


def random_model(shape: str, device: str, dtype: torch.dtype) -> TransformerDenoiser:
    config = LlamaConfig(**SHAPES[shape], num_key_value_heads=SHAPES[shape]["num_attention_heads"],
                         max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            hf = LlamaForCausalLM(config).eval()
        finally:
            torch.set_default_dtype(previous)
    tokenizer = build_char_tokenizer()
    return TransformerDenoiser(hf, tokenizer, mask_id=config.vocab_size - 1, eos_ids=(), name=f"random-{shape}")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default=None, choices=sorted(SHAPES))
    parser.add_argument("--batch-sizes", default=None)
    parser.add_argument("--prompt-length", type=int, default=None)
    parser.add_argument("--gen-length", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/bench/throughput.csv")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    shape = args.shape or ("llada-8b" if gpu else "cpu-small")
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,4,16,32" if gpu else "1,4,8")).split(",")]
    prompt_length = args.prompt_length or (256 if gpu else 64)
    gen_length = args.gen_length or (256 if gpu else 64)
    dtype = torch.bfloat16 if gpu else torch.float32
    machine = torch.cuda.get_device_name() if gpu else "2-core CPU (dev VM)"
    torch.manual_seed(0)
    model = random_model(shape, args.device, dtype)
    schedule = Schedule(gen_length, gen_length // 2, 32)
    sampler = build_sampler("confidence", stop_early=False)
    rows = []
    for batch in batch_sizes:
        prompts = [torch.randint(0, model.vocab_size - 1, (prompt_length,)).tolist() for _ in range(batch)]
        sampler.generate(model, prompts, Schedule(32, 2, 32))  # warm-up: kernels, allocator
        times = []
        for _ in range(args.repeats):
            sync(args.device)
            start = time.perf_counter()
            out = sampler.generate(model, prompts, schedule)
            sync(args.device)
            times.append(time.perf_counter() - start)
        wall = statistics.median(times)
        rows.append({
            "machine": machine, "shape": shape, "dtype": str(dtype).removeprefix("torch."), "sampler": "confidence",
            "batch_size": batch, "prompt_length": prompt_length, "gen_length": gen_length, "steps": schedule.steps,
            "median_wall_s": round(wall, 4), "step_ms": round(1000 * wall / schedule.steps, 3),
            "tokens_per_s": round(batch * gen_length / wall, 1), "nfe": out.accounting[0].nfe,
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if gpu else None,
        })
        print(rows[-1], flush=True)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
