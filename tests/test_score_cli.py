"""``python -m boe_bench.score``: one scoring path with the runner, math_verify outside
threads, and every bad input refused in one sentence before any work is done."""
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from boe_bench.errors import ConfigError
from boe_bench.score import main
from boe_bench.tasks.base import load_split

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"
GSM8K = FIX / "gsm8k_test.jsonl"


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def gsm8k_rows(n: int) -> list[dict]:
    docs = [json.loads(line) for line in GSM8K.read_text().splitlines()][:n]
    return [{"id": f"gsm8k-{i}", "completion": " " + d["answer"] + "</s>junk 12345"} for i, d in enumerate(docs)]


def test_plain_data_path_for_gsm8k_and_the_stop_cut(tmp_path, capsys):
    predictions = write(tmp_path / "p.jsonl", gsm8k_rows(3))
    out = tmp_path / "s.json"
    assert main(["task=gsm8k", f"predictions={predictions}", f"out={out}", f"task.data_files={GSM8K}"]) == 0
    summary = json.loads(out.read_text())
    # Past "</s>" comes "junk 12345": scored on the cut text, flexible reads the right number.
    assert summary["metrics"] == {"exact_match_strict": 1.0, "exact_match_flexible": 1.0}
    assert summary["coverage"] == {"ids_scored": 3, "ids": 12}
    assert "coverage: scored 3 of 12 ids" in capsys.readouterr().err


def test_duplicate_ids_are_refused_for_one_sample_tasks(tmp_path, capsys):
    rows = gsm8k_rows(2)
    predictions = write(tmp_path / "p.jsonl", rows + [rows[0]])
    assert main(["task=gsm8k", f"predictions={predictions}", f"task.data_files={GSM8K}"]) == 2
    assert "'gsm8k-0'" in capsys.readouterr().err


def test_bad_workers_and_out_fail_before_scoring(tmp_path, capsys):
    predictions = write(tmp_path / "p.jsonl", gsm8k_rows(1))
    assert main(["task=gsm8k", f"predictions={predictions}", "workers=0", f"task.data_files={GSM8K}"]) == 2
    assert "workers must be a positive integer" in capsys.readouterr().err
    missing = tmp_path / "no_such_dir" / "s.json"
    # The predictions file does not exist either: out is checked first, before any reading.
    assert main(["task=gsm8k", f"predictions={tmp_path / 'none.jsonl'}", f"out={missing}"]) == 2
    err = capsys.readouterr().err
    assert "its directory does not exist" in err and err.count("\n") == 1


def test_unknown_ids_name_the_id_form(tmp_path, capsys):
    predictions = write(tmp_path / "p.jsonl", [{"id": "0", "completion": "\\boxed{1}"}])
    assert main(["task=countdown", f"predictions={predictions}"]) == 2
    err = capsys.readouterr().err
    assert "countdown-<row of d1's countdown_cd3_test.jsonl>, e.g. 'countdown-0'" in err


def test_usage_names_each_tasks_protocols_and_tasks_refuse_others(tmp_path, capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "task.protocol" in err and "gsm8k: lmeval = " in err and "; d1 = " in err and "countdown: d1 = " in err
    predictions = write(tmp_path / "p.jsonl", [{"id": "countdown-0", "completion": ""}])
    assert main(["task=countdown", f"predictions={predictions}", "task.protocol=lmeval"]) == 2
    assert "task countdown implements protocol 'd1', not 'lmeval'" in capsys.readouterr().err


def test_usage_lists_every_task_config_with_its_protocols(capsys):
    """Issue 24: owt and sudoku_grid were missing from the usage text."""
    assert main([]) == 2
    err = capsys.readouterr().err
    for task in sorted(p.stem for p in (ROOT / "configs" / "task").glob("*.yaml")):
        assert f"\n  {task}: " in err, task
    assert "owt: remdm = " in err and "sudoku_grid: grid = " in err


def test_default_summary_goes_under_runs_not_into_the_run_directory(tmp_path, monkeypatch):
    """Issue 24: score wrote examples.summary.json into the runner's directory."""
    run = tmp_path / "some_run"
    run.mkdir()
    predictions = write(run / "examples.jsonl", [{"id": "countdown-0", "completion": "1+2"}])
    monkeypatch.chdir(tmp_path)
    assert main(["task=countdown", f"predictions={predictions}"]) == 0
    assert sorted(p.name for p in run.iterdir()) == ["examples.jsonl"]
    written = tmp_path / "runs" / "rescored" / "countdown" / "some_run-examples.summary.json"
    assert json.loads(written.read_text())["n"] == 1


def test_hub_failure_names_the_override(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    from boe_bench.tasks.gsm8k import GSM8K

    GSM8K_FILE = FIX / "gsm8k_test.jsonl"

    with pytest.raises(ConfigError, match=r"pass task.data_files=<a local test.jsonl>"):
        GSM8K().docs()
    with pytest.raises(ConfigError, match=r"task.data_files=\{test:<test.jsonl>,train:<train.jsonl>\}"):
        GSM8K(data_files=str(GSM8K_FILE)).fewshot_block()
    with pytest.raises(ConfigError, match="pass task.data_files="):
        load_split("x/y", "test", None)



@pytest.mark.parametrize("workers", [1, 2])
def test_math_verify_scores_gold_answers_through_the_cli(tmp_path, workers):
    pytest.importorskip("math_verify")
    docs = [json.loads(line) for line in (FIX / "math500.jsonl").read_text().splitlines()][:4]
    rows = [{"id": d["unique_id"], "completion": f" {d['solution']}\nFinal Answer: The final answer is ${d['answer']}$. "
             "I hope it is correct.\n\nProblem:\nNext"} for d in docs]
    predictions, out = write(tmp_path / "p.jsonl", rows), tmp_path / "s.json"
    assert main(["task=math500", f"predictions={predictions}", f"out={out}", f"workers={workers}",
                 f"task.data_files={FIX / 'math500.jsonl'}"]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["math_verify"] == 1.0 and metrics["exact_match"] == 1.0


def test_rescoring_text_imports_no_model_code(tmp_path):
    predictions = write(tmp_path / "p.jsonl", gsm8k_rows(2))
    code = ("import sys; from boe_bench.score import main; "
            f"rc = main(['task=gsm8k', 'predictions={predictions}', 'task.data_files={GSM8K}']); "
            "print(rc, sorted(m for m in ('torch', 'transformers', 'boe_bench.models', 'boe_bench.samplers') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stderr


@pytest.mark.parametrize("task, data", [
    ("gsm8k", [f"task.data_files={{test:{GSM8K},train:{FIX / 'gsm8k_train.jsonl'}}}"]),
    ("math500", [f"task.data_files={FIX / 'math500.jsonl'}"]),
])
def test_runner_and_rescoring_score_identically(task, data, tmp_path):
    from hydra import compose, initialize_config_dir

    from boe_bench.runner import run

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "model=tiny", "sampler=confidence", f"task={task}", "limit=3", "batch_size=3", "gen_length=32",
            "steps=16", "block_length=32", "progress=false", f"out_dir={tmp_path / 'run'}", *data])
    summary = run(cfg)
    examples = tmp_path / "run" / "examples.jsonl"
    out = tmp_path / "rescored.json"
    assert main([f"task={task}", f"predictions={examples}", f"out={out}", *data]) == 0
    rescored = json.loads(out.read_text())
    records = [json.loads(line) for line in examples.read_text().splitlines()]
    assert [r["metrics"] for r in rescored["records"]] == [r["metrics"] for r in records]
    assert rescored["metrics"] == summary["metrics"]


def test_bad_inputs_are_one_sentence(tmp_path, capsys):
    # issue 22.6: non-UTF-8 bytes, a typo in an option, a key Hydra would add.
    bad = tmp_path / "p.jsonl"
    bad.write_bytes(b'{"id": "gsm8k-0", "completion": "ok"}\n{"id": "gsm8k-1", "completion": "\xff"}\n')
    assert main(["task=gsm8k", f"predictions={bad}", f"task.data_files={GSM8K}"]) == 2
    err = capsys.readouterr().err
    assert "line 2 is not UTF-8 text (byte 0xff" in err and err.count("\n") == 1
    assert main(["task=gsm8k", f"predictons={bad}"]) == 2
    assert "unknown option 'predictons'; did you mean predictions=?" in capsys.readouterr().err
    assert main(["task=gsm8k", f"predictions={bad}", "+foo=1"]) == 2
    assert "does not add or remove config keys" in capsys.readouterr().err


def test_rows_are_kept_as_scored_and_resumed(tmp_path, capsys, monkeypatch):
    # issue 22.4: Ctrl-C (or a kill) mid-run keeps every scored row; the same command resumes.
    from boe_bench.tasks.gsm8k import GSM8K as Task

    predictions, out = write(tmp_path / "p.jsonl", gsm8k_rows(6)), tmp_path / "s.json"
    args = ["task=gsm8k", f"predictions={predictions}", f"out={out}", f"task.data_files={GSM8K}"]
    real, calls = Task.score, []

    def interrupted(self, doc, completion):
        calls.append(doc["id"])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(self, doc, completion)

    monkeypatch.setattr(Task, "score", interrupted)
    assert main(args) == 130
    rows = out.with_name(out.name + ".rows.jsonl")
    err = capsys.readouterr().err
    assert "interrupted; 3 scored rows are kept" in err and "Traceback" not in err
    assert len(rows.read_text().splitlines()) == 1 + 3 and not out.exists()
    monkeypatch.setattr(Task, "score", real)
    scored = []
    monkeypatch.setattr(Task, "score", lambda self, doc, c: scored.append(doc["id"]) or real(self, doc, c))
    assert main(args) == 0
    assert "resuming: 3 rows already scored" in capsys.readouterr().err
    assert scored == ["gsm8k-3", "gsm8k-4", "gsm8k-5"] and not rows.exists()
    assert json.loads(out.read_text())["metrics"] == {"exact_match_strict": 1.0, "exact_match_flexible": 1.0}


def test_a_full_disk_keeps_the_rows(tmp_path, capsys, monkeypatch):
    import errno

    import boe_bench.score as score

    predictions, out = write(tmp_path / "p.jsonl", gsm8k_rows(2)), tmp_path / "s.json"

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(score, "write_whole", full)
    assert main(["task=gsm8k", f"predictions={predictions}", f"out={out}", f"task.data_files={GSM8K}"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device; 2 scored rows are kept" in err and err.count("\n") == 1
    assert len(out.with_name(out.name + ".rows.jsonl").read_text().splitlines()) == 3


def test_rows_of_another_run_are_not_mixed_in(tmp_path, capsys):
    predictions, out = write(tmp_path / "p.jsonl", gsm8k_rows(2)), tmp_path / "s.json"
    out.with_name(out.name + ".rows.jsonl").write_text('{"task": "other"}\n{"index": 0, "metrics": {}}\n')
    assert main(["task=gsm8k", f"predictions={predictions}", f"out={out}", f"task.data_files={GSM8K}"]) == 2
    assert "holds rows of another task or predictions file" in capsys.readouterr().err
