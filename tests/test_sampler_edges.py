"""Edges every sampler shares (samplers/base.py): the mask id is never drawn, adaptive loops
are capped, rankings in the model's dtype on request, and ties broken as torch.topk breaks
them; plus what KLASS does when steps < gen_length."""
import pytest
import torch

from boe_bench.errors import ConfigError
from boe_bench.models.tiny import build_tiny
from boe_bench.samplers import SAMPLERS, Schedule, build_sampler
from boe_bench.samplers.base import SamplerStalled, sample_tokens, top_per_row

from tests.denoisers import LogitsWrapper
from tests.test_baselines import MASK, ScriptedDenoiser, filled, peaked, table

# Samplers that rank by confidence, margin, entropy or a score built on them.
CONFIDENCE_FAMILY = ["confidence", "margin", "entropy", "eb_sampler", "fast_dllm", "klass", "pc_sampler",
                     "lookum", "remdm_llada", "boe"]
ALL = CONFIDENCE_FAMILY + ["random"]
ADAPTIVE = ["fast_dllm", "eb_sampler", "klass"]


class MaskFavouring(LogitsWrapper):
    """A tiny model whose logits put the mask id 12 nats above every other token
    (p(MASK) > 0.99 everywhere), as a raw MDM can; differentiable for BoE's backward."""

    def transform(self, logits, positions):
        top = logits.max(-1, keepdim=True).values.detach() + 12
        index = torch.full_like(top, self.mask_id, dtype=torch.long)
        return logits.scatter(-1, index, top)


@pytest.fixture(scope="module")
def mask_favouring(tiny_llada):
    return MaskFavouring(tiny_llada)


def test_the_wrapped_model_prefers_mask(mask_favouring):
    ids = torch.tensor([mask_favouring.tokenizer("Hi")["input_ids"] + [mask_favouring.mask_id] * 8])
    with torch.no_grad():
        logits = mask_favouring(ids)
    assert (logits.argmax(-1) == mask_favouring.mask_id).all()
    assert (logits.softmax(-1)[..., mask_favouring.mask_id] > 0.99).all()


@pytest.mark.parametrize("temperature", [0.0, 0.7])
@pytest.mark.parametrize("name", ALL)
def test_mask_is_never_drawn_and_every_loop_ends(mask_favouring, name, temperature):
    kwargs = {"rho": 0.5} if name == "boe" else {}
    prompt = mask_favouring.tokenizer("Question: 1+1?\nAnswer:")["input_ids"]
    schedule = Schedule(16, 8, 8)
    out = build_sampler(name, temperature=temperature, **kwargs).generate(mask_favouring, [prompt], schedule, seed=1)
    assert mask_favouring.mask_id not in out.tokens[0].tolist()
    most = schedule.steps * 3 if name == "lookum" else schedule.gen_length  # LookUM: 1 + k forwards a step
    assert 1 <= out.accounting[0].nfe <= most


class DrawsMask:
    """The old draw, over the whole vocabulary: the mask id can be drawn."""

    def draw(self, model, logits, state):
        return sample_tokens(logits, self.temperature, state.generator)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_an_adaptive_loop_that_stops_progressing_fails_in_one_sentence(mask_favouring, name):
    stuck = type("Stuck", (DrawsMask, SAMPLERS.get(name)), {})()
    prompt = mask_favouring.tokenizer("Hi")["input_ids"]
    with pytest.raises(SamplerStalled) as err:
        stuck.generate(mask_favouring, [prompt], Schedule(8, 4, 4))
    message = str(err.value)
    # block_length 4 + 2 steps per block: the 7th forward of block 0 is refused.
    assert message.startswith(f"{name} stalled at step 7 of block 0") and "\n" not in message


# --- ranking precision ---------------------------------------------------------------------

def llada_generate(model, prompt, gen_length, steps, block_length, softmax_in_model_dtype):
    """LLaDA's generate.py (low_confidence, T = 0, no CFG), written out for one prompt: the
    softmax of the model's logits as they come (bf16 here) or in float32, then torch.topk."""
    x = torch.tensor([prompt + [model.mask_id] * gen_length])
    steps_per_block = steps // (gen_length // block_length)
    for block in range(gen_length // block_length):
        start, end = len(prompt) + block * block_length, len(prompt) + (block + 1) * block_length
        n_masked = int((x[0, start:end] == model.mask_id).sum())
        counts = [n_masked // steps_per_block + (1 if s < n_masked % steps_per_block else 0)
                  for s in range(steps_per_block)]
        for k in counts:
            mask_index = x == model.mask_id
            with torch.no_grad():
                logits = model(x)
            x0 = logits.argmax(-1)
            p = (logits if softmax_in_model_dtype else logits.float()).softmax(-1)
            x0_p = p.gather(-1, x0[..., None]).squeeze(-1)
            x0_p[:, end:] = float("-inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, float("-inf"))
            x[0, confidence[0].topk(k).indices] = x0[0, confidence[0].topk(k).indices]
    return x[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def bf16_tiny():
    return build_tiny("llama", seed=0, dtype="bfloat16")


def test_rank_dtype_model_reproduces_the_reference_bf16_ranking(bf16_tiny):
    """On a bf16 model the reference's confidences tie constantly (ties go to topk); our
    default float32 ranking is the reference given float32 logits."""
    texts = ["Question: 2+2?\nAnswer:", "Hi", "The cat sat on"]
    differs = 0
    for text in texts:
        prompt = bf16_tiny.tokenizer(text)["input_ids"]
        args = (bf16_tiny, prompt, 16, 8, 8)
        in_bf16, in_float32 = llada_generate(*args, True), llada_generate(*args, False)
        differs += in_bf16 != in_float32
        schedule = Schedule(16, 8, 8)
        model_rank = build_sampler("confidence", rank_dtype="model").generate(bf16_tiny, [prompt], schedule)
        float_rank = build_sampler("confidence").generate(bf16_tiny, [prompt], schedule)
        assert model_rank.tokens[0].tolist() == in_bf16
        assert float_rank.tokens[0].tolist() == in_float32
        assert model_rank.accounting[0].nfe == float_rank.accounting[0].nfe == 8
    assert differs >= 1  # the setting matters: same NFE, different ids


@pytest.mark.parametrize("name", CONFIDENCE_FAMILY)
def test_rank_dtype_applies_to_every_confidence_sampler(bf16_tiny, name):
    logits = torch.randn(1, 4, bf16_tiny.vocab_size).bfloat16()
    default = build_sampler(name)
    assert default.confidence_logits(bf16_tiny, logits).dtype == default.rank_precision
    assert default.rank_precision in (torch.float32, torch.float64)
    assert build_sampler(name, rank_dtype="model").confidence_logits(bf16_tiny, logits).dtype == torch.bfloat16
    kwargs = {"rho": 0.5} if name == "boe" else {}
    prompt = bf16_tiny.tokenizer("Hi")["input_ids"]
    out = build_sampler(name, rank_dtype="model", **kwargs).generate(bf16_tiny, [prompt], Schedule(8, 4, 4))
    assert bf16_tiny.mask_id not in out.tokens[0].tolist()


def test_unknown_rank_dtype_is_a_config_error():
    with pytest.raises(ConfigError, match="rank_dtype must be one of float32, model"):
        build_sampler("confidence", rank_dtype="bfloat16")


# --- ties ------------------------------------------------------------------------------------

def test_ties_go_as_torch_topk_and_padding_does_not_move_them():
    scores = torch.tensor([[float("-inf"), 0.5, 0.5, 0.5, 0.5, 0.5, 0.2, float("-inf")]])
    allowed = scores.isfinite()
    for k in range(1, 6):
        chosen = top_per_row(scores, allowed, torch.tensor([k]))
        assert chosen[0].nonzero().flatten().tolist() == sorted(scores[0].topk(k).indices.tolist())
    # The same row behind 3 padding slots, in a batch: the same choice, shifted.
    padded = torch.cat([torch.full((1, 3), float("-inf")), scores], dim=1)
    batch = torch.cat([padded, padded.roll(1)])
    for k in range(1, 6):
        alone = top_per_row(scores, allowed, torch.tensor([k]))[0]
        together = top_per_row(batch, batch.isfinite(), torch.tensor([k, k]), starts=torch.tensor([3, 0]))
        assert torch.equal(together[0, 3:], alone)


def test_allowed_positions_scored_minus_infinity_still_fill_the_budget():
    scores = torch.tensor([[0.3] + [float("-inf")] * 9 + [0.1]])
    allowed = torch.zeros_like(scores, dtype=torch.bool)
    allowed[0, [0, 5, 6, 9, 10]] = True
    scores[0, 0] = float("-inf")  # allowed, but scored -inf
    for k in range(1, 6):
        chosen = top_per_row(scores, allowed, torch.tensor([k]))[0]
        assert int(chosen.sum()) == k and not (chosen & ~allowed[0]).any() and chosen[10]


# --- KLASS with steps < gen_length -------------------------------------------------------------

def test_klass_with_fewer_steps_never_overwrites_or_writes_ahead():
    """Blocks of 6, 3 steps each: the schedule's counts are [2, 2, 2]. Forward 1 commits 2 by
    confidence (first KL infinite); forward 2 finds 3 positions ready and commits them all;
    forward 3 has 1 masked position (not ready) but the schedule asks for 2. The reference's
    topk(k=2) then also picks a -inf position, an already decoded one or one in the next
    block, and writes its argmax there. Ours commits the one masked position only."""

    def script(ids, call):
        rows = []
        for canvas in ids:
            # A decoded position's argmax moves to token 0: an overwrite would show.
            gen = [peaked(0.99, 0) if canvas[1 + i] != MASK else dist for i, dist in enumerate(
                [peaked(0.99, 1), peaked(0.98, 2), peaked(0.97, 3), peaked(0.96, 4), peaked(0.95, 1),
                 peaked(0.5, 2)] + [peaked(0.99, 3)] * 6)]
            rows.append(table(gen).tolist())
        return torch.tensor(rows, dtype=torch.float64)

    model = ScriptedDenoiser(script)
    out = build_sampler("klass", kl_history_length=1).generate(model, [[0]], Schedule(12, 6, 6))
    seen = [filled(c) for c in model.canvases]
    assert seen[:4] == [set(), {1, 2}, {1, 2, 3, 4, 5}, {1, 2, 3, 4, 5, 6}]
    # Every token keeps the value it was committed with, and block 2 is untouched until it starts.
    for before, after in zip(model.canvases, model.canvases[1:]):
        assert all(after[i] == t for i, t in enumerate(before) if t != MASK)
    assert all(c[7:] == [MASK] * 6 for c in model.canvases[:4])
    assert out.tokens[0].tolist()[:6] == [1, 2, 3, 4, 1, 2]
    assert MASK not in out.tokens[0].tolist()
