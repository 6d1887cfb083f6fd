"""Baselines pinned step by step on hand-built logits, then end to end on the tiny model."""
import json
import math

import pytest
import torch

from boe_bench.models.base import Denoiser
from boe_bench.samplers import Schedule, StopCriterion, build_sampler
from boe_bench.samplers.eb_sampler import entropy_bounded_count
from boe_bench.samplers.fast_dllm import factor_count, threshold_count

VOCAB, MASK = 6, 5


class ScriptedDenoiser(Denoiser):
    """Returns, position by position, fixed distributions over tokens 0..4 (never MASK)."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.probs = probs  # [L, VOCAB]
        self.mask_id, self.pad_id, self.eos_ids, self.vocab_size = MASK, 0, (), VOCAB
        self.weight = torch.nn.Parameter(torch.eye(VOCAB), requires_grad=False)
        self.calls = 0

        class Tok:
            def decode(self, ids, skip_special_tokens=True):
                return "".join(str(i) for i in ids)

        self.tokenizer = Tok()

    @property
    def embedding_matrix(self):
        return self.weight

    def forward_rows(self, embeds, attention_mask=None, time=None, capture=False, ids=None):
        self.calls += 1
        logits = self.probs.log().expand(embeds.shape[0], -1, -1).clone()
        return logits, None

    def live_forward(self, state, live_rows, live_embeds):
        raise NotImplementedError


def peaked(top: float, token: int) -> list[float]:
    rest = (1 - top) / 4
    return [top if v == token else (rest if v < MASK else 1e-12) for v in range(VOCAB)]


def canvas_probs(rows):
    prompt = [peaked(0.99, 0)]
    return torch.tensor(prompt + rows, dtype=torch.float64)


def run(sampler, probs, gen_length, steps, block_length):
    model = ScriptedDenoiser(probs)
    out = sampler.generate(model, [[0]], Schedule(gen_length, steps, block_length))
    return model, out


def test_eb_count_rule_by_hand():
    H = torch.tensor([[0.001, 0.004, 0.02, 0.5, 0.003]])
    allowed = torch.ones_like(H, dtype=torch.bool)
    # ascending: .001 .003 .004 .02 .5; sums before each: 0, .001, .004, .008, .028
    assert entropy_bounded_count(H, allowed, 0.01).tolist() == [4]
    assert entropy_bounded_count(H, allowed, 0.0).tolist() == [1]
    allowed[0, :2] = False
    assert entropy_bounded_count(H, allowed, 100).tolist() == [3]


def test_eb_sampler_commits_certain_positions_together_and_counts_forwards():
    rows = [peaked(0.999, 1), peaked(0.999, 2), peaked(0.4, 3), peaked(0.999, 4)]
    model, out = run(build_sampler("eb_sampler", gamma=0.01), canvas_probs(rows), 4, 4, 4)
    # Each peaked position has H = 0.0093. Step 1: entropy sums before each of the sorted
    # positions are 0, .0093, .0186: two go. Step 2: 0, .0093 <= .01: the rest go together.
    assert out.tokens[0].tolist() == [1, 2, 3, 4]
    assert out.accounting[0].nfe == model.calls == 2


def test_fast_dllm_threshold_and_factor_rules_by_hand():
    conf = torch.tensor([[0.95, 0.5, 0.91, 0.2]])
    allowed = torch.ones_like(conf, dtype=torch.bool)
    assert threshold_count(conf, allowed, 0.9).tolist() == [2]
    assert threshold_count(conf, allowed, 0.99).tolist() == [1]  # the top-1 always goes
    # sorted .95 .91 .5 .2 against 1 - f/(n+1) with f=1: n=1 passes, .91 >= 1-1/3, .5 < 1-1/4
    assert factor_count(conf, allowed, 1.0).tolist() == [2]


def test_fast_dllm_sampler_steps_and_nfe():
    rows = [peaked(0.95, 1), peaked(0.3, 2), peaked(0.97, 3), peaked(0.5, 4)]
    model, out = run(build_sampler("fast_dllm", threshold=0.9), canvas_probs(rows), 4, 4, 4)
    # step 1: positions 1 and 3 (>= 0.9); step 2: the best of the rest (0.5); step 3: the last.
    assert out.tokens[0].tolist() == [1, 2, 3, 4] and out.accounting[0].nfe == 3


def test_pc_sampler_prefers_rare_tokens_and_early_positions(tmp_path):
    table = tmp_path / "freq.json"
    table.write_text(json.dumps({"num_token": 1000, "p_baseline_dict": {"1": 900, "2": 10, "3": 10, "4": 10}}))
    rows = [peaked(0.9, 1), peaked(0.9, 2), peaked(0.9, 3), peaked(0.6, 4)]
    sampler = build_sampler("pc_sampler", lam=0.25, alpha=10.0, freq_table=str(table))
    order = []
    model = ScriptedDenoiser(canvas_probs(rows))
    original = sampler.score

    def spy(logits, tokens, state):
        scores = original(logits, tokens, state)
        p, pos = 0.9, torch.tensor([0.0, 1, 2])
        expected = torch.exp(-0.25 * pos) * (-p * torch.log(torch.tensor([0.9, 0.01, 0.01]) + 1e-9))
        if state.masked[0, 1:4].all():
            assert torch.allclose(scores[0, 1:4], expected.double(), rtol=1e-6)
        order.append(scores[0].masked_fill(~state.masked[0], -math.inf).argmax().item())
        return scores

    sampler.score = spy
    sampler.generate(model, [[0]], Schedule(4, 4, 4))
    # The frequent token at position 1 waits although it is the earliest and as confident.
    assert order[0] == 2 and order.index(1) > 0


@pytest.mark.parametrize("name, kwargs", [("eb_sampler", {}), ("fast_dllm", {}), ("fast_dllm", {"factor": 1.0}),
                                          ("pc_sampler", {})])
def test_end_to_end_on_tiny_model(tiny_llada, name, kwargs):
    tok = tiny_llada.tokenizer
    prompt = tok("Question: 2+3?\nAnswer:")["input_ids"]
    out = build_sampler(name, **kwargs).generate(tiny_llada, [prompt, tok("Hi")["input_ids"]], Schedule(32, 16, 16),
                                                 stop=StopCriterion(tok, ["Question:"], tiny_llada.eos_ids))
    assert len(out.texts) == 2
    for acc in out.accounting:
        assert 1 <= acc.nfe <= 32
