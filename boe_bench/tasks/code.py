"""What HumanEval and MBPP share: a completion becomes a program, the program runs in the
sandbox, and a problem's samples become unbiased pass@k.

The runner draws one sample per document, so there pass@1 is the plain mean of passes.
Several samples per problem arrive through the rescoring CLI (several prediction lines with
the same id); ``aggregate`` then groups records by id and reports pass@k for every
configured k no larger than the smallest number of samples any problem has.
"""
from __future__ import annotations

from abc import abstractmethod
from collections import defaultdict

from boe_bench.errors import ConfigError
from boe_bench.scoring.sandbox import pass_at_k, run_program
from boe_bench.tasks.base import Task, cut_at_stop


class CodeTask(Task):
    primary_metric = "pass@1"
    protocols = {"lmeval": "lm-eval's protocol, cut at its stop sequences, pass@k (the only protocol)"}
    samples_per_id = True

    def __init__(self, data_files=None, protocol: str = "lmeval", timeout: float = 3.0, memory_mb: int = 1024,
                 k: list[int] | tuple[int, ...] = (1,), strict: bool = False):
        super().__init__(data_files, protocol)
        timeout, memory_mb = _number("timeout", timeout, float), _number("memory_mb", memory_mb, int)
        if timeout <= 0 or memory_mb < 64:
            raise ConfigError(f"the sandbox needs timeout > 0 and memory_mb >= 64, got {timeout} and {memory_mb}")
        if not isinstance(strict, bool):
            raise ConfigError(f"task.strict must be true or false, got {strict!r}")
        self.strict = strict
        if isinstance(k, (int, str)) or not k or any(not str(v).isdigit() or int(v) < 1 for v in k):
            raise ConfigError(f"k must be a list of positive integers, got {list(k)}")
        # pass@1 is the headline metric, so it is always reported.
        self.timeout, self.memory_mb, self.k = timeout, memory_mb, sorted({1, *(int(v) for v in k)})

    @abstractmethod
    def program_parts(self, doc: dict, completion: str) -> tuple[str, str]:
        """The program run for one completion, as (solution, tests); lm-eval runs their
        concatenation, and so does the sandbox (the tests after the solution, in the same
        globals), unless ``strict``."""

    def strict_parts(self, doc: dict, tests: str) -> tuple[str | None, list[str]]:
        """For ``strict``: the task's own context the tests may use (run alone, so the
        solution cannot redefine it) and the names the tests take from the solution."""
        return None, called_names(tests)

    def program(self, doc: dict, completion: str) -> str:
        """The whole program, as lm-eval's ``code_eval`` receives it."""
        return "".join(self.program_parts(doc, completion))

    def score(self, doc: dict, completion: str) -> dict:
        solution, tests = self.program_parts(doc, cut_at_stop(completion, self.until))
        context, entry = self.strict_parts(doc, tests) if self.strict else (None, None)
        result = run_program(solution, tests=tests, timeout=self.timeout, memory_mb=self.memory_mb, strict=self.strict,
                             context=context, entry=entry)
        return {"answer": result.status, "pass@1": float(result.passed), "timed_out": float(result.status == "timed out")}

    def aggregate(self, records: list[dict]) -> dict:
        if not records:
            return {}
        passes = defaultdict(list)
        for record in records:
            passes[record["id"]].append(record["metrics"]["pass@1"])
        fewest = min(len(v) for v in passes.values())
        metrics = {f"pass@{k}": sum(pass_at_k(len(v), int(sum(v)), k) for v in passes.values()) / len(passes)
                   for k in self.k if k <= fewest}
        metrics["timed_out"] = sum(r["metrics"].get("timed_out", 0.0) for r in records) / len(records)
        metrics["problems"] = len(passes)
        metrics["samples_per_problem"] = fewest
        return metrics

    def describe(self) -> dict:
        return {**super().describe(), "timeout": self.timeout, "memory_mb": self.memory_mb, "k": self.k,
                "strict": self.strict}


def _number(name: str, value, kind: type):
    try:
        if isinstance(value, bool):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"task.{name} must be a number, got {value!r}") from None


def _tree(source: str):
    import ast

    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def used_names(source: str) -> list[str]:
    """Every name the source reads."""
    import ast

    tree = _tree(source)
    return [] if tree is None else [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]


def defined_names(source: str) -> set[str]:
    """The names the source binds at its top level (functions, classes, assignments)."""
    import ast

    tree = _tree(source)
    if tree is None:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def called_names(tests: str) -> list[str]:
    """The names the tests call that neither they nor Python define: what they need from the
    solution (MBPP's asserts call the function under test by name)."""
    import ast
    import builtins

    try:
        tree = ast.parse(tests)
    except SyntaxError:
        return []
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    bound |= {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
              for a in n.names}
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    used = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    return sorted({n for n in used if n not in bound and not hasattr(builtins, n)})
