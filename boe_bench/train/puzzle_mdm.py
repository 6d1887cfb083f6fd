"""Train ``puzzle_mdm``, the masked diffusion model of solved Sudoku grids, on freshly
generated grids.

    python -m boe_bench.train.puzzle_mdm --grid 9 --steps 400     # or: make train_puzzle_mdm

Objective (MDLM/LLaDA): draw t ~ U(0, 1) per grid, mask each cell with probability t (at
least one), and minimise the cross-entropy of the masked cells (mean over masked cells).
Deterministic under --seed (same device and thread count: the same weights); grids come from
a seed stream disjoint from the evaluation puzzles of task sudoku_grid. Uses the GPU when one
is present (the shipped 9x9 model: 400 steps on an H100, results/testbed/train_log_9x9_h100.csv).

Training never writes into the package: the checkpoint goes to runs/puzzle_mdm/ (its log beside
it), and ``model=puzzle_mdm model.path=<checkpoint>`` evaluates it; the shipped model changes
only by copying a checkpoint to boe_bench/data/puzzle_mdm_9x9.pt.
"""
from __future__ import annotations

import argparse
import csv
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from boe_bench.cpu_memory import keep_freed_memory_or_fail
from boe_bench.models.puzzle import PuzzleConfig, PuzzleDenoiser, random_grid

TRAIN_SEED_OFFSET = 0  # evaluation puzzles draw from seed 10**6 + seed (tasks/sudoku_grid.py)


def batch_of_grids(model: PuzzleDenoiser, rng: random.Random, batch: int, device) -> torch.Tensor:
    return torch.tensor([random_grid(model.shape, rng) for _ in range(batch)], device=device)


def masked_loss(model: PuzzleDenoiser, grids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    b, n = grids.shape
    t = torch.rand(b, 1, device=grids.device, generator=generator)
    masked = torch.rand(b, n, device=grids.device, generator=generator) < t
    masked[torch.arange(b), torch.randint(0, n, (b,), device=grids.device, generator=generator)] = True
    noisy = grids.masked_fill(masked, model.mask_id)
    logits, _ = model.forward_rows(model.embed(noisy))
    return F.cross_entropy(logits[masked], grids[masked])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m boe_bench.train.puzzle_mdm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default="9", choices=["4", "6", "9"])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="checkpoint (default: runs/puzzle_mdm/puzzle_mdm_<g>x<g>.pt)")
    parser.add_argument("--log", default=None, help="CSV training log (default: beside --out)")
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "layers", "d_model", "heads", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.d_model % args.heads:
        parser.error(f"--d-model ({args.d_model}) must be a multiple of --heads ({args.heads})")
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory_or_fail()
    out = Path(args.out or f"runs/puzzle_mdm/puzzle_mdm_{args.grid}x{args.grid}.pt")
    log_path = Path(args.log or out.with_suffix(".log.csv"))

    torch.manual_seed(args.seed)
    rng = random.Random(TRAIN_SEED_OFFSET + args.seed)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    cfg = PuzzleConfig(grid=args.grid, n_layers=args.layers, d_model=args.d_model, n_heads=args.heads,
                       d_ff=4 * args.d_model)
    model = PuzzleDenoiser(cfg).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(args.steps // 50, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / args.steps))))
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.2f}M parameters on {args.device}")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with log_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "lr", "elapsed_s"])
        bar = tqdm(range(1, args.steps + 1), desc="train", dynamic_ncols=True)
        for step in bar:
            loss = masked_loss(model, batch_of_grids(model, rng, args.batch, args.device), generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if step % 25 == 0 or step == args.steps:
                writer.writerow([step, round(loss.item(), 5), schedule.get_last_lr()[0], round(time.time() - started, 1)])
                f.flush()
                bar.set_postfix(loss=f"{loss.item():.3f}")
    model.cpu()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.checkpoint(), out)
    print(f"wrote {out} and {log_path}")


if __name__ == "__main__":
    main()
