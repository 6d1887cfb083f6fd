"""MBPP, lm-eval's ``mbpp`` protocol: 3 fixed shots (task ids 2, 3, 4) in the
``[BEGIN]``/``[DONE]`` format, the 500 test problems (ids 11-510), program = completion +
the three asserts, pass@1 in the sandbox."""
from __future__ import annotations

from boe_bench.scoring.sandbox import run_program
from boe_bench.tasks import TASKS
from boe_bench.tasks.base import Task, load_split

SHOT_IDS = (2, 3, 4)
TEST_IDS = range(11, 511)


def describe_problem(doc: dict) -> str:
    tests = "\n".join(doc["test_list"][:3])
    return (f"You are an expert Python programmer, and here is your task: {doc['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


@TASKS.register("mbpp")
class MBPP(Task):
    primary_metric = "pass@1"
    until = ("[DONE]",)

    def __init__(self, data_files: str | None = None, timeout: float = 10.0, protocol: str = "lmeval"):
        super().__init__(data_files, protocol)
        self.timeout = timeout
        self._shots: list[dict] | None = None

    def _rows(self, split: str) -> list[dict]:
        # A local mbpp.jsonl holds every split; the hub's `full` config splits them.
        if self.data_files:
            return load_split("", split, self.data_files)
        return load_split("google-research-datasets/mbpp", split, None, config="full")

    def load_docs(self) -> list[dict]:
        rows = [r for r in self._rows("test") if r["task_id"] in TEST_IDS]
        return [{"id": f"mbpp-{r['task_id']}", **r} for r in rows]

    def shots(self) -> list[dict]:
        if self._shots is None:
            by_id = {r["task_id"]: r for r in self._rows("prompt") if r["task_id"] in SHOT_IDS}
            self._shots = [by_id[i] for i in SHOT_IDS]
        return self._shots

    def prompt_text(self, doc: dict) -> str:
        shots = "".join(f"{describe_problem(s)}{s['code']}\n[DONE]\n\n" for s in self.shots())
        return shots + describe_problem(doc)

    def program(self, doc: dict, completion: str) -> str:
        return completion + "\n" + "\n".join(doc["test_list"][:3]) + "\n"

    def score(self, doc: dict, completion: str) -> dict:
        result = run_program(self.program(doc, completion), timeout=self.timeout)
        return {"answer": result.status, "pass@1": float(result.passed)}
