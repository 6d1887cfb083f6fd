"""Data for the shipped lm-eval task YAMLs, read from local files (no hub).

lm-eval calls ``custom_dataset`` with the task's ``metadata`` plus ``--metadata`` from the
command line, so ``--metadata '{"test": "/data/gsm8k/test.jsonl", "train": "/data/gsm8k/train.jsonl"}'``
points a task at a local copy of the whole benchmark (JSON lines in the upstream format).
Without it the task reads the slices shipped in ``tests/fixtures`` of a source checkout.
"""
from __future__ import annotations

from pathlib import Path

CHECKOUT_FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures"


def _file(given: str | None, fixture: str, split: str) -> str:
    path = Path(given) if given else CHECKOUT_FIXTURES / fixture
    if not path.is_file():
        raise FileNotFoundError(
            f"{split} file {str(path)!r} does not exist; pass --metadata "
            f"'{{\"{split}\": \"<local .jsonl>\"}}' (the shipped slices exist only in a source checkout)")
    return str(path)


def gsm8k(test: str | None = None, train: str | None = None, **_) -> dict:
    """GSM8K's test and train splits (train: the few-shot pool) from JSON lines with
    ``question`` and ``answer``, as openai/gsm8k ships them."""
    import datasets

    files = {"test": _file(test, "gsm8k_test.jsonl", "test"), "train": _file(train, "gsm8k_train.jsonl", "train")}
    return datasets.load_dataset("json", data_files=files)
