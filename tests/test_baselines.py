"""Baselines pinned step by step on hand-built logits, then end to end on the tiny model.

The scripted denoiser returns chosen distributions and logs every canvas it is run on, so
a test reads off exactly which positions each forward saw filled and how many forwards ran.
Canvases: one prompt token (position 0), then the generation region; tokens 0..4, MASK = 5.
"""
import json
import math

import pytest
import torch

from boe_bench.errors import ConfigError
from boe_bench.models.base import Denoiser
from boe_bench.samplers import Schedule, StopCriterion, build_sampler
from boe_bench.samplers.eb_sampler import entropy_bounded_order
from boe_bench.samplers.fast_dllm import factor_count, threshold_count
from boe_bench.samplers.lookum import LookUMSampler

VOCAB, MASK = 6, 5


class ScriptedDenoiser(Denoiser):
    """``script(ids [B, L], call) -> probs [B, L, VOCAB]``, or one fixed [L, VOCAB] table."""

    def __init__(self, script):
        super().__init__()
        self.script = script if callable(script) else (lambda ids, call: script.expand(ids.shape[0], -1, -1))
        self.mask_id, self.pad_id, self.eos_ids, self.vocab_size = MASK, 0, (), VOCAB
        self.weight = torch.nn.Parameter(torch.eye(VOCAB), requires_grad=False)
        self.canvases = []

        class Tok:
            def decode(self, ids, skip_special_tokens=True):
                return "".join(str(i) for i in ids)

            def __len__(self):
                return VOCAB

        self.tokenizer = Tok()

    @property
    def calls(self):
        return len(self.canvases)

    @property
    def embedding_matrix(self):
        return self.weight

    def forward_rows(self, embeds, attention_mask=None, time=None, capture=False, ids=None):
        probs = self.script(ids, self.calls).to(torch.float64)
        self.canvases.append(ids[0].tolist())
        return probs.log(), None

    def live_forward(self, state, live_rows, live_embeds):
        raise NotImplementedError


def peaked(top: float, token: int) -> list[float]:
    rest = (1 - top) / 4
    return [top if v == token else (rest if v < MASK else 1e-12) for v in range(VOCAB)]


def flat() -> list[float]:
    return [0.2] * 5 + [1e-12]


def table(rows):
    """[1 + len(rows), VOCAB]: the prompt position, then one distribution per generated position."""
    return torch.tensor([peaked(0.99, 0)] + rows, dtype=torch.float64)


def run(sampler, script, gen_length, steps, block_length):
    model = ScriptedDenoiser(script)
    out = sampler.generate(model, [[0]], Schedule(gen_length, steps, block_length))
    return model, out


def filled(canvas):
    """Generated positions (1-based within the answer) already unmasked in a logged canvas."""
    return {i for i, t in enumerate(canvas) if i > 0 and t != MASK}


# --- Fast-dLLM ---------------------------------------------------------------------------

def test_fast_dllm_threshold_and_factor_rules_by_hand():
    conf = torch.tensor([[0.95, 0.5, 0.91, 0.2]])
    allowed = torch.ones_like(conf, dtype=torch.bool)
    assert threshold_count(conf, allowed, 0.9).tolist() == [2]
    assert threshold_count(conf, allowed, 0.99).tolist() == [1]  # the top-1 always goes
    # Sorted .95 .91 .5 .2 against 1 - f/(n+1), f = 1: n=1 free, .91 >= 2/3, .5 < 3/4 stops.
    assert factor_count(conf, allowed, 1.0).tolist() == [2]
    # Only the last of three fails (.5 < 3/4): the reference commits it too; the fix does not.
    conf3 = torch.tensor([[0.95, 0.91, 0.5]])
    allowed3 = torch.ones_like(conf3, dtype=torch.bool)
    assert factor_count(conf3, allowed3, 1.0).tolist() == [3]
    assert factor_count(conf3, allowed3, 1.0, commits_failed_last=False).tolist() == [2]
    # Nothing allowed: nothing committed, whatever the rule.
    assert factor_count(conf3, torch.zeros_like(allowed3), 1.0).tolist() == [0]


def test_fast_dllm_commits_top1_plus_threshold_each_forward():
    probs = table([peaked(0.95, 1), peaked(0.3, 2), peaked(0.97, 3), peaked(0.5, 4)])
    model, out = run(build_sampler("fast_dllm", threshold=0.9), probs, 4, 4, 4)
    # Forward 1 sees nothing; commits 1 and 3 (>= .9). Forward 2: only the top-1 (.5, pos 4).
    # Forward 3: the last one. The schedule's 4 steps are not used up.
    assert [filled(c) for c in model.canvases] == [set(), {1, 3}, {1, 3, 4}]
    assert out.tokens[0].tolist() == [1, 2, 3, 4] and out.accounting[0].nfe == model.calls == 3


def test_fast_dllm_stays_in_the_current_block():
    probs = table([peaked(0.99, 1), peaked(0.99, 2), peaked(0.99, 3), peaked(0.99, 4)])
    model, out = run(build_sampler("fast_dllm"), probs, 4, 2, 2)
    assert [filled(c) for c in model.canvases] == [set(), {1, 2}]
    assert out.accounting[0].nfe == 2


def test_fast_dllm_factor_rule_in_the_sampler():
    probs = table([peaked(0.95, 1), peaked(0.91, 2), peaked(0.5, 3)])
    model, _ = run(build_sampler("fast_dllm", factor=1.0), probs, 3, 3, 3)
    assert [filled(c) for c in model.canvases] == [set()]  # reference quirk: all three at once
    model, _ = run(build_sampler("fast_dllm", factor=1.0, factor_commits_failed_last=False), probs, 3, 3, 3)
    assert [filled(c) for c in model.canvases] == [set(), {1, 2}]


# --- EB-Sampler --------------------------------------------------------------------------

def test_eb_count_rule_by_hand():
    H = torch.tensor([0.001, 0.004, 0.02, 0.5, 0.003])
    # Low entropy first: .001 .003 .004 .02 .5; sum minus max after each: 0 .001 .004 .008 .028
    order, k = entropy_bounded_order(H, H, 0.01)
    assert order.tolist() == [0, 4, 1, 2, 3] and k == 4
    assert entropy_bounded_order(H, H, 0.0)[1] == 1
    assert entropy_bounded_order(H[2:], H[2:], 100)[1] == 3
    # Another proxy walks another order: .5 first is the max, so .02 .001 .004 fit under .03.
    error = -torch.tensor([0.3, 0.1, 0.8, 0.9, 0.2])
    # walk: .5 (.9) .02 (.8) .001 (.3) .003 (.2) .004 (.1): sum-max 0 .02 .021 .024 .028
    assert entropy_bounded_order(H, error, 0.025)[1] == 4
    assert entropy_bounded_order(H, error, 0.025)[0].tolist() == [3, 2, 0, 4, 1]
    assert entropy_bounded_order(H, error, 0.01)[1] == 1


def test_eb_sampler_commits_certain_positions_together_and_counts_forwards():
    probs = table([peaked(0.9995, 1), peaked(0.999, 2), peaked(0.4, 3), peaked(0.998, 4)])
    model, out = run(build_sampler("eb_sampler", gamma=0.01), probs, 4, 4, 4)
    # Entropies .0050 .0093 1.50 .0172. Forward 1 walks .0050 .0093 .0172 1.50, sum minus
    # max 0 .0050 .0143: two go (1, 2). Forward 2 walks .0172 1.50: 0 .0172: one (4).
    assert [filled(c) for c in model.canvases] == [set(), {1, 2}, {1, 2, 4}]
    assert out.tokens[0].tolist() == [1, 2, 3, 4] and out.accounting[0].nfe == 3
    model, out = run(build_sampler("eb_sampler", gamma=0.02), probs, 4, 4, 4)
    assert [filled(c) for c in model.canvases] == [set(), {1, 2, 4}]  # .0143 <= .02 < 1.51


@pytest.mark.parametrize("proxy, first", [("entropy", 2), ("confidence", 1)])
def test_eb_sampler_proxy_decides_the_order_and_blocks_are_respected(proxy, first):
    # Position 1: top .6, the rest spread (H = 1.23). Position 2: top .55, the rest on one
    # token (H = .69). Confidence ranks 1 first, entropy ranks 2 first; both H exceed gamma.
    two_way = [0.45, 1e-12, 0.55, 1e-12, 1e-12, 1e-12]
    probs = table([peaked(0.6, 1), two_way, peaked(0.999, 3), peaked(0.999, 4)])
    model, out = run(build_sampler("eb_sampler", gamma=0.01, proxy=proxy), probs, 4, 2, 2)
    # Block 1 one token per forward, then block 2 (.0093 + .0093 - max <= .01) in one.
    assert [filled(c) for c in model.canvases] == [set(), {first}, {1, 2}]
    assert out.accounting[0].nfe == 3


def test_eb_sampler_rejects_unknown_proxy():
    with pytest.raises(ConfigError, match="proxy"):
        build_sampler("eb_sampler", proxy="vibes")


# --- PC-Sampler --------------------------------------------------------------------------

def write_table(tmp_path, counts, **extra):
    path = tmp_path / "freq.json"
    path.write_text(json.dumps({"num_token": 1000, "p_baseline_dict": counts, **extra}))
    return str(path)


def test_pc_sampler_scores_by_hand(tmp_path):
    freq = write_table(tmp_path, {"1": 900, "2": 10, "3": 10, "4": 10})
    probs = table([peaked(0.9, 1), peaked(0.9, 2), peaked(0.9, 3), peaked(0.6, 4)])
    sampler = build_sampler("pc_sampler", lam=0.25, alpha=10.0, freq_table=freq)
    seen = []
    original = sampler.score

    def spy(logits, tokens, state):
        scores = original(logits, tokens, state)
        seen.append(scores[0, 1:].clone())
        return scores

    sampler.score = spy
    model, _ = run(sampler, probs, 4, 4, 4)
    pos = torch.arange(4, dtype=torch.float64)
    f = torch.tensor([0.9, 0.01, 0.01, 0.01], dtype=torch.float64)
    p = torch.tensor([0.9, 0.9, 0.9, 0.6], dtype=torch.float64)
    expected = torch.exp(-0.25 * pos) * (-p * torch.log(f + 1e-9)).clamp(max=10.0)
    assert torch.allclose(seen[0], expected)
    # Scores .095 3.23 2.51 1.31: the frequent token at position 1 goes last.
    assert [filled(c) for c in model.canvases] == [set(), {2}, {2, 3}, {2, 3, 4}]


def test_pc_sampler_clips_at_alpha_and_counts_positions_from_the_block_start(tmp_path):
    freq = write_table(tmp_path, {"1": 500})  # unseen tokens: f = 1/1000, -log f = 6.9
    probs = table([peaked(0.9, 1), peaked(0.99, 2), peaked(0.99, 3), peaked(0.95, 4)])
    sampler = build_sampler("pc_sampler", lam=1.0, alpha=2.0, freq_table=freq)
    seen = []
    original = sampler.score
    sampler.score = lambda logits, tokens, state: seen.append(original(logits, tokens, state)) or seen[-1]
    run(sampler, probs, 4, 4, 2)
    # Block 2 (positions 3, 4) starts at pos 0 again; .99 * 6.9 and .95 * 6.9 both clip at 2.
    block2 = seen[2][0, 3:5]
    assert torch.allclose(block2, torch.tensor([2.0, 2.0 * math.exp(-1.0)], dtype=torch.float64))


def test_pc_sampler_refuses_a_table_built_for_another_tokenizer(tmp_path):
    probs = table([peaked(0.9, 1)])
    with pytest.raises(ConfigError, match="tokenizer"):
        run(build_sampler("pc_sampler"), probs, 1, 1, 1)  # the shipped char table (107 tokens)
    freq = write_table(tmp_path, {"1": 5}, tokenizer="x", tokenizer_vocab=VOCAB)
    _, out = run(build_sampler("pc_sampler", freq_table=freq), probs, 1, 1, 1)
    assert out.tokens[0].tolist() == [1]
    with pytest.raises(ConfigError, match="does not exist"):
        run(build_sampler("pc_sampler", freq_table=str(tmp_path / "nope.json")), probs, 1, 1, 1)


# --- KLASS -------------------------------------------------------------------------------

def test_klass_waits_for_a_stable_history_then_unmasks_all_ready():
    probs = table([peaked(0.95, 1), peaked(0.99, 2), peaked(0.92, 3), peaked(0.91, 4)])
    model, out = run(build_sampler("klass", conf_threshold=0.9, kl_threshold=0.01), probs, 4, 4, 4)
    # Forwards 1-2: the KL history still holds "no previous distribution": one token each by
    # confidence (2, then 1). Forward 3: two zero KLs, so 3 and 4 (> .9) go together.
    assert [filled(c) for c in model.canvases] == [set(), {2}, {1, 2}]
    assert out.tokens[0].tolist() == [1, 2, 3, 4] and out.accounting[0].nfe == 3


def test_klass_unstable_positions_wait_and_low_confidence_is_never_ready():
    def script(ids, call):
        # Position 4 flips its favourite token every forward: its KL stays large.
        return table([peaked(0.95, 1), peaked(0.99, 2), peaked(0.92, 3),
                      peaked(0.91, 4 if call % 2 else 3)])[None]

    model, out = run(build_sampler("klass"), script, 4, 4, 4)
    assert [filled(c) for c in model.canvases] == [set(), {2}, {1, 2}, {1, 2, 3}]
    probs = table([peaked(0.95, 1), peaked(0.99, 2), peaked(0.92, 3), peaked(0.5, 4)])
    model, _ = run(build_sampler("klass"), probs, 4, 4, 4)
    assert [filled(c) for c in model.canvases] == [set(), {2}, {1, 2}, {1, 2, 3}]


def test_klass_gates_the_first_steps_of_every_block_but_keeps_the_history():
    # Distinct confidences: exact ties go as torch.topk breaks them (base.top_per_row).
    probs = table([peaked(0.99, 1), peaked(0.98, 2), peaked(0.99, 3), peaked(0.98, 4)])
    model, out = run(build_sampler("klass"), probs, 4, 4, 2)
    # Block 2, step 0: the history is stable but the reference only looks from step H-1 = 1.
    assert [filled(c) for c in model.canvases] == [set(), {1}, {1, 2}, {1, 2, 3}]
    assert out.accounting[0].nfe == 4


def test_klass_finishes_a_block_the_reference_would_leave_masked():
    probs = table([peaked(0.99, 1), peaked(0.98, 2), peaked(0.95, 3), peaked(0.5, 4)])
    model, out = run(build_sampler("klass", kl_history_length=1), probs, 4, 2, 4)
    # Schedule [2, 2]. Forward 1: first KL infinite, top-2 by confidence. Forward 2: only
    # position 3 is ready. The schedule is spent with position 4 masked; a third forward fills it.
    assert [filled(c) for c in model.canvases] == [set(), {1, 2}, {1, 2, 3}]
    assert MASK not in out.tokens[0].tolist() and out.accounting[0].nfe == 3


# --- LookUM ------------------------------------------------------------------------------

def lookahead_script(ids, call):
    """Confidence prefers positions 1 and 2, but only a canvas with 3 and 4 filled makes the
    rest of the answer certain: the verifier must see past confidence."""
    rows = []
    for canvas in ids:
        settled = canvas[3] != MASK and canvas[4] != MASK
        # Unsettled, position 5 is a little more confident than 6 (no exact tie between them).
        fifth = peaked(0.999, 0) if settled else [0.24] + [0.19] * 4 + [1e-12]
        rest = peaked(0.999, 0) if settled else flat()
        rows.append(table([peaked(0.97, 1), peaked(0.96, 2), peaked(0.8, 3), peaked(0.7, 4),
                           fifth, rest])[:, :].tolist())
    return torch.tensor(rows, dtype=torch.float64)


def test_lookum_verifier_picks_the_path_that_settles_the_rest():
    sampler = build_sampler("lookum", pool_size=5, num_paths=10, verifier_temperature=0.0)
    model, out = run(sampler, lookahead_script, 6, 3, 6)
    # Step 1: pool = the 5 most confident masked positions {1..5} (6 is the least confident),
    # and all C(5,2) = 10 sets are looked ahead: 1 + 10 forwards.
    assert model.canvases[0] == [0] + [MASK] * 6
    looked = [sorted(filled(c)) for c in model.canvases[1:11]]
    assert sorted(looked) == [[a, b] for a in range(1, 6) for b in range(a + 1, 6)]
    # Kept: {3, 4}, though confidence prefers 1 and 2. Step 2 reuses that lookahead's forward
    # and looks ahead over the C(4,2) = 6 sets of the other four, each on top of {3, 4}.
    step2 = [filled(c) for c in model.canvases[11:]]
    assert len(step2) == 6 and set.intersection(*step2) == {3, 4}
    # Step 3: a pool of exactly 2 admits one set: no lookahead, and the forward is reused.
    assert model.calls == 1 + 10 + 6 and out.accounting[0].nfe == model.calls
    assert out.tokens[0].tolist() == [1, 2, 3, 4, 0, 0]


def test_lookum_samples_k_paths_and_counts_their_forwards():
    sampler = build_sampler("lookum", pool_size=5, num_paths=2, verifier_temperature=0.0)
    model, out = run(sampler, lookahead_script, 6, 3, 6)
    # Step 1: 1 + 2 forwards; step 2: the kept lookahead is reused, 2 more; step 3: none.
    assert model.calls == 5 and out.accounting[0].nfe == 5
    first, second = filled(model.canvases[1]), filled(model.canvases[2])
    assert len(first) == len(second) == 2 and first != second and first | second <= {1, 2, 3, 4, 5}
    # Step 2's lookaheads start from the kept canvas: one of the two sets, the better one.
    common = filled(model.canvases[3]) & filled(model.canvases[4])
    kept = first if first <= common else second
    assert kept <= common
    if {3, 4} in (first, second):
        assert kept == {3, 4}


def test_lookum_importance_sampling_follows_softmax_of_scores():
    sampler = LookUMSampler(verifier_temperature=0.5)
    scores = torch.tensor([[0.0, 0.5 * math.log(3)]], dtype=torch.float64).expand(20000, 2)
    picks = sampler._choose(scores, torch.rand(scores.shape, dtype=torch.float64,
                                               generator=torch.Generator().manual_seed(0)))
    assert abs(picks.double().mean().item() - 0.75) < 0.015  # softmax([0, ln 3]) = (.25, .75)
    assert sampler._choose(torch.tensor([[0.0, float("-inf")]]), torch.full((1, 2), 0.5)).tolist() == [0]


# --- end to end on the tiny model --------------------------------------------------------

@pytest.mark.parametrize("name, kwargs, schedule", [
    ("eb_sampler", {}, (32, 16, 16)),
    ("eb_sampler", {"proxy": "margin"}, (32, 16, 16)),
    ("fast_dllm", {}, (32, 16, 16)),
    ("fast_dllm", {"factor": 1.0}, (32, 16, 16)),
    ("pc_sampler", {}, (32, 16, 16)),
    ("klass", {"conf_threshold": 0.05, "kl_threshold": 0.5}, (32, 16, 16)),
    ("lookum", {}, (16, 8, 8)),
])
def test_end_to_end_on_tiny_model(tiny_llada, name, kwargs, schedule):
    tok = tiny_llada.tokenizer
    prompts = [tok("Question: 2+3?\nAnswer:")["input_ids"], tok("Hi")["input_ids"]]
    stop = StopCriterion(tok, ["Question:"], tiny_llada.eos_ids)
    out = build_sampler(name, **kwargs).generate(tiny_llada, prompts, Schedule(*schedule), stop=stop)
    gen_length, steps, _ = schedule
    most = steps * 3 if name == "lookum" else gen_length  # LookUM: 1 + k forwards a step at most
    assert len(out.texts) == 2
    for row, acc in enumerate(out.accounting):
        assert 1 <= acc.nfe <= most
        # A row stops early only once its answer is settled; otherwise it is filled completely.
        if not stop.done(out.tokens[row], tiny_llada.mask_id):
            assert tiny_llada.mask_id not in out.tokens[row].tolist()
