"""Check this machine before spending GPU hours: gold answers through every task's scorer,
the code sandbox's hostile battery, a decode of 8 Sudoku puzzles by the trained text_mdm (a floor on
cell accuracy), and a short decode with every sampler on the tiny model.

    python -m boe_bench.selfcheck [--full] [--data <task>=<path> ...] [--samplers a,b] [--skip-samplers] [--skip-sandbox]

Gold answers go through the one scoring path (``boe_bench.score.rescore``: ``Task.score``
then ``Task.aggregate``), on a small slice of each benchmark shipped in the package
(boe_bench/data/selfcheck, sources in boe_bench/data/SOURCES.md), so it works offline; the
puzzle tasks use their shipped data. A gold answer must score 1.0 on the task's primary
metric (code tasks: except the references that fail under lm-eval too). ``--full`` also
scores the whole benchmark wherever its data is here: ``--data`` paths in the upstream
format, else the hub cache; a benchmark with neither is reported as skipped. Prints one table
(component, expected, got, ok) and exits 1 if any row failed.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from importlib import resources
from pathlib import Path

from boe_bench.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SLICE = resources.files("boe_bench.data") / "selfcheck"
# The shipped slice of each benchmark that has no data in the package, as task.data_files.
SLICES = {"humaneval": "humaneval.jsonl", "mbpp": "mbpp.jsonl", "math500": "math500.jsonl",
          "gsm8k": {"test": "gsm8k_test.jsonl", "train": "gsm8k_train.jsonl"}}
CODE_TASKS, CODE_TIMEOUT = ("humaneval", "mbpp"), 60.0
# References that fail under lm-eval too (see tests/test_code_tasks.py for the reasons).
KNOWN_REFERENCE_FAILURES = {"mbpp-367"}


def countdown_equation(numbers: list[int], target: float) -> str:
    """An equation using each number once that reaches the target, by brute force over every
    way of combining two of the remaining terms (3-4 numbers: instant); "" if there is none."""
    def search(terms):
        if len(terms) == 1:
            return terms[0][1] if abs(terms[0][0] - target) < 1e-9 else ""
        for i, j in itertools.permutations(range(len(terms)), 2):
            (a, x), (b, y) = terms[i], terms[j]
            rest = [t for k, t in enumerate(terms) if k not in (i, j)]
            for value, text in ((a + b, f"({x} + {y})"), (a - b, f"({x} - {y})"), (a * b, f"({x} * {y})"),
                                (a / b if b else None, f"({x} / {y})")):
                if value is not None and (found := search([*rest, (value, text)])):
                    return found
        return ""

    found = search([(float(n), str(n)) for n in numbers])
    return found[1:-1] if found.startswith("(") else found


def gold(task_name: str, doc: dict) -> str | None:
    """A completion the task's scorer must accept in full, in the task's own format."""
    if task_name == "humaneval":
        return doc["canonical_solution"]
    if task_name == "mbpp":
        return doc["code"]
    if task_name == "gsm8k":
        return " " + doc["answer"]
    if task_name == "math500":
        return f"{doc['solution']}\nFinal Answer: The final answer is ${doc['answer']}$. I hope it is correct."
    if task_name == "countdown":
        numbers = json.loads(doc["numbers"]) if isinstance(doc["numbers"], str) else doc["numbers"]
        equation = countdown_equation(numbers, float(doc["target"]))
        return f"<answer>\\boxed{{{equation}}}</answer>" if equation else None
    if task_name == "sudoku":
        return f"<answer>\n{doc['solution']}\n</answer>"
    if task_name == "sudoku_grid":
        return "".join(str(v) for v in doc["solution"])
    return None  # owt: a text metric, no gold answer


def build(task_name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from boe_bench.runner import instantiate

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"task={task_name}", *overrides])
    return instantiate(cfg.task, "task")


def data_override(task_name: str, value) -> list[str]:
    if isinstance(value, dict):
        return [f"task.data_files.{split}={path}" for split, path in value.items()]
    return [f"task.data_files={value}"]


def gold_row(task_name: str, overrides: list[str], label: str, limit: int | None = None, workers: int = 1) -> tuple:
    from boe_bench.score import rescore

    if task_name in CODE_TASKS:
        # The scorer is what is checked, not this machine's speed: a busy machine can take
        # over the protocol's 3 s on a slow reference (mbpp-123 takes ~7 s at load 14).
        overrides = [*overrides, f"task.timeout={CODE_TIMEOUT}"]
    try:
        task = build(task_name, overrides)
        docs = task.docs()[:limit] if limit else task.docs()
    except ConfigError as err:
        return (label, "gold scores 1.0", f"skipped: {err}", True)
    predictions = [{"id": d["id"], "completion": gold(task_name, d)} for d in docs]
    # Only countdown may lack one (a puzzle with no solution); the others always have theirs.
    predictions = [p for p in predictions if p["completion"] is not None]
    if not predictions:
        return (label, "gold scores 1.0", "no gold answer for any document", False)
    # The shipped slices score in this process (what a patched or broken install does here is
    # what is checked); whole benchmarks spread over processes.
    summary = rescore(task, predictions, workers=workers)
    expected_fail = {r["id"] for r in summary["records"]} & KNOWN_REFERENCE_FAILURES
    metric = task.primary_metric
    failed = {r["id"] for r in summary["records"] if r["metrics"].get(metric, 1.0) != 1.0}
    got = f"{metric} {summary['score']:.4f} on {summary['n']}"
    if expected_fail:
        got += f" (known reference failures: {', '.join(sorted(expected_fail))})"
    ok = failed == expected_fail
    return (label, "gold scores 1.0", got if ok else f"{got}; wrong: {', '.join(sorted(failed - expected_fail)[:5])}", ok)


def task_rows(full: bool, data: dict[str, str]):
    """One row per task check, yielded as each finishes (main prints it at once)."""
    from boe_bench.tasks import TASKS

    for name in TASKS.names():
        if name == "owt":
            yield ("task owt", "no gold answer", "skipped (text metrics only)", True)
            continue
        if name in SLICES:
            value = SLICES[name]
            paths = {k: str(SLICE / v) for k, v in value.items()} if isinstance(value, dict) else str(SLICE / value)
            yield gold_row(name, data_override(name, paths), f"task {name} (shipped slice)")
            if full:
                given = data.get(name)
                if given and isinstance(paths, dict):  # a test-split file; the shots stay the shipped ones
                    given = {**paths, "test": given}
                yield gold_row(name, data_override(name, given) if given else [], f"task {name} (full set)", workers=4)
        else:
            yield gold_row(name, [], f"task {name} (shipped data, 20 docs)", limit=20)


def sandbox_rows() -> list[tuple]:
    from boe_bench.scoring.hostile import run_battery
    from boe_bench.scoring.sandbox import isolation

    rows = [("sandbox walls", "reported", isolation(), True)]
    rows += [(f"sandbox: {name}", expected, got, ok) for name, expected, got, ok in run_battery()]
    return rows


def decode_run(overrides: list[str]) -> tuple[dict | None, str]:
    """(summary, "") of one runner job in a throw-away directory, or (None, the error in one
    line): a table row, not a traceback, so the user sees every failure at once."""
    from hydra import compose, initialize_config_dir

    from boe_bench.runner import run

    with tempfile.TemporaryDirectory() as out, initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, "progress=false", f"out_dir={out}"])
        try:
            return run(cfg), ""
        except Exception as err:
            return None, f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"


def sampler_rows(only: list[str] | None = None):
    """One row per sampler, yielded as its decode finishes."""
    for config in sorted((CONFIGS / "sampler").glob("*.yaml")):
        name = config.stem
        if only and name not in only:
            continue
        summary, error = decode_run(["model=tiny", f"sampler={name}", "task=countdown", "limit=2", "batch_size=2",
                                     "gen_length=16", "steps=8", "block_length=16"])
        got, ok = (error, False) if summary is None else (f"decoded {summary['n']} prompts", summary["n"] == 2)
        yield (f"sampler {name}", "decodes on tiny", got, ok)


# The trained text model's floor (tests/test_text_mdm.py states why): Confidence at L=128
# on the first 8 puzzles of d1's subsample parses every answer, gets this share of the empty
# cells and solves at least this many whole puzzles.
TEXT_MDM_CELL_FLOOR = 0.6
TEXT_MDM_SOLVED_FLOOR = 1


def trained_model_rows():
    """The shipped text_mdm decodes 8 of d1's Sudoku puzzles through the runner (the LLaDA
    loader, the chat prompt, d1's parser): a miswired checkpoint or tokenizer falls to 0."""
    summary, error = decode_run(["model=text_mdm", "sampler=confidence", "task=sudoku", "limit=8", "batch_size=8",
                                 "gen_length=128", "steps=64", "block_length=32"])
    if summary is None:
        got, ok = error, False
    else:
        metrics = summary["metrics"]
        got = f"cell accuracy {metrics['cell_accuracy']:.2f}, solved {metrics['solved']:.2f}"
        ok = (metrics["cell_accuracy"] >= TEXT_MDM_CELL_FLOOR
              and round(metrics["solved"] * summary["n"]) >= TEXT_MDM_SOLVED_FLOOR)
    yield ("trained text_mdm: sudoku x8", f"cells >= {TEXT_MDM_CELL_FLOOR}, solved >= {TEXT_MDM_SOLVED_FLOOR}/8",
           got, ok)


# Column widths fixed in advance, so each row prints the moment its check ends (a long check,
# the sandbox battery or a sampler's decode, no longer hides every finished row).
WIDTHS = (44, 24, 60)


def print_row(component, expected, got, ok) -> None:
    cells = (component, expected, got)
    print("  ".join(str(c)[:200].ljust(w) for c, w in zip(cells, WIDTHS)) + "  " + ok, flush=True)


def print_table(rows) -> list[tuple]:
    """Print the header, then each row as ``rows`` yields it; returns the rows."""
    print_row("component", "expected", "got", "ok")
    done = []
    for row in rows:
        print_row(*row[:3], "ok" if row[3] else "FAIL")
        done.append(row)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boe_bench.selfcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also score the whole benchmarks whose data is here")
    parser.add_argument("--data", action="append", default=[], metavar="TASK=PATH",
                        help="a local copy of a benchmark in the upstream format (with --full)")
    parser.add_argument("--skip-samplers", action="store_true", help="leave out the decode with every sampler")
    parser.add_argument("--samplers", default="", help="comma-separated sampler configs to decode with (default: all)")
    parser.add_argument("--skip-sandbox", action="store_true", help="leave out the hostile battery")
    args = parser.parse_args(argv)
    data = {}
    for item in args.data:
        name, eq, path = item.partition("=")
        if not eq:
            print(f"error: --data needs TASK=PATH, got {item!r}", file=sys.stderr)
            return 2
        data[name] = path
    def checks():
        yield from task_rows(args.full, data)
        if not args.skip_sandbox:
            yield from sandbox_rows()
        if not args.skip_samplers:
            yield from trained_model_rows()
            yield from sampler_rows([n for n in args.samplers.split(",") if n])

    rows = print_table(checks())
    failed = [r[0] for r in rows if not r[3]]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} checks passed" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
