"""HumanEval, lm-eval's ``humaneval`` protocol: 0-shot completion of the function body,
program = prompt + completion + test + ``check(entry_point)``, pass@1 in the sandbox."""
from __future__ import annotations

from boe_bench.scoring.sandbox import run_program
from boe_bench.tasks import TASKS
from boe_bench.tasks.base import Task, load_split


@TASKS.register("humaneval")
class HumanEval(Task):
    primary_metric = "pass@1"
    until = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")

    def __init__(self, data_files: str | None = None, timeout: float = 10.0, protocol: str = "lmeval"):
        super().__init__(data_files, protocol)
        self.timeout = timeout

    def load_docs(self) -> list[dict]:
        return [{"id": row["task_id"], **row} for row in load_split("openai/openai_humaneval", "test", self.data_files)]

    def prompt_text(self, doc: dict) -> str:
        return doc["prompt"]

    def program(self, doc: dict, completion: str) -> str:
        return f"{doc['prompt']}{completion}\n{doc['test']}\ncheck({doc['entry_point']})\n"

    def score(self, doc: dict, completion: str) -> dict:
        result = run_program(self.program(doc, completion), timeout=self.timeout)
        return {"answer": result.status, "pass@1": float(result.passed)}
