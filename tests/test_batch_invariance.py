"""Batch invariance: a prompt decodes the same tokens, with the same NFE, in a left-padded
batch as alone, for every registered sampler, greedy and sampled (each row draws from its
own stream, seeded ``seed + row``), adaptive loops included (a row whose block is full waits:
it is charged no forward and its sampler state does not move). On float64 models, where the
padded batch's logits equal each prompt's own to rounding far below any decision."""
import pytest
import torch

from boe_bench.models.mdlm import build_tiny_mdlm
from boe_bench.models.sedd import build_tiny_sedd
from boe_bench.models.tiny import build_tiny
from boe_bench.samplers import SAMPLERS, Schedule, build_sampler
from boe_bench.samplers.base import StopCriterion

from tests.denoisers import LogitsWrapper


class PositionSharpened(LogitsWrapper):
    """A random model's logits scaled by 20..80 by position (counted from the row's first real
    token, so padding moves nothing): confidences then spread from near-uniform to near-certain
    and differ between positions, so adaptive samplers take different steps in different rows,
    which a raw random model (the same prediction at every masked position) never shows."""

    def transform(self, logits, positions):
        return logits * (20 + 60 * torch.sin(positions * 1.3) ** 2)[..., None]


@pytest.fixture(scope="module")
def models():
    return {"llada": PositionSharpened(build_tiny("llama", seed=0, dtype="float64")),
            "mdlm": build_tiny_mdlm(seed=0, dtype="float64"), "sedd": build_tiny_sedd(seed=0, dtype="float64")}


MODEL_OF = {"remdm": "mdlm", "dfm": "mdlm", "fb": "mdlm", "sedd_analytic": "sedd"}
CASES = {  # sampler -> settings; adaptive ones loose enough that rows take different steps
    "boe": [{"rho": 0.5}, {"rho": 0.5, "temperature": 0.5}],
    "boe_exact": [{"rho": 0.5}],
    "confidence": [{}, {"temperature": 0.9}],
    "margin": [{}],
    "entropy": [{}],
    "random": [{}],
    "pc_sampler": [{}],
    "eb_sampler": [{"gamma": 0.5}, {"gamma": 0.5, "temperature": 0.8}],
    "fast_dllm": [{"threshold": 0.7}, {"factor": 1.0}],
    "klass": [{"conf_threshold": 0.5, "kl_threshold": 0.5}, {"conf_threshold": 0.5, "kl_threshold": 0.5,
                                                              "temperature": 0.7}],
    "lookum": [{}, {"verifier_temperature": 0.0}],
    "remdm_llada": [{}],
    "remdm": [{}],
    "dfm": [{}],
    "fb": [{}],
    "sedd_analytic": [{}],
}
TEXTS = ["Question: 2+2?\nAnswer:", "Hi", "The cat sat on", "def f(x):", "Once upon a time, there"]


def test_every_registered_sampler_has_a_case():
    assert sorted(CASES) == SAMPLERS.names()


@pytest.mark.parametrize("name, kwargs", [(name, kw) for name, kws in CASES.items() for kw in kws],
                         ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items()))
def test_a_batch_decodes_each_prompt_as_alone(models, name, kwargs):
    model = models[MODEL_OF.get(name, "llada")]
    prompts = [model.tokenizer(t)["input_ids"] for t in TEXTS]
    schedule = Schedule(24, 12, 12)
    stop = StopCriterion(model.tokenizer, ["\n"], model.eos_ids)
    batched = build_sampler(name, **kwargs).generate(model, prompts, schedule, seed=5, stop=stop)
    nfes = []
    for row, prompt in enumerate(prompts):
        alone = build_sampler(name, **kwargs).generate(model, [prompt], schedule, seed=5 + row, stop=stop)
        assert alone.tokens[0].tolist() == batched.tokens[row].tolist(), f"row {row}"
        assert alone.accounting[0].nfe == batched.accounting[row].nfe, f"row {row}"
        assert alone.texts[0] == batched.texts[row]
        nfes.append(alone.accounting[0].nfe)
    if name in ("eb_sampler", "fast_dllm", "klass"):
        assert len(set(nfes)) > 1  # rows did take different numbers of forwards


def test_per_row_seeds_are_each_rows_own(models):
    """A row seeded s decodes the same in any batch position (the runner seeds each document by
    its position in the run)."""
    model = models["llada"]
    prompts = [model.tokenizer(t)["input_ids"] for t in TEXTS[:3]]
    sampler = build_sampler("confidence", temperature=1.0)
    schedule = Schedule(12, 6, 6)
    forward = sampler.generate(model, prompts, schedule, seed=[7, 8, 9]).tokens
    backward = sampler.generate(model, prompts[::-1], schedule, seed=[9, 8, 7]).tokens
    assert torch.equal(forward, backward.flip(0))
    assert not torch.equal(forward[0], sampler.generate(model, prompts[:1], schedule, seed=8).tokens[0])
