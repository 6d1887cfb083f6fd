"""The cost benchmarks' method (boe_bench.bench): interleaving, spread and flags, where output
goes, one-sentence errors, and small real runs of each entry point on a tiny random model."""
import math
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from boe_bench.bench import common
from boe_bench.bench.common import (
    BenchError, Reading, abba_order, floor_ratio, interleaved, lockstep, out_path, ratio_stats, verdict,
)


def test_abba_order_reverses_on_odd_repeats_and_interleaved_follows_it():
    assert abba_order(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert abba_order(["a", "b", "c"], 1) == ["c", "b", "a"]
    calls = []
    runs = {k: (lambda k=k: calls.append(k) or Reading(1.0, 1.0)) for k in "ab"}
    readings = interleaved(runs, repeats=3)
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b"]  # warm-ups, then ABBA
    assert all(len(v) == 3 for v in readings.values())


def test_lockstep_runs_one_step_of_each_run_at_a_time_in_abba_order():
    trace = []

    def run(label, steps):
        def go(pause):
            for i in range(steps):
                pause()
                trace.append((label, i))
            return label

        return go

    readings = lockstep({"a": run("a", 3), "b": run("b", 2)}, repeats=2)
    warm = [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    # After the warm-ups, each repeat: round 0 takes a then b to their first pause (nothing
    # traced), round 1 runs b's step 0 then a's, round 2 a's step 1 then b's (b ends), and a
    # goes on alone.
    one = [("b", 0), ("a", 0), ("a", 1), ("b", 1), ("a", 2)]
    assert trace == warm + one + one
    assert [r.value for r in readings["a"]] == ["a", "a"] and len(readings["b"]) == 2
    # A slice before the first pause and one after each: the reading is their sum.
    assert all(len(r.steps) == 4 for r in readings["a"]) and all(len(r.steps) == 3 for r in readings["b"])
    assert all(r.seconds == pytest.approx(sum(r.steps)) for r in readings["a"] + readings["b"])


def test_lockstep_times_each_run_on_its_own_thread_and_raises_its_errors():
    import time

    def busy(pause):
        for _ in range(3):
            pause()
            end = time.thread_time() + 0.03
            while time.thread_time() < end:
                pass

    def sleepy(pause):
        for _ in range(3):
            pause()
            time.sleep(0.03)

    readings = lockstep({"busy": busy, "sleepy": sleepy}, repeats=1)
    # The sleeping run's turns cost it no CPU time, and the busy one's wait for its turn neither.
    assert readings["busy"][0].seconds >= 0.09 and readings["sleepy"][0].seconds < 0.03
    assert readings["sleepy"][0].wall_s >= 0.09

    def broken(pause):
        pause()
        raise RuntimeError("step 1 failed")

    with pytest.raises(RuntimeError, match="step 1 failed"):
        lockstep({"busy": busy, "broken": broken}, repeats=1)


def test_floor_ratio_takes_each_steps_fastest_repeat():
    base = [Reading(0, 0, steps=[1.0, 2.0]), Reading(0, 0, steps=[3.0, 1.0])]  # fastest: 1 + 1
    other = [Reading(0, 0, steps=[1.5, 4.0]), Reading(0, 0, steps=[2.0, 1.5])]  # fastest: 1.5 + 1.5
    assert floor_ratio(other, base) == pytest.approx(1.5)
    assert math.isnan(floor_ratio([Reading(0, 0, steps=[1.0])] * 2, base))  # runs that paused unalike


def test_ratios_are_per_repeat_and_a_wide_spread_is_flagged_not_met():
    base = [Reading(1.0, 1.0), Reading(2.0, 2.0), Reading(1.0, 1.0)]
    steady = ratio_stats([Reading(1.1, 1.1), Reading(2.2, 2.2), Reading(1.1, 1.1)], base)
    assert steady["ratio_median"] == pytest.approx(1.1) and steady["ratio_spread"] == pytest.approx(0.0)
    assert steady["flag"] == "" and verdict(1.1, 1.15, steady["ratio_spread"]) == "met"
    noisy = ratio_stats([Reading(1.0, 1.0), Reading(2.6, 2.6), Reading(1.1, 1.1)], base)
    assert noisy["ratio_median"] == pytest.approx(1.1) and noisy["flag"]
    assert verdict(noisy["ratio_median"], 1.15, noisy["ratio_spread"]).startswith("not resolved")
    assert verdict(1.2, 1.15, 0.01).startswith("MISSED by 0.05")


def test_timed_measures_thread_cpu_time_not_sleep():
    import time

    reading = common.timed(lambda: time.sleep(0.2), "cpu")()
    assert reading.wall_s >= 0.2 and reading.seconds < 0.05


def test_default_output_never_lands_in_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert out_path(None, "boe_cost.csv") == Path("runs/bench/boe_cost.csv")
    with pytest.raises(BenchError, match=".csv"):
        out_path("results/bench/boe_cost.md", "x.csv")


@pytest.mark.parametrize("module, args", [("step", ["--out", "cost.txt"]), ("decode", ["--device", "tpu"]),
                                          ("decode", ["--readings", "sideways", "--shape", "test"]),
                                          ("decode", ["--memory-load", "-1", "--shape", "test"])])
def test_bad_arguments_end_in_one_sentence_and_exit_2(tmp_path, module, args):
    done = subprocess.run([sys.executable, "-m", f"boe_bench.bench.{module}", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1


def test_decode_rows_carry_machine_load_and_accounted_ratio(tmp_path):
    from boe_bench.bench.decode import FIELDS, measure, summary

    args = Namespace(device="cpu", threads=1, shape="test", gen=32, prompt=40, readings="masked", rhos="0.25,0.5",
                     dense=False, machine=None, batch="1", repeats=3, note="", autograd_twin=False, compiled=False,
                     memory_load=0)
    rows = measure(args)
    assert [r["variant"] for r in rows] == ["confidence", "boe_masked_rho0.25", "boe_masked_rho0.50"]
    assert all(r["machine"] and r["load_avg"] and r["repeats"] == 3 and set(FIELDS) >= set(r) for r in rows)
    assert rows[0]["accounted_ratio"] == 1.0 and rows[0]["ratio_median"] == 1.0
    # On a CPU the decodes ran side by side, step by step (one slice per step and one after).
    assert all(r["interleave"] == "step" and r["ratio_floor"] > 0 for r in rows) and rows[0]["ratio_floor"] == 1.0
    assert rows[1]["accounted_ratio"] > 1.0  # the live-row backward is counted
    # Each BoE row splits its time above the accounting step by step; Confidence's is the baseline.
    assert "rank_steps" not in rows[0] and all(r["rank_steps"] > 0 for r in rows[1:])
    fields = ("fixed_per_rank_step", "backward_scale", "unaccounted_rank", "unaccounted_other")
    assert all(math.isfinite(r[f]) for r in rows[1:] for f in fields)
    assert all((r["prompt"], r["gen"]) == (40, 32) for r in rows)
    # The read floor is measured once per run; a decode's roofline is at least its accounting.
    assert len({r["read_floor"] for r in rows}) == 1 and 0 < rows[0]["read_floor"] < 1
    assert "bound" not in rows[0] and all(r["bound"] >= r["accounted_ratio"] - 1e-4 for r in rows[1:])
    # The product bound charges each ranking step a forward and its own products: above Confidence.
    assert "product_bound" not in rows[0] and all(r["product_bound"] > 1.0 for r in rows[1:])
    text = summary(rows)
    assert "measured within 0.05 of accounted" in text and "rows: masked, rho 0.25 < 0.5" in text
    assert "| boe_masked_rho0.25 | " in text.split("Step by step")[1] and "| product bound |" in text
    # Another job than the GSM8K shape is named in its heading and not held to the speed targets.
    assert "batch 1, prompt 40, L=32 (" in text and "- target" not in text
    assert "- target BoE (rows: masked, rho 0.25)" in summary([dict(r, prompt="", gen="") for r in rows])


def test_step_decomposition_recovers_a_known_fixed_cost_and_scale():
    """Per-step readings built from a known law: a ranking step costs Confidence's step times
    1 + 0.1 + 0.5 (c - 1), a non-ranking one 5% more than Confidence's. The decomposition
    reads the law back from each step's fastest repeat (a slower repeat is ignored) and
    splits the time above the accounting between ranking steps and the rest."""
    from boe_bench.bench.common import Reading
    from boe_bench.bench.decode import Decoded, step_decomposition

    costs = [1.0, 1.2, 1.4, 1.0]
    base_steps = [0.5, 1.0, 1.0, 1.0, 1.1]  # set-up, then four steps (the last one timed with the finish)
    mine_steps = [0.5, 1.05, 1.2, 1.3, 1.15]
    base = [Reading(sum(base_steps), 0.0, Decoded(None, [1.0] * 4), base_steps)]
    mine = [Reading(0.0, 0.0, Decoded(None, costs), [t * k for t in mine_steps])
            for k in (1.0, 1.3)]
    out = step_decomposition(mine, base * 2)
    assert out["rank_steps"] == 2
    assert out["fixed_per_rank_step"] == pytest.approx(0.1) and out["backward_scale"] == pytest.approx(0.5)
    total = sum(base_steps)
    assert out["unaccounted_rank"] == pytest.approx(round((1.2 - 1.2 + 1.3 - 1.4) / total, 4))
    assert out["unaccounted_other"] == pytest.approx(round(0.10 / total, 4))
    # Readings without one slice per step (whole decodes, a GPU) are not decomposed.
    assert step_decomposition([Reading(1.0, 1.0, Decoded(None, costs))], base) == {}


def test_roofline_charges_each_ranking_step_at_least_the_read_floor():
    """Steps accounted above Confidence's rank: each costs the larger of its accounting and
    one forward plus the floor; steps that do not rank keep their accounting."""
    from boe_bench.bench.decode import roofline

    base = [1.0, 1.0, 1.0, 1.0]
    costs = [1.0, 1.01, 1.3, 1.0]  # two ranking steps: one under the floor, one above it
    assert roofline(costs, base, 0.05) == pytest.approx((1.0 + 1.05 + 1.3 + 1.0) / 4)
    assert roofline(costs, base, 0.0) == pytest.approx(sum(costs) / 4)
    assert roofline(base, base, 0.5) == pytest.approx(1.0)


def test_roofline_with_each_steps_own_floor_need_not_reach_the_accounting():
    """With one floor per step and ``accounted=False`` (the product bound), a ranking step
    costs one forward plus its own floor, below its accounting where the floor is lower."""
    from boe_bench.bench.decode import roofline

    base = [1.0, 1.0, 1.0, 1.0]
    costs = [1.0, 1.01, 1.3, 1.0]
    floors = [0.0, 0.2, 0.1, 0.0]
    assert roofline(costs, base, floors, accounted=False) == pytest.approx((1.0 + 1.2 + 1.1 + 1.0) / 4)
    assert roofline(costs, base, floors) == pytest.approx((1.0 + 1.2 + 1.3 + 1.0) / 4)


@pytest.mark.parametrize("reading", ["candidates", "masked"])
def test_each_step_records_the_rows_its_live_pass_ran(reading):
    """A decode records, per step, the rows its live pass sent through the blocks' backward
    and through the LM head's, from its accounting: ``candidates``' leave-one-out runs |C|
    copies of its |C| rows through the blocks and |C| rows through the head; ``masked`` runs
    its masked rows through both. The product floors are measured at exactly the ranking
    steps' row counts."""
    from boe_bench.bench.common import random_model, setup_device
    from boe_bench.bench.decode import decode_fn, product_floors

    setup_device("cpu")
    model = random_model("test", "cpu", torch.float32)
    prompts = [torch.randint(0, model.vocab_size - 1, (40,), generator=torch.Generator().manual_seed(0)).tolist()]
    decoded = decode_fn(model, dict(name="boe", rows=reading, rho=0.5), prompts, 32)(lambda: None)
    rows = decoded.step_rows
    assert len(rows) == len(decoded.step_costs) == 32
    assert sum(block for block, _ in rows) == decoded.accounting.live_rows_bwd
    ranking = [r for r, c in zip(rows, decoded.step_costs) if c > 1.0]
    assert ranking and all(block > 0 for block, _ in ranking)
    assert all(block == 0 for (block, _), c in zip(rows, decoded.step_costs) if c == 1.0)
    if reading == "candidates":
        assert all(block == head * head for block, head in ranking) and any(head > 1 for _, head in ranking)
        assert sum(head for _, head in ranking) == decoded.accounting.live_rows_fwd
    else:  # the masked rows of the step, fewer by one each step within a block's ranking steps
        assert all(block == head for block, head in ranking)
        assert ranking[0][0] == 32 and all(a[0] > b[0] for a, b in zip(ranking, ranking[1:]))
    floors = product_floors(model, 1, 72, [decoded], 1, "cpu")
    assert set(floors) == set(ranking) and all(share > 0 for share in floors.values())


def test_read_floor_times_one_rows_reads_against_a_forward():
    """On the test shape: one row's reads cost a positive share of a forward, far below one
    forward (they touch every weight once for one row, not L rows)."""
    from boe_bench.bench.common import random_model, setup_device
    from boe_bench.bench.decode import read_floor

    setup_device("cpu")
    model = random_model("test", "cpu", torch.float32)
    for batch in (1, 4):
        out = read_floor(model, batch, 256, 3, "cpu")
        assert 0 < out["read_floor"] < 0.5 and out["reads_s"] < out["forward_s"]
        assert out["read_floor_spread"] >= 0


def test_memory_load_runs_a_process_only_inside_the_block():
    from boe_bench.bench.common import memory_load

    with memory_load(0) as none:
        assert none is None
    with memory_load(8) as load:
        assert load.poll() is None  # running
    assert load.poll() is not None  # killed and reaped on leaving


def test_decode_autograd_twin_decodes_the_same_job_beside_and_is_not_held_to_targets():
    """``--autograd-twin``: each BoE variant also decodes on a twin model whose live blocks use
    autograd instead of the hand-written backward; the twin does the same accounted work (same
    NFE and cost: the two implementations choose the same tokens) and its rows stay out of the
    target lines."""
    from boe_bench.bench.decode import measure, targets

    args = Namespace(device="cpu", threads=1, shape="test", gen=32, prompt=40, readings="masked", rhos="0.25",
                     dense=False, machine=None, batch="1", repeats=1, note="", autograd_twin=True, compiled=False,
                     memory_load=0)
    rows = {r["variant"]: r for r in measure(args)}
    assert list(rows) == ["confidence", "boe_masked_rho0.25", "boe_masked_rho0.25_autograd"]
    mine, twin = rows["boe_masked_rho0.25"], rows["boe_masked_rho0.25_autograd"]
    assert (mine["nfe"], mine["cost_fwd_equiv"]) == (twin["nfe"], twin["cost_fwd_equiv"])
    lines = targets(list(rows.values()), gpu=False)
    assert any("rows: masked" in line for line in lines) and "autograd" not in " ".join(lines)
    assert "1 of 1 variants" in " ".join(lines) or "0 of 1 variants" in " ".join(lines)


def test_decode_compiled_variants_are_held_to_the_targets_beside_the_default():
    """``--compiled``: every BoE variant also decodes with ``compile_backward`` on; its rows get
    target lines of their own, and the default's lines still read the default's rows."""
    from boe_bench.bench.decode import TARGETS, targets, variants

    specs = variants(["masked"], [0.25], dense=False, compiled=True)
    assert specs["boe_masked_rho0.25_compiled"] == dict(name="boe", rows="masked", rho=0.25, compile_backward=True)
    assert "compile_backward" not in specs["boe_masked_rho0.25"]
    limit = TARGETS[("masked", 0.25)]
    row = dict(rows="masked", rho="0.25", batch="1", ratio_spread="0.01", accounted_ratio="1.11", gap="0.0")
    rows = [dict(row, variant="boe_masked_rho0.25", ratio_median=str(limit + 0.02), ratio_min=str(limit + 0.01),
                 ratio_max=str(limit + 0.03)),
            dict(row, variant="boe_masked_rho0.25_compiled", ratio_median=str(limit - 0.02),
                 ratio_min=str(limit - 0.03), ratio_max=str(limit - 0.01))]
    lines = [line for line in targets(rows, gpu=False) if line.startswith("- target")]
    assert len(lines) == 2
    assert "compile_backward" not in lines[0] and f"{limit + 0.02:.3f} -> MISSED" in lines[0]
    assert "compile_backward" in lines[1] and f"{limit - 0.02:.3f} -> met" in lines[1]


def test_reference_loop_rewrite_writes_what_our_confidence_decode_writes():
    """Our Confidence decode against our rewrite of LLaDA's generate.py low-confidence loop:
    same model, prompt and schedule (two blocks, two tokens per step), same tokens."""
    from boe_bench.bench.common import random_model
    from boe_bench.bench.reference import llada_budgets, reference_decode
    from boe_bench.samplers import Schedule, build_sampler

    assert llada_budgets(7, 3) == [3, 2, 2]
    model = random_model("test", "cpu", torch.float64, seed=3)
    prompt = torch.randint(0, model.vocab_size - 1, (1, 12), generator=torch.Generator().manual_seed(1))
    theirs = reference_decode(model, prompt, gen=16, steps=8, block=8)
    ours = build_sampler("confidence").generate(model, [prompt[0].tolist()], Schedule(16, 8, 8)).tokens
    assert (theirs != model.mask_id).all() and torch.equal(ours, theirs)


def test_profile_pieces_add_up_to_the_step():
    from boe_bench.bench.common import random_model
    from boe_bench.bench.profile import PHASES, profile_variants
    from boe_bench.bench.step import VARIANTS

    model = random_model("test", "cpu", torch.float32)
    specs = {k: VARIANTS[k] for k in ("confidence", "boe_masked", "boe_candidates")}
    medians, accounts = profile_variants(model, specs, 160, 120, repeats=1)
    for label, pieces in medians.items():
        total = sum(pieces[p][0] for p in PHASES + ["other"])
        assert total == pytest.approx(pieces["step"][0], rel=1e-6)
    assert medians["boe_masked"]["live-row backward"][0] > 0 and medians["confidence"]["live-row backward"][0] == 0
    assert medians["boe_candidates"]["live-row recompute"][0] > 0
    assert accounts["boe_masked"].live_rows_bwd == 40  # the masked rows of the canvas
    from boe_bench.samplers.base import Sampler

    assert "forward_live" not in vars(model) and not hasattr(Sampler.draw, "__wrapped__")  # labels removed


FAULTS_AFTER_WARMUP = """
import resource, sys, torch
torch.set_num_threads(1)
from boe_bench.cpu_memory import keep_freed_memory
kept = keep_freed_memory()
def step():  # three 16 MB tensors made and freed, as a step's activations are
    tensors = [torch.ones(4 << 20) for _ in range(3)]
    del tensors
for _ in range(6):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and minor-fault counts are Linux's")
def test_kept_freed_memory_makes_steps_of_the_same_sizes_fault_no_pages():
    """With glibc's thresholds fixed (``cpu_memory``), a step that makes and frees the same
    tensors as the one before reuses their memory: no page is faulted in again (with the
    system's thresholds the heap above 32 MB free is trimmed, and such a step usually faults
    8,000 pages). The C library must be glibc, which CI's and this image's are."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "BOE_BENCH_MALLOC"}
    done = subprocess.run([sys.executable, "-c", FAULTS_AFTER_WARMUP], capture_output=True, text=True, env=env,
                          timeout=120, check=True)
    kept, faults = done.stdout.split()
    assert kept == "True"
    assert int(faults) < 100  # 4 steps of 12,288 pages each


@pytest.mark.parametrize("env", [{"BOE_BENCH_MALLOC": "system"}, {"MALLOC_ARENA_MAX": "2"}])
def test_keep_freed_memory_leaves_the_system_allocator_to_a_user_who_chose(monkeypatch, env):
    from boe_bench import cpu_memory

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cpu_memory._apply() is False


@pytest.mark.parametrize("command", [["boe_bench.bench.decode", "--shape", "test", "--repeats", "1"],
                                     ["boe_bench.train.puzzle_mdm", "--steps", "1", "--out", "m.pt"]])
def test_a_misspelt_malloc_choice_ends_a_command_in_one_sentence(tmp_path, command):
    """``BOE_BENCH_MALLOC=sytem`` is refused (exit 2, one sentence naming the choices), not
    silently taken as the default, by a bench and by a trainer (``keep_freed_memory_or_fail``)."""
    env = dict(os.environ, BOE_BENCH_MALLOC="sytem")
    done = subprocess.run([sys.executable, "-m", *command], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: BOE_BENCH_MALLOC must be 'keep' (the default) or 'system' (glibc's own thresholds), got 'sytem'"]
    assert not (tmp_path / "runs" / "bench" / "boe_decode.csv").exists() and not (tmp_path / "m.pt").exists()


def test_cpu_rows_say_whether_freed_memory_was_kept(monkeypatch):
    """A CPU row's time depends on the allocator's thresholds, so its machine says which."""
    from boe_bench import cpu_memory

    monkeypatch.setattr(cpu_memory, "_applied", True)
    assert common.machine_name("cpu", "my box") == "my box, freed memory kept"
    assert common.machine_name("cpu").endswith("cores, freed memory kept")
    monkeypatch.setattr(cpu_memory, "_applied", False)
    assert common.machine_name("cpu", "my box") == "my box"
