"""The self-check passes on a sound install and fails loudly when a scorer is broken."""
import pytest

from boe_bench import selfcheck
from boe_bench.tasks.gsm8k import GSM8K
from boe_bench.tasks.mbpp import MBPP


def test_selfcheck_fast_parts_pass(capsys):
    assert selfcheck.main(["--skip-sandbox", "--samplers", "confidence"]) == 0
    out = capsys.readouterr().out
    for row in ("task gsm8k", "task humaneval", "task mbpp", "task math500", "task countdown", "task sudoku",
                "sampler confidence"):
        assert row in out
    assert "FAIL" not in out


@pytest.mark.parametrize("task_class", [GSM8K, MBPP])
def test_selfcheck_exits_non_zero_when_a_scorer_is_broken(task_class, monkeypatch, capsys):
    original = task_class.score

    def broken(self, doc, completion):
        metrics = original(self, doc, completion[: len(completion) // 2])  # a scorer that loses half its input
        return metrics

    monkeypatch.setattr(task_class, "score", broken)
    assert selfcheck.main(["--skip-sandbox", "--skip-samplers"]) == 1
    out = capsys.readouterr().out
    assert f"FAILED: task {task_class.__name__.lower()}" in out.replace("GSM8K", "gsm8k")


def test_selfcheck_streams_each_row_as_it_finishes(monkeypatch, capsys):
    """Issue 24: nothing was printed until the last check ended. The task rows are on stdout
    before the sampler decodes start."""
    seen = {}

    def sampler_rows(only):
        seen["printed before the samplers"] = capsys.readouterr().out
        yield ("sampler fake", "decodes on tiny", "decoded 2 prompts", True)

    monkeypatch.setattr(selfcheck, "sampler_rows", sampler_rows)
    assert selfcheck.main(["--skip-sandbox"]) == 0
    early = seen["printed before the samplers"]
    assert early.splitlines()[0].startswith("component") and "task gsm8k (shipped slice)" in early
    later = capsys.readouterr().out
    assert "sampler fake" in later and "task gsm8k" not in later


def test_selfcheck_rejects_bad_arguments(capsys):
    assert selfcheck.main(["--data", "no-equals-sign"]) == 2
    assert "TASK=PATH" in capsys.readouterr().err


def test_countdown_gold_equation_reaches_the_target():
    equation = selfcheck.countdown_equation([30, 100, 93], 23)
    assert sorted(int(t) for t in equation.replace("(", " ").replace(")", " ").split() if t.isdigit()) == [30, 93, 100]
    assert eval(equation) == 23
    assert selfcheck.countdown_equation([1, 1, 1], 1000) == ""
