"""The task protocol: documents in, prompts out, completions scored.

A task knows its data (hub id by default, ``data_files`` for a local copy in the upstream
format), how to turn a document into a prompt, where generation stops, and how to score a
completion. Scoring is a pure function of (document, completion), so saved generations can
be rescored without a model: the runner and ``python -m boe_bench.score`` both call
``Task.score``, and a scorer first cuts the completion at the task's stop sequences with
``cut_at_stop``, exactly as lm-eval cuts a generation, so text that runs past a stop (as
text from another tool may) is scored as lm-eval would score it.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

from boe_bench.errors import ConfigError


class Task(ABC):
    """Base of every task.

    Subclasses set ``primary_metric`` (the headline key of ``aggregate``), ``until``
    (stop sequences) and implement ``load_docs``, ``prompt_text`` and ``score``.
    """

    registry_name = "task"
    primary_metric: str = "exact_match"
    # Metrics the paper's table shows beside the primary one: (key of ``aggregate``, column
    # label, "max" or "min" for the better direction, or None where neither is better).
    table_metrics: tuple[tuple[str, str, str | None], ...] = ()
    until: tuple[str, ...] = ()
    # Whether the prompt is wrapped in the tokenizer's chat template (Instruct protocols).
    chat: bool = False
    # The protocols a task implements, each with what it means (empty: not checked).
    protocols: dict[str, str] = {}
    # How document ids are formed, for error messages ("gsm8k-<row of the test split>").
    id_form: str = ""
    # Whether several records with one id are several samples of one problem (pass@k);
    # otherwise rescoring refuses duplicate ids.
    samples_per_id: bool = False

    def __init__(self, data_files: str | dict | None = None, protocol: str = "default"):
        if self.protocols and protocol not in self.protocols:
            raise ConfigError(f"task {self.name} implements protocol {' or '.join(map(repr, self.protocols))}, "
                              f"not {protocol!r}")
        self.data_files = data_files
        self.protocol = protocol
        self._docs: list[dict] | None = None

    @property
    def name(self) -> str:
        return self.registry_name

    def docs(self) -> list[dict]:
        """Every evaluation document, each with a unique string ``id``, in a fixed order."""
        if self._docs is None:
            self._docs = self.load_docs()
            ids = [d["id"] for d in self._docs]
            if len(set(ids)) != len(ids):
                raise ValueError(f"task {self.name} produced duplicate document ids")
        return self._docs

    @abstractmethod
    def load_docs(self) -> list[dict]: ...

    @abstractmethod
    def prompt_text(self, doc: dict) -> str:
        """The prompt as text (for chat protocols, the user message content)."""

    def prompt_ids(self, doc: dict, tokenizer) -> list[int]:
        text = self.prompt_text(doc)
        if self.chat:
            messages = [{"role": "user", "content": text}]
            templated = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return tokenizer(templated + self.assistant_prefix, add_special_tokens=False)["input_ids"]
        return tokenizer(text)["input_ids"]

    # Text the assistant's turn starts with (d1 prefills "<reasoning>").
    assistant_prefix: str = ""
    # The paper's default schedule for this task: two tokens per step, blocks of 32.
    default_schedule: dict = {"gen_length": 256, "steps": 128, "block_length": 32}

    def initial_generation(self, doc: dict, tokenizer) -> list[int] | None:
        """Tokens the generation region starts from (MASK where the sampler decides), for
        infilling tasks; None: all MASK."""
        return None

    @abstractmethod
    def score(self, doc: dict, completion: str) -> dict:
        """Per-example metrics (numbers) plus ``answer``, the extracted answer."""

    def aggregate(self, records: list[dict]) -> dict:
        """Task-level metrics from per-example ``metrics`` dicts; the mean by default."""
        if not records:
            return {}
        keys = [k for k, v in records[0]["metrics"].items() if isinstance(v, (int, float, bool))]
        return {k: sum(float(r["metrics"][k]) for r in records) / len(records) for k in keys}

    def describe(self) -> dict:
        return {"task": self.name, "protocol": self.protocol, "until": list(self.until), "chat": self.chat}


def cut_at_stop(text: str, until: tuple[str, ...] | list[str]) -> str:
    """lm-eval's cut (``postprocess_generated_text``): for each stop sequence in order, keep
    the text before its first occurrence. This is the cut at the earliest stop, except that
    a stop straddling an earlier stop's cut point no longer matches; a no-op on text the
    runner already cut."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def existing_file(path: str | Path, what: str = "data file") -> Path:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} is not a file")
    return path


def jsonl_rows(path: Path, what: str = "data file"):
    """(line number, object) for each non-blank line of a JSON-lines file; a line that is not
    a JSON object is refused in one sentence naming the file and line."""
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{what} {str(path)!r} line {number} is not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{what} {str(path)!r} line {number} is not a JSON object")
            yield number, row


def read_records(path: str | Path) -> list[dict]:
    """Rows of a local data file in its upstream format: .jsonl, .json (list) or .csv."""
    path = existing_file(path)
    if path.suffix == ".jsonl":
        return [row for _, row in jsonl_rows(path)]
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"data file {str(path)!r} is not valid JSON ({err.msg} at line {err.lineno})") from None
        return data if isinstance(data, list) else data.get("data", data)
    if path.suffix == ".csv":
        import csv

        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    raise ConfigError(f"data file {str(path)!r} has an unsupported extension (use .jsonl, .json or .csv)")


def load_split(hub_id: str, split: str, data_files: str | None, config: str | None = None,
               override: str = "task.data_files=<local copy in the upstream format>") -> list[dict]:
    """A split from a local file when given, else from the HF hub (or its local cache);
    ``override`` is the command-line setting that supplies the file, named when the hub fails."""
    if data_files:
        return read_records(data_files)
    try:
        import datasets

        return list(datasets.load_dataset(hub_id, config, split=split))
    except Exception as err:  # the hub raises many types; the user needs one sentence
        raise ConfigError(
            f"cannot load {hub_id!r} ({split}) from the hub ({type(err).__name__}); "
            f"pass {override}"
        ) from err
