"""HumanEval and MBPP: reference solutions written as a model would write them get full
marks, perturbed ones none; pass@k over samples; the rescoring CLI agrees with the runner."""
import gzip
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from boe_bench.errors import ConfigError
from boe_bench.scoring.sandbox import pass_at_k
from boe_bench.tasks import build_task
from boe_bench.tasks.code import cut_at_stop

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"
HUMANEVAL, MBPP = FIX / "humaneval.jsonl", FIX / "mbpp.jsonl"
# Generous: the machine running the tests may be busy; the protocol's 3 s is the config default.
TIMEOUT = 10.0


def score_all(task, pairs):
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda pair: task.score(*pair), pairs))


def test_humaneval_canonical_solutions_pass_and_perturbed_ones_fail():
    task = build_task("humaneval", data_files=str(HUMANEVAL), timeout=TIMEOUT)
    docs = task.docs()
    assert [d["id"] for d in docs] == [f"HumanEval/{i}" for i in range(8)]
    completions = {
        # A model's completion runs on past the function; lm-eval cuts it at "\nif".
        "canonical, then more text": lambda d: d["canonical_solution"] + "\nif True:\n    raise SystemExit(0)\n",
        "canonical": lambda d: d["canonical_solution"],
        "returns None": lambda d: "    return None\n",
        "exits before the tests": lambda d: "    pass\nimport sys\nsys.exit(0)\n",
        "syntax error": lambda d: d["canonical_solution"] + "\n    return (\n",
    }
    expected = {"canonical, then more text": 1.0, "canonical": 1.0, "returns None": 0.0,
                "exits before the tests": 0.0, "syntax error": 0.0}
    for name, make in completions.items():
        results = score_all(task, [(d, make(d)) for d in docs])
        assert [r["pass@1"] for r in results] == [expected[name]] * len(docs), (name, [r["answer"] for r in results])


def test_humaneval_program_and_prompt_follow_lm_eval():
    task = build_task("humaneval", data_files=str(HUMANEVAL))
    doc = task.docs()[0]
    assert task.prompt_text(doc) == doc["prompt"]
    assert task.program(doc, "BODY") == doc["prompt"] + "BODY\n" + doc["test"] + "\ncheck(has_close_elements)\n"
    assert cut_at_stop("    return 1\n\ndef g():\n#x", task.until) == "    return 1\n"
    assert task.until == ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def test_humaneval_reads_the_gzipped_upstream_file(tmp_path):
    packed = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(packed, "wt") as f:
        f.write(HUMANEVAL.read_text())
    assert build_task("humaneval", data_files=str(packed)).docs() == build_task("humaneval", data_files=str(HUMANEVAL)).docs()


def test_mbpp_reference_code_passes_and_perturbed_code_fails():
    task = build_task("mbpp", data_files=str(MBPP), timeout=TIMEOUT)
    docs = task.docs()
    assert [d["id"] for d in docs] == [f"mbpp-{i}" for i in range(11, 21)]
    cases = {
        "reference, then [DONE] and chatter": (lambda d: d["code"] + "\n[DONE]\n\nYou are an expert", 1.0),
        "reference": (lambda d: d["code"], 1.0),
        "unrelated function": (lambda d: "def unrelated():\n    pass", 0.0),
        "exits before the asserts": (lambda d: d["code"] + "\nimport os\nos._exit(0)", 0.0),
        "reference of the next problem": (lambda d: docs[(docs.index(d) + 1) % len(docs)]["code"], 0.0),
    }
    for name, (make, want) in cases.items():
        results = score_all(task, [(d, make(d)) for d in docs])
        assert [r["pass@1"] for r in results] == [want] * len(docs), (name, [r["answer"] for r in results])


def test_mbpp_prompt_is_lm_eval_three_shot():
    task = build_task("mbpp", data_files=str(MBPP))
    assert [s["task_id"] for s in task.shots()] == [2, 3, 4]
    doc = task.docs()[0]

    def block(row):
        return (f"You are an expert Python programmer, and here is your task: {row['text']} Your code should pass "
                f"these tests:\n\n{row['test_list'][0]}\n{row['test_list'][1]}\n{row['test_list'][2]}\n[BEGIN]\n")

    shots = [block(s) + s["code"] + "\n[DONE]" for s in task.shots()]
    assert task.prompt_text(doc) == "\n\n".join(shots) + "\n\n" + block(doc)
    assert task.program(doc, "CODE") == "CODE\n" + "\n".join(doc["test_list"]) + "\n"


def test_mbpp_split_files_and_missing_shots(tmp_path):
    rows = [json.loads(line) for line in MBPP.read_text().splitlines()]
    test_file, prompt_file = tmp_path / "test.jsonl", tmp_path / "prompt.jsonl"
    test_file.write_text("".join(json.dumps(r) + "\n" for r in rows if r["task_id"] >= 11))
    prompt_file.write_text("".join(json.dumps(r) + "\n" for r in rows if r["task_id"] < 11))
    split = build_task("mbpp", data_files={"test": str(test_file), "prompt": str(prompt_file)})
    whole = build_task("mbpp", data_files=str(MBPP))
    assert split.prompt_text(split.docs()[3]) == whole.prompt_text(whole.docs()[3])
    with pytest.raises(ConfigError, match="few-shot"):
        build_task("mbpp", data_files=str(test_file)).prompt_text(split.docs()[0])


def test_pass_at_k_over_several_samples_per_problem():
    task = build_task("humaneval", data_files=str(HUMANEVAL), k=[1, 2, 5])
    outcomes = {"HumanEval/0": [1, 0, 0], "HumanEval/1": [0, 0, 0], "HumanEval/2": [1, 1, 0]}
    records = [{"id": i, "metrics": {"pass@1": float(p), "timed_out": 0.0}} for i, ps in outcomes.items() for p in ps]
    metrics = task.aggregate(records)
    assert metrics["pass@1"] == pytest.approx((1 / 3 + 0 + 2 / 3) / 3)
    assert metrics["pass@2"] == pytest.approx((pass_at_k(3, 1, 2) + 0 + pass_at_k(3, 2, 2)) / 3)
    assert "pass@5" not in metrics  # more than the 3 samples each problem has
    assert metrics["problems"] == 3 and metrics["samples_per_problem"] == 3


def rescore_cli(*args):
    return subprocess.run([sys.executable, "-m", "boe_bench.score", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_rescoring_cli_scores_samples_with_the_task_scorer(tmp_path):
    docs = [json.loads(line) for line in HUMANEVAL.read_text().splitlines()][:3]
    # Problem 0: both samples right; problem 1: one of two; problem 2: neither.
    lines = [(docs[0], docs[0]["canonical_solution"]), (docs[0], docs[0]["canonical_solution"] + "\n#"),
             (docs[1], docs[1]["canonical_solution"]), (docs[1], "    return []\n"),
             (docs[2], "    return 0.5\n"), (docs[2], "    import sys\n    sys.exit(0)\n")]
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text("".join(json.dumps({"id": d["task_id"], "completion": c}) + "\n" for d, c in lines))
    out = tmp_path / "summary.json"
    result = rescore_cli("task=humaneval", f"predictions={predictions}", f"out={out}", "workers=3",
                         f"task.data_files={HUMANEVAL}", f"task.timeout={TIMEOUT}", "task.k=[1,2]")
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    assert summary["n"] == 6 and summary["metrics"]["problems"] == 3
    assert summary["score"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert summary["metrics"]["pass@2"] == pytest.approx((1 + 1 + 0) / 3)
    assert [r["metrics"]["pass@1"] for r in summary["records"]] == [1, 1, 1, 0, 0, 0]
    assert json.loads(result.stdout)["pass@1"] == summary["score"]


def test_rescoring_cli_refuses_bad_input_in_one_sentence(tmp_path, capsys):
    from boe_bench.score import main

    wrong_id = tmp_path / "wrong.jsonl"
    wrong_id.write_text(json.dumps({"id": "HumanEval/999", "completion": ""}) + "\n")
    assert main(["task=humaneval", f"predictions={wrong_id}", f"task.data_files={HUMANEVAL}"]) == 2
    assert "not documents of task humaneval" in capsys.readouterr().err
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"id": "HumanEval/0"}\n')
    assert main(["task=humaneval", f"predictions={malformed}", f"task.data_files={HUMANEVAL}"]) == 2
    assert '"completion"' in capsys.readouterr().err
    assert main(["task=humaneval"]) == 2 and "usage" in capsys.readouterr().err
    fine = tmp_path / "fine.jsonl"
    fine.write_text(json.dumps({"id": "HumanEval/0", "completion": ""}) + "\n")
    assert main(["task=humaneval", f"predictions={fine}", "task.no_such_option=1"]) == 2
    assert "bad override" in capsys.readouterr().err


@pytest.mark.parametrize("task, data", [("humaneval", HUMANEVAL), ("mbpp", MBPP)])
def test_runs_end_to_end_on_tiny_and_rescoring_agrees(task, data, tmp_path):
    from boe_bench.runner import run

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "model=tiny", "sampler=confidence", f"task={task}", "limit=4", "batch_size=4", "gen_length=32", "steps=16",
            "block_length=32", "progress=false", f"out_dir={tmp_path / 'run'}", f"task.data_files={data}"])
    summary = run(cfg)
    assert summary["n"] == 4 and summary["metrics"]["problems"] == 4 and summary["score"] is not None
    examples = tmp_path / "run" / "examples.jsonl"
    records = [json.loads(line) for line in examples.read_text().splitlines()]
    assert all(r["answer"] == "passed" or r["answer"].startswith(("failed", "timed out")) for r in records)
    out = tmp_path / "rescored.json"
    from boe_bench.score import main  # the CLI's entry point, in-process to spare a second torch import

    assert main([f"task={task}", f"predictions={examples}", f"out={out}", f"task.data_files={data}"]) == 0
    rescored = json.loads(out.read_text())
    assert [r["metrics"]["pass@1"] for r in rescored["records"]] == [r["metrics"]["pass@1"] for r in records]
    assert rescored["score"] == summary["score"]


# Canonical solutions through the task scorers (issue 11). The whole of HumanEval (164) and of
# MBPP's test split (500) pass except these, whose references fail under lm-eval too:
KNOWN_REFERENCE_FAILURES = {
    # Its asserts use `root`, `root1`, `root2`, built by test_setup_code, which lm-eval's mbpp
    # task does not run (its program is code + the three asserts).
    "mbpp-367": "NameError: name 'root' is not defined",
}
HUMANEVAL_ALL, MBPP_ALL = FIX / "humaneval_all.jsonl", FIX / "mbpp_all.jsonl"
# A fast slice: the four HumanEval problems whose tests import random, and a spread of MBPP.
FAST_HUMANEVAL = {"HumanEval/32", "HumanEval/38", "HumanEval/50", "HumanEval/53", "HumanEval/100", "HumanEval/163"}
FAST_MBPP = {"mbpp-11", "mbpp-100", "mbpp-250", "mbpp-367", "mbpp-400", "mbpp-510"}


def reference_results(ids=None):
    humaneval = build_task("humaneval", data_files=str(HUMANEVAL_ALL), timeout=30.0)
    mbpp = build_task("mbpp", data_files=str(MBPP_ALL), timeout=30.0)
    jobs = [(humaneval, d, d["canonical_solution"]) for d in humaneval.docs()]
    jobs += [(mbpp, d, d["code"]) for d in mbpp.docs()]
    if ids is not None:
        jobs = [job for job in jobs if job[1]["id"] in ids]
    with ThreadPoolExecutor(max_workers=4) as pool:
        scored = list(pool.map(lambda job: job[0].score(job[1], job[2]), jobs))
    return {job[1]["id"]: result for job, result in zip(jobs, scored)}


def check_references(results):
    failed = {i: r["answer"] for i, r in results.items() if r["pass@1"] != 1.0}
    expected = {i: f"failed: {why}" for i, why in KNOWN_REFERENCE_FAILURES.items() if i in results}
    assert failed == expected


def test_reference_solutions_pass_fast_slice():
    results = reference_results(FAST_HUMANEVAL | FAST_MBPP)
    assert len(results) == len(FAST_HUMANEVAL | FAST_MBPP)
    check_references(results)


@pytest.mark.slow
def test_reference_solutions_pass_all_of_humaneval_and_mbpp_test():
    results = reference_results()
    assert sum(i.startswith("HumanEval/") for i in results) == 164 and sum(i.startswith("mbpp-") for i in results) == 500
    check_references(results)


def test_bad_code_task_inputs_are_one_sentence():
    # issue 22.6
    with pytest.raises(ConfigError, match="task.memory_mb must be a number, got 'abc'"):
        build_task("humaneval", data_files=str(HUMANEVAL), memory_mb="abc")
    with pytest.raises(ConfigError, match=r"is not HumanEval.*use task=mbpp"):
        build_task("humaneval", data_files=str(MBPP)).docs()
    with pytest.raises(ConfigError, match=r"is not MBPP.*use task=humaneval"):
        build_task("mbpp", data_files=str(HUMANEVAL)).docs()
    with pytest.raises(ConfigError, match="task.strict must be true or false"):
        build_task("mbpp", data_files=str(MBPP), strict="yes")


def test_reference_solutions_pass_under_strict_fast_slice():
    # strict: pristine builtins/modules, the prompt's helpers (HumanEval/38's encode_cyclic) and
    # the entry point only; mbpp-126 tests a function named like a builtin (sum).
    ids = FAST_HUMANEVAL | FAST_MBPP | {"mbpp-126"}
    humaneval = build_task("humaneval", data_files=str(HUMANEVAL_ALL), timeout=30.0, strict=True)
    mbpp = build_task("mbpp", data_files=str(MBPP_ALL), timeout=30.0, strict=True)
    jobs = [(humaneval, d, d["canonical_solution"]) for d in humaneval.docs() if d["id"] in ids]
    jobs += [(mbpp, d, d["code"]) for d in mbpp.docs() if d["id"] in ids]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip([j[1]["id"] for j in jobs], pool.map(lambda j: j[0].score(j[1], j[2]), jobs)))
    check_references(results)


@pytest.mark.slow
def test_reference_solutions_pass_all_under_strict():
    humaneval = build_task("humaneval", data_files=str(HUMANEVAL_ALL), timeout=30.0, strict=True)
    mbpp = build_task("mbpp", data_files=str(MBPP_ALL), timeout=30.0, strict=True)
    jobs = [(humaneval, d, d["canonical_solution"]) for d in humaneval.docs()]
    jobs += [(mbpp, d, d["code"]) for d in mbpp.docs()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip([j[1]["id"] for j in jobs], pool.map(lambda j: j[0].score(j[1], j[2]), jobs)))
    check_references(results)
