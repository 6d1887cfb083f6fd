"""Our denoisers and samplers as an lm-evaluation-harness model, ``boe_mdm``.

    python -m boe_bench.integrations.lm_eval --model boe_mdm \\
        --model_args model=llada_8b_base,sampler=boe,gen_length=256,steps=128,block_length=32 \\
        --batch_size 4 --tasks gsm8k --output_path results/lm_eval

``model``/``sampler`` name configs in configs/model and configs/sampler; any other key with a
dot is a Hydra override of them (``sampler.rho=0.25``, ``model.dtype=bfloat16``). Generation
is fixed-length (``gen_length`` tokens, as LLaDA's own lm-eval wrapper) and the text is cut at
the request's ``until`` strings; samplers stop a row early once its answer is settled. The
batch size is lm-eval's ``--batch_size`` (its CLI always passes one, so not in model_args).
Data parallel: launch with ``torchrun --nproc_per_node=N -m boe_bench.integrations.lm_eval ...``;
lm-eval >= 0.4.12 gathers through ``all_gather``/``gather_object``/``barrier``, implemented here
over torch.distributed. lm-eval's registry has no plugin discovery, so this module registers the
model and then hands over to lm-eval's own CLI, with ``--include_path`` set to the shipped task
YAMLs (``lm_eval_tasks/``) unless one is given. Offline, on the shipped GSM8K slice:

    HF_DATASETS_OFFLINE=1 python -m boe_bench.integrations.lm_eval --model boe_mdm \\
        --model_args model=tiny,sampler=confidence,gen_length=32,steps=16,block_length=16 \\
        --tasks gsm8k_local --num_fewshot 1 --limit 2 --batch_size 1
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from boe_bench.errors import ConfigError
from boe_bench.samplers.base import StopCriterion
from boe_bench.samplers.schedule import Schedule

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
SCHEDULE_KEYS = ("gen_length", "steps", "block_length")


def compose_parts(model: str, sampler: str, overrides: list[str]):
    """The model and sampler nodes of our Hydra config, composed by name."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={model}", f"sampler={sampler}", *overrides])
    return cfg.model, cfg.sampler


def init_distributed() -> tuple[int, int]:
    """Rank and world size; joins the process group torchrun / accelerate launch describe."""
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@register_model("boe_mdm")
class BoeMDM(LM):
    """A masked diffusion model decoded by one of our samplers, for ``generate_until`` tasks."""

    def __init__(self, model: str = "tiny", sampler: str = "confidence", gen_length: int = 256,
                 steps: int | None = None, block_length: int = 32, batch_size: int = 1, seed: int = 1234,
                 device: str | None = None, max_batch_size: int | None = None, **overrides):
        super().__init__()
        from boe_bench.runner import instantiate

        unknown = [k for k in overrides if "." not in k]
        if unknown:
            raise ConfigError(f"unknown boe_mdm model_args {unknown}; known: model, sampler, "
                              f"{', '.join(SCHEDULE_KEYS)}, batch_size, seed, or dotted overrides like sampler.rho=0.25")
        self._rank, self._world_size = init_distributed()
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", self._rank % torch.cuda.device_count())))
        gen_length = int(gen_length)
        # lm-eval coerces "steps=128" to int; our default is two tokens per step.
        self.schedule = Schedule(gen_length=gen_length, steps=int(steps) if steps else gen_length // 2,
                                 block_length=int(block_length))
        # lm-eval's CLI always passes --device/--max_batch_size; the model config places the
        # model (`model.device=cuda:1`), and batches are fixed at batch_size.
        del device, max_batch_size
        self.batch_size_per_gpu = int(batch_size) if str(batch_size).isdigit() else 1
        if self.batch_size_per_gpu < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.seed = int(seed)
        model_cfg, sampler_cfg = compose_parts(str(model), str(sampler), [f"{k}={v}" for k, v in overrides.items()])
        self.model = instantiate(model_cfg, "model")
        self.sampler = instantiate(sampler_cfg, "sampler")
        self.names = {"model": str(model), "sampler": str(sampler)}

    @property
    def device(self):
        return self.model.device

    @property
    def tokenizer_name(self) -> str:
        return f"boe_mdm-{self.names['model']}"

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Fixed-length generation per request, cut at its ``until`` strings; requests with the
        same stop strings are batched (left-padded) in arrival order."""
        tokenizer = self.model.tokenizer
        results: list[str | None] = [None] * len(requests)
        by_until: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            _, gen_kwargs = request.args
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            by_until.setdefault(tuple(until), []).append(index)
        for until, indices in by_until.items():
            stop = StopCriterion(tokenizer, until, self.model.eos_ids)
            for start in range(0, len(indices), self.batch_size_per_gpu):
                batch = indices[start : start + self.batch_size_per_gpu]
                prompts = [tokenizer(requests[i].args[0])["input_ids"] for i in batch]
                # Each row seeded by its document, not by arrival order or batch, so that each
                # data-parallel rank draws what a single process would for the same document.
                seeds = [self.seed + (i if getattr(requests[i], "doc_id", None) is None else requests[i].doc_id)
                         for i in batch]
                output = self.sampler.generate(self.model, prompts, self.schedule, stop=stop, seed=seeds)
                for i, text in zip(batch, output.texts):
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return results

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("boe_mdm scores generations only (generate_until tasks such as gsm8k, "
                                  "humaneval, mbpp, minerva_math500); masked-diffusion log-likelihoods need a "
                                  "Monte-Carlo ELBO, which this wrapper does not implement")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("boe_mdm does not compute rolling log-likelihoods (perplexity tasks)")

    # Data parallel (lm-eval >= 0.4.12 calls these instead of an accelerate Accelerator).
    def all_gather(self, tensor):
        if self._world_size == 1:
            return tensor
        import torch.distributed as dist

        parts = [torch.zeros_like(tensor) for _ in range(self._world_size)]
        dist.all_gather(parts, tensor)
        return torch.stack(parts) if tensor.dim() == 0 else torch.cat(parts)

    def gather_object(self, obj, dst=0):
        if self._world_size == 1:
            return [obj]
        import torch.distributed as dist

        gathered = [None] * self._world_size if self._rank == dst else None
        dist.gather_object(obj, gathered, dst=dst)
        return gathered

    def barrier(self) -> None:
        if self._world_size > 1:
            import torch.distributed as dist

            dist.barrier()


# Task YAMLs for our benchmarks' local files (gsm8k_local: the GSM8K protocol without the hub).
LOCAL_TASKS = Path(__file__).resolve().parent / "lm_eval_tasks"


def with_local_tasks(argv: list[str]) -> list[str]:
    """``argv`` with ``--include_path`` to the shipped task YAMLs when none is given, so
    ``--tasks gsm8k_local`` runs offline as written (lm-eval takes one include path; a user's
    own replaces ours)."""
    if any(a == "--include_path" or a.startswith("--include_path=") for a in argv):
        return argv
    return [*argv, "--include_path", str(LOCAL_TASKS)]


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    torch.manual_seed(1234)
    sys.argv = [sys.argv[0], *with_local_tasks(sys.argv[1:])]
    cli_evaluate()


if __name__ == "__main__":
    sys.exit(main())
