"""The shared sampler protocol, checked against a straightforward reimplementation."""
import pytest
import torch

from boe_bench.models.tiny import build_tiny
from boe_bench.samplers import SAMPLERS, Schedule, StopCriterion, build_sampler
from boe_bench.samplers.base import probs_and_safe_log_probs, sample_tokens


def reference_greedy_confidence(model, prompt, gen_length, steps, block_length):
    """LLaDA's low-confidence remasking at T=0, written out plainly for one prompt."""
    x = prompt + [model.mask_id] * gen_length
    steps_per_block = steps // (gen_length // block_length)
    for block_start in range(len(prompt), len(x), block_length):
        block = range(block_start, block_start + block_length)
        n_masked = sum(x[i] == model.mask_id for i in block)
        plan = [n_masked // steps_per_block + (1 if s < n_masked % steps_per_block else 0)
                for s in range(steps_per_block)]
        for k in plan:
            with torch.no_grad():
                logits = model(torch.tensor([x]))[0].float()
            probs = logits.softmax(-1)
            scored = []
            for i in block:
                if x[i] == model.mask_id:
                    token = int(probs[i].argmax())
                    scored.append((float(probs[i, token]), i, token))
            for _, i, token in sorted(scored, key=lambda s: -s[0])[:k]:
                x[i] = token
    return x[len(prompt):]


@pytest.mark.parametrize("gen_length, steps, block_length", [(16, 8, 8), (12, 12, 4), (10, 4, 10)])
def test_greedy_confidence_matches_reference(tiny_llada, gen_length, steps, block_length):
    prompt = tiny_llada.tokenizer("Question: 2+2?\nAnswer:")["input_ids"]
    out = build_sampler("confidence").generate(tiny_llada, [prompt], Schedule(gen_length, steps, block_length))
    assert out.tokens[0].tolist() == reference_greedy_confidence(tiny_llada, prompt, gen_length, steps, block_length)
    assert out.accounting[0].nfe == steps
    assert out.accounting[0].cost_fwd_equiv == steps


@pytest.mark.parametrize("name", ["confidence", "margin", "entropy", "random"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_left_padded_batch_decodes_like_single_prompts(name, arch):
    # float64: masked positions of a random model have near-equal scores, and float32
    # rounding differences between padded and unpadded attention could swap their order.
    model = build_tiny(arch, n_kv_heads=2, dtype="float64")
    prompts = [model.tokenizer(t)["input_ids"] for t in ["a much longer prompt here", "short"]]
    schedule = Schedule(16, 8, 8)
    sampler = build_sampler(name)
    batch = sampler.generate(model, prompts, schedule, seed=3)
    if name == "random":  # one generator per batch: the draws depend on the batch shape
        assert (batch.tokens != model.mask_id).all()
        return
    for row, prompt in enumerate(prompts):
        alone = sampler.generate(model, [prompt], schedule, seed=3)
        assert torch.equal(batch.tokens[row], alone.tokens[0])


def test_every_position_filled_once_and_blocks_in_order(tiny_llada):
    """Positions beyond the current block are never written before it is complete."""
    prompt = tiny_llada.tokenizer("hi")["input_ids"]
    sampler = build_sampler("random")
    seen = []
    original_commit = type(sampler).step

    def recording_step(self, model, state, window, budget):
        before = state.x.clone()
        original_commit(self, model, state, window, budget)
        changed = (state.x != before)[0].nonzero().flatten().tolist()
        assert all(window[i] for i in changed)
        assert len(changed) == int(budget[0])
        seen.extend(changed)

    type(sampler).step = recording_step
    try:
        sampler.generate(tiny_llada, [prompt], Schedule(12, 6, 4))
    finally:
        type(sampler).step = original_commit
    assert sorted(seen) == list(range(len(prompt), len(prompt) + 12))


def test_gumbel_sampling_is_temperature_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_tokens(logits, 1.0, generator) for _ in range(20000)]).flatten()
    freq = torch.bincount(draws, minlength=3).double() / draws.numel()
    assert torch.allclose(freq, logits.double().softmax(-1)[0], atol=0.015)
    assert sample_tokens(logits, 0.0).item() == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("forbidden", [[], [0], [9], [3], [3, 4, 9], [0, 5, 9], list(range(10))])
def test_drawing_skips_forbidden_ids_as_argmax_over_minus_inf_would(dtype, forbidden):
    # Ties everywhere (logits in {0, 1, 2}), a forbidden id often the maximum, NaN rows: the
    # draw must give the very index of argmax over the logits with -inf written at the
    # forbidden ids (first maximal index; NaN counts as the maximum), at T = 0 and T > 0.
    generator = torch.Generator().manual_seed(len(forbidden))
    logits = torch.randint(0, 3, (4, 50, 10), generator=generator).to(dtype)
    logits[0, 0, 2] = logits[1, 3, 9] = logits[2, 7, 0] = float("nan")
    logits[3, :, 9] = 5.0  # the largest logit, forbidden in some cases
    before, written = logits.clone(), logits.clone()
    written[..., forbidden] = float("-inf")
    assert torch.equal(sample_tokens(logits, 0.0, forbidden=forbidden), written.argmax(-1))
    uniform = torch.rand(logits.shape, dtype=torch.float64, generator=generator)
    gumbel = -torch.log(-torch.log(uniform))
    expected = (written.double() + 0.7 * gumbel).argmax(-1)
    assert torch.equal(sample_tokens(logits, 0.7, uniform=uniform, forbidden=forbidden), expected)
    torch.testing.assert_close(logits, before, rtol=0, atol=0, equal_nan=True)  # the caller's logits untouched


def test_safe_log_probs_zero_every_non_finite_entry():
    log_probs = torch.randn(3, 7).log_softmax(-1)
    log_probs[0, 1] = log_probs[1, 6] = float("-inf")
    log_probs[2, 3] = float("nan")
    finite = log_probs.isfinite()
    p, safe = probs_and_safe_log_probs(log_probs)
    assert torch.equal(safe, torch.where(finite, log_probs, torch.zeros(())))
    assert torch.equal(p, torch.where(finite, log_probs.exp(), torch.zeros(())))


def test_margin_and_entropy_rank_by_their_definitions():
    logits = torch.log(torch.tensor([[[0.5, 0.49, 0.01], [0.6, 0.2, 0.2], [0.34, 0.33, 0.33]]]))
    tokens = logits.argmax(-1)
    margin = SAMPLERS.build("margin").score(logits, tokens, None)[0]
    entropy = SAMPLERS.build("entropy").score(logits, tokens, None)[0]
    confidence = SAMPLERS.build("confidence").score(logits, tokens, None)[0]
    assert margin.argmax() == 1 and confidence.argmax() == 1
    assert torch.allclose(margin, torch.tensor([0.01, 0.4, 0.01]), atol=1e-6)
    probs = logits.softmax(-1)[0]
    assert torch.allclose(entropy, (probs * probs.log()).sum(-1))
    assert entropy.argmin() == 2


def test_early_stop_keeps_the_answer_and_saves_forwards(tiny_llada):
    tok = tiny_llada.tokenizer
    prompt = tok("Q: what?\nA:")["input_ids"]
    schedule = Schedule(24, 24, 24)
    # Stop on the first character the model happens to write early.
    full = build_sampler("confidence", stop_early=False).generate(tiny_llada, [prompt], schedule)
    first_char = tok.decode(full.tokens[0].tolist()[:1], skip_special_tokens=True) or "a"
    stop = StopCriterion(tok, [first_char], tiny_llada.eos_ids)
    early = build_sampler("confidence").generate(tiny_llada, [prompt], schedule, stop=stop)
    late = build_sampler("confidence", stop_early=False).generate(tiny_llada, [prompt], schedule, stop=stop)
    assert early.texts == late.texts
    assert early.accounting[0].nfe <= late.accounting[0].nfe == 24


def test_eos_suppression_and_eos_confidence(tiny_llada):
    prompt = tiny_llada.tokenizer("x")["input_ids"]
    eos = list(tiny_llada.eos_ids)
    # Make EOS the model's favourite token everywhere by boosting its output row.
    with torch.no_grad():
        saved = tiny_llada.hf.lm_head.weight[eos].clone()
        tiny_llada.hf.lm_head.weight[eos[0]] = tiny_llada.hf.lm_head.weight[eos[0]] * 0 + 5.0
    try:
        schedule = Schedule(8, 8, 8)
        plain = build_sampler("confidence", stop_early=False).generate(tiny_llada, [prompt], schedule)
        suppressed = build_sampler("confidence", suppress_eos=True).generate(tiny_llada, [prompt], schedule)
        assert (plain.tokens == eos[0]).any()
        assert not any(t in eos for t in suppressed.tokens[0].tolist())
    finally:
        with torch.no_grad():
            tiny_llada.hf.lm_head.weight[eos] = saved


@pytest.mark.parametrize("name", ["confidence", "margin", "entropy"])
@pytest.mark.parametrize("options", [{}, {"temperature": 0.7, "eos_confidence_zero": True}])
def test_block_only_scores_choose_as_whole_canvas_scores(name, options):
    # A per-position score is computed at the block's columns only (Sampler.step); the choice
    # must be the one the whole canvas's scores make, over several blocks and a padded batch.
    model = build_tiny("llama", n_kv_heads=2, dtype="float64")
    prompts = [model.tokenizer(t)["input_ids"] for t in ["a much longer prompt here", "short"]]
    schedule = Schedule(16, 8, 4)
    block_only = build_sampler(name, **options)
    widths = []
    score = block_only.score
    block_only.score = lambda logits, tokens, state: (widths.append(logits.shape[1]), score(logits, tokens, state))[1]
    canvas = build_sampler(name, **options)
    canvas.score_per_position = False
    ours, theirs = block_only.generate(model, prompts, schedule, seed=5), canvas.generate(model, prompts, schedule, seed=5)
    assert set(widths) == {4}  # the block's columns, not the canvas
    assert torch.equal(ours.tokens, theirs.tokens)


def test_scores_that_read_positions_or_draws_keep_the_whole_canvas():
    assert build_sampler("confidence").score_per_position
    assert not build_sampler("random").score_per_position  # one draw per canvas position
    assert not SAMPLERS.get("pc_sampler").score_per_position  # distance from the block start
