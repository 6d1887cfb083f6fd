"""MBPP, lm-eval's ``mbpp`` protocol: the 500 test problems (task ids 11-510), 3 fixed shots
(task ids 2, 3, 4, in that order) in the ``[BEGIN]``/``[DONE]`` format, generation cut at
``[DONE]``; the program is completion + "\\n" + the three asserts (``test_setup_code`` and the
challenge tests are not used, as in lm-eval), run in the sandbox; pass@1.

Data: the hub's ``google-research-datasets/mbpp`` config ``full`` (test split for problems,
prompt split for shots), or ``data_files`` pointing at google-research's ``mbpp.jsonl``, which
holds every split; problems and shots are then picked by task id.
"""
from __future__ import annotations

from boe_bench.errors import ConfigError
from boe_bench.tasks import TASKS
from boe_bench.tasks.base import load_split
from boe_bench.tasks.code import CodeTask, called_names, defined_names, used_names

SHOT_IDS = (2, 3, 4)
TEST_IDS = range(11, 511)


def describe_problem(doc: dict) -> str:
    tests = "\n".join(doc["test_list"][:3])
    return (f"You are an expert Python programmer, and here is your task: {doc['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


@TASKS.register("mbpp")
class MBPP(CodeTask):
    until = ("[DONE]",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._shots: list[dict] | None = None

    def _rows(self, split: str) -> list[dict]:
        if isinstance(self.data_files, str):
            return load_split("", split, self.data_files)
        if self.data_files:  # a mapping split -> file, like the hub's splits
            return load_split("", split, self.data_files.get(split) or self.data_files.get("test"))
        return load_split("google-research-datasets/mbpp", split, None, config="full")

    def load_docs(self) -> list[dict]:
        rows = self._rows("test")
        missing = [k for k in ("task_id", "text", "code", "test_list") if rows and k not in rows[0]]
        if missing or any(not str(r.get("task_id", "")).isdigit() for r in rows):
            kind = " (it looks like HumanEval: use task=humaneval)" if rows and "entry_point" in rows[0] else ""
            raise ConfigError(f"data file {self.data_files!r} is not MBPP: its rows lack "
                              f"{missing or 'integer task ids'}{kind}")
        rows = [r for r in rows if int(r["task_id"]) in TEST_IDS]
        return [{"id": f"mbpp-{r['task_id']}", **r} for r in sorted(rows, key=lambda r: int(r["task_id"]))]

    def shots(self) -> list[dict]:
        if self._shots is None:
            by_id = {int(r["task_id"]): r for r in self._rows("prompt")}
            missing = [i for i in SHOT_IDS if i not in by_id]
            if missing:
                raise ConfigError(f"MBPP data lacks the few-shot problems with task_id {missing} (lm-eval uses 2, 3, 4)")
            self._shots = [by_id[i] for i in SHOT_IDS]
        return self._shots

    def prompt_text(self, doc: dict) -> str:
        # lm-eval: each shot is problem + code + "\n[DONE]" (target_delimiter ""), joined and
        # followed by the fewshot_delimiter "\n\n".
        shots = "".join(f"{describe_problem(s)}{s['code']}\n[DONE]\n\n" for s in self.shots())
        return shots + describe_problem(doc)

    def strict_parts(self, doc: dict, tests: str) -> tuple[str | None, list[str]]:
        # The names the asserts use that the reference solution defines (MBPP has no entry
        # point field; the function under test may shadow a builtin, as mbpp-126's sum).
        defined = defined_names(doc.get("code", ""))
        return None, sorted(set(used_names(tests)) & defined) if defined else called_names(tests)

    def program_parts(self, doc: dict, completion: str) -> tuple[str, str]:
        return completion + "\n", "\n".join(doc["test_list"][:3]) + "\n"
