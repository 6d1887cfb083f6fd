"""boe_mdm through lm-evaluation-harness, offline: a local GSM8K task on the fixture slice."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is optional: pip install 'boe_bench[lm-eval]' (lm-eval==0.4.13)")

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"
MODEL_ARGS = dict(model="tiny", sampler="confidence", gen_length=16, steps=8, block_length=16)


def write_task(directory: Path) -> str:
    """A generate_until task over the fixture files (absolute paths: lm-eval resolves
    data_files against its own working directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "gsm8k_fixture.yaml").write_text(f"""task: gsm8k_fixture
dataset_path: json
dataset_kwargs:
  data_files:
    test: {FIX / 'gsm8k_test.jsonl'}
    train: {FIX / 'gsm8k_train.jsonl'}
output_type: generate_until
test_split: test
fewshot_split: train
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer.split('####')[-1].strip()}}}}"
generation_kwargs:
  until: ["Question:", "\\n\\n"]
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")
    return "gsm8k_fixture"


def test_generate_until_matches_our_sampler_and_scores_through_the_harness(tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from boe_bench.integrations.lm_eval import BoeMDM
    from boe_bench.samplers.base import StopCriterion

    lm = BoeMDM(**MODEL_ARGS, batch_size=1)
    task = write_task(tmp_path / "tasks")
    result = simple_evaluate(model=lm, tasks=[task], task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
                             limit=3, num_fewshot=0, log_samples=True)
    samples = result["samples"][task]
    assert [s["doc_id"] for s in samples] == [0, 1, 2]
    assert 0.0 <= result["results"][task]["exact_match,none"] <= 1.0
    # What the harness scored is exactly what our sampler generates for the same prompt.
    tokenizer = lm.model.tokenizer
    stop = StopCriterion(tokenizer, ["Question:", "\n\n"], lm.model.eos_ids)
    for index, sample in enumerate(samples):
        prompt = f"Question: {sample['doc']['question']}\nAnswer:"
        expected = lm.sampler.generate(lm.model, [tokenizer(prompt)["input_ids"]], lm.schedule, stop=stop,
                                       seed=lm.seed + index).texts[0]
        assert sample["resps"] == [[expected]]
        assert "Question:" not in expected


def test_loglikelihood_says_it_is_not_implemented_and_bad_args_are_refused():
    from boe_bench.errors import ConfigError
    from boe_bench.integrations.lm_eval import BoeMDM

    lm = BoeMDM(**MODEL_ARGS)
    with pytest.raises(NotImplementedError, match="generate_until"):
        lm.loglikelihood([])
    with pytest.raises(ConfigError, match="unknown boe_mdm model_args"):
        BoeMDM(**MODEL_ARGS, rho=0.3)
    assert lm.gather_object({"a": 1}) == [{"a": 1}] and lm.rank == 0 and lm.world_size == 1


def run_cli(tmp_path: Path, name: str, launcher: list[str], args: str, task: str, limit: int) -> Path:
    """Run the entry point under ``launcher`` (offline, samples logged); its output folder."""
    out = tmp_path / name
    result = subprocess.run(
        [*launcher, "-m", "boe_bench.integrations.lm_eval", "--model", "boe_mdm", "--model_args", args,
         "--tasks", task, "--include_path", str(tmp_path / "tasks"), "--limit", str(limit), "--num_fewshot", "0",
         "--output_path", str(out), "--log_samples"],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def logged_responses(out: Path, task: str) -> dict[int, list]:
    (samples_file,) = out.rglob(f"samples_{task}_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    return {s["doc_id"]: s["resps"] for s in samples}


@pytest.mark.slow  # a fresh interpreter importing lm-eval, torch and transformers
def test_cli_entry_point_runs_the_registered_model(tmp_path):
    task = write_task(tmp_path / "tasks")
    args = ",".join(f"{k}={v}" for k, v in MODEL_ARGS.items()) + ",sampler.temperature=0.0"
    out = run_cli(tmp_path, "out", [sys.executable], args, task, limit=2)
    written = list(out.rglob("results_*.json"))
    assert written
    results = json.loads(written[0].read_text())
    assert results["results"][task]["exact_match,none"] is not None
    assert results["config"]["model"] == "boe_mdm"


@pytest.mark.slow  # two fresh interpreters plus a two-process torchrun
def test_data_parallel_ranks_gather_to_the_single_process_result(tmp_path):
    """torchrun with two CPU processes (gloo): each rank decodes half the documents, and
    lm-eval's gather through our all_gather/gather_object hooks yields what one process logs."""
    task = write_task(tmp_path / "tasks")
    # Sampling at T=1 with a per-document seed: a gather that mixed up documents would show.
    args = ",".join(f"{k}={v}" for k, v in MODEL_ARGS.items()) + ",sampler.temperature=1.0"
    single = logged_responses(run_cli(tmp_path, "one", [sys.executable], args, task, limit=4), task)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517"]
    parallel = logged_responses(run_cli(tmp_path, "two", torchrun, args, task, limit=4), task)
    assert sorted(single) == sorted(parallel) == [0, 1, 2, 3]
    assert parallel == single
    assert len({str(r) for r in single.values()}) > 1  # the documents got different generations


def test_shipped_gsm8k_local_task_runs_offline_on_the_fixture_slice(monkeypatch):
    """Issue 24: the README's lm-eval command failed with a hub traceback. The shipped
    gsm8k_local task reads local files; the protocol is lm-eval's gsm8k (shots from the train
    file, both filters)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from boe_bench.integrations.lm_eval import LOCAL_TASKS, BoeMDM, with_local_tasks

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = simple_evaluate(model=BoeMDM(**MODEL_ARGS, batch_size=1), tasks=["gsm8k_local"],
                             task_manager=TaskManager(include_path=str(LOCAL_TASKS)), limit=2, num_fewshot=1,
                             log_samples=True)
    assert {"exact_match,strict-match", "exact_match,flexible-extract"} <= set(result["results"]["gsm8k_local"])
    test_rows = [json.loads(line) for line in (FIX / "gsm8k_test.jsonl").read_text().splitlines()]
    train = (FIX / "gsm8k_train.jsonl").read_text()
    for sample in result["samples"]["gsm8k_local"]:
        context = sample["arguments"][0][0]
        question = test_rows[sample["doc_id"]]["question"]
        assert context.endswith(f"Question: {question}\nAnswer:") and context.count("Question:") == 2
        shot = context.split("Question: ")[1].split("\nAnswer:")[0]
        assert json.dumps(shot)[1:-1] in train  # the shot comes from the local train file
    assert with_local_tasks(["--tasks", "x"])[-2:] == ["--include_path", str(LOCAL_TASKS)]
    assert with_local_tasks(["--include_path", "mine"]) == ["--include_path", "mine"]


@pytest.mark.slow  # a fresh interpreter importing lm-eval, torch and transformers
def test_readme_lm_eval_command_runs_as_written_offline(tmp_path):
    """The README's offline lm-eval command, copied from the README and run from another
    directory with the hub unreachable."""
    readme = (ROOT / "README.md").read_text()
    command = next(block for block in readme.split("```") if "--tasks gsm8k_local" in block)
    command = " ".join(line.rstrip("\\").strip() for line in command.strip().splitlines() if line.strip()
                       and not line.startswith("bash"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = subprocess.run(command.replace("python ", f"{sys.executable} ", 1), shell=True, cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gsm8k_local" in result.stdout and "flexible-extract" in result.stdout
