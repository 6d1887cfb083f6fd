"""HumanEval/MBPP verdicts of our sandbox against HF evaluate's ``code_eval`` (as lm-eval runs
it), row by row, on an adversarial set built here: reference solutions with one line added
that prints over 1 MB, reads the working directory, uses tempfile, reads stdin, imports,
exits, sleeps or loops, writes files or the environment, or breaks the answer.

    python -m boe_bench.experiments.code_eval_parity [reference=<evaluate>/metrics/code_eval/execute.py]
    make code_eval_parity [REFERENCE=...] [OUT=results]

Settings: configs/code_eval_parity/default.yaml (the committed run: 1,080 rows), key=value
overrides. With ``reference`` (a local copy of HF evaluate's file; it is imported, never copied
here) both run on the same programs (prompt + completion cut at the stop sequences + tests) and
the CSV holds both verdicts; without it, only ours. Both run 4 programs at a time, timeout 3 s.
The CSV goes to reports/ unless ``out=results/code_eval_parity.csv`` replaces the committed one.
The programs come from the reference solutions in tests/fixtures (a source checkout's).
"""
from __future__ import annotations

import csv
import importlib.util
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from boe_bench.errors import ConfigError
from boe_bench.experiments.config import load
from boe_bench.tasks import build_task
from boe_bench.tasks.base import cut_at_stop

FIX = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
# variant -> (line added at the top of the solution's body, whether it costs a timeout)
VARIANTS = {
    "plain": ("", False),
    "print over 1 MB": ("print('x' * 1_500_000)", False),
    "stderr over 1 MB": ("import sys; sys.stderr.write('y' * 1_500_000)", False),
    "os.getcwd": ("import os; os.getcwd()", False),
    "os.chdir": ("import os; os.chdir('.')", False),
    "tempfile.TemporaryDirectory": ("import tempfile\n    with tempfile.TemporaryDirectory() as d: pass", False),
    "tempfile.mkdtemp": ("import tempfile; tempfile.mkdtemp()", False),
    "tempfile.NamedTemporaryFile": ("import tempfile\n    with tempfile.NamedTemporaryFile() as f: f.write(b'1')", False),
    "sys.stdin.read": ("import sys; sys.stdin.read()", False),
    "input()": ("input()", False),
    "import numpy": ("import numpy", False),
    "import resource": ("import resource", False),
    "import joblib": ("import joblib", False),
    "import collections, heapq, re": ("import collections, heapq, re", False),
    "sys.exit(0)": ("import sys; sys.exit(0)", False),
    "exit()": ("exit()", False),
    "quit()": ("quit()", False),
    "raise SystemExit": ("raise SystemExit", False),
    "os._exit(0)": ("import os; os._exit(0)", False),
    "catches SystemExit": ("import sys\n    try: sys.exit(1)\n    except SystemExit: pass", False),
    "writes a file": ("open('scratch.txt', 'w').write('1')", False),
    "os.remove own file": ("import os; open('s.txt', 'w').close(); os.remove('s.txt')", False),
    "os.environ set": ("import os; os.environ['BOE_X'] = '1'", False),
    "subprocess.run": ("import subprocess; subprocess.run(['true'])", False),
    "help()": ("help", False),
    "threads": ("import threading; t = threading.Thread(target=int); t.start(); t.join()", False),
    "wrong answer": ("return None", False),
    "sleep 0.5 s": ("import time; time.sleep(0.5)", False),
    "sleep 10 s": ("import time; time.sleep(10)", True),
    "infinite loop": ("while True: pass", True),
}


def humaneval_completion(doc: dict, line: str) -> str:
    return f"    {line}\n{doc['canonical_solution']}" if line else doc["canonical_solution"]


def mbpp_completion(doc: dict, line: str) -> str:
    if not line:
        return doc["code"]
    # at module level: the added line runs once, before the solution is defined
    return "def _added():\n    " + line + "\n_added()\n" + doc["code"]


def build(per_variant: int, timeout_variant: int) -> list[tuple]:
    """(row id, variant, task, doc, completion): each variant on the first problems of each
    benchmark (timeouts on fewer: each costs the full limit twice)."""
    humaneval = build_task("humaneval", data_files=str(FIX / "humaneval_all.jsonl"))
    mbpp = build_task("mbpp", data_files=str(FIX / "mbpp_all.jsonl"))
    rows = []
    for variant, (line, slow) in VARIANTS.items():
        n = timeout_variant if slow else per_variant
        for doc in humaneval.docs()[: (n + 1) // 2]:
            rows.append((f"{doc['id']}|{variant}", variant, humaneval, doc, humaneval_completion(doc, line)))
        for doc in mbpp.docs()[: n // 2]:
            rows.append((f"{doc['id']}|{variant}", variant, mbpp, doc, mbpp_completion(doc, line)))
    return rows


@dataclass
class Settings:
    """The parity run's settings; values in configs/code_eval_parity/default.yaml."""
    reference: Optional[str]   # HF evaluate's metrics/code_eval/execute.py (a local copy); null: ours only
    out: str                   # the CSV
    per_variant: int           # rows per variant (half HumanEval, half MBPP)
    timeout_variant: int       # rows per variant that runs into the timeout (each costs 3 s twice)

    def check(self) -> None:
        if self.reference and not Path(self.reference).is_file():
            raise ConfigError(f"reference {self.reference!r} is not a file (HF evaluate's metrics/code_eval/execute.py)")
        if self.per_variant < 1 or self.timeout_variant < 1:
            raise ConfigError("per_variant and timeout_variant must be at least 1")


def main(argv: list[str] | None = None) -> int:
    args = load("code_eval_parity", Settings, argv, __doc__)
    rows = build(args.per_variant, args.timeout_variant)
    programs = []
    for _, _, task, doc, completion in rows:
        solution, tests = task.program_parts(doc, cut_at_stop(completion, task.until))
        programs.append((task, doc, completion, solution + tests))
    start = time.time()
    with ThreadPoolExecutor(max_workers=4) as pool:
        ours = list(pool.map(lambda p: p[0].score(p[1], p[2])["answer"], programs))
    print(f"ours: {len(ours)} rows in {time.time() - start:.0f} s", file=sys.stderr)
    reference = [""] * len(rows)
    if args.reference:
        import numpy  # noqa: F401 (lm-eval's process has it loaded when code_eval forks)

        spec = importlib.util.spec_from_file_location("code_eval_execute", args.reference)
        execute = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(execute)
        start = time.time()
        with ThreadPoolExecutor(max_workers=4) as pool:
            reference = list(pool.map(lambda ip: execute.check_correctness(ip[1][3], 3.0, ip[0], 0)["result"],
                                      enumerate(programs)))
        print(f"code_eval: {len(reference)} rows in {time.time() - start:.0f} s", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")  # renamed when complete: no half-written CSV
    with open(partial, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "variant", "ours", "code_eval", "agree"])
        for (row, variant, *_), mine, theirs in zip(rows, ours, reference):
            agree = "" if not theirs else str((mine == "passed") == (theirs == "passed"))
            writer.writerow([row, variant, mine, theirs, agree])
    partial.replace(out)
    if args.reference:
        differ = [(r[0], m, t) for r, m, t in zip(rows, ours, reference) if (m == "passed") != (t == "passed")]
        print(f"{len(rows)} rows, {len(differ)} verdicts differ")
        for row in differ[:40]:
            print("  ", *row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
