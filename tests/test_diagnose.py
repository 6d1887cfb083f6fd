"""BoE's open knobs (soft-write tau, TIS normalisation, gate exponent), the boe_exact upper
bound, and `python -m boe_bench.diagnose` (issue 15)."""
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from boe_bench.diagnose import diagnose, spearman
from boe_bench.errors import ConfigError
from boe_bench.samplers.base import DecodeState, entropy
from boe_bench.samplers.boe import BoESampler, gated_score, normalise_tis, soft_write_shift
from boe_bench.samplers.boe_exact import BoEExactSampler

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def mid_state(model, gen_length=10, written=(1, 4)):
    """A one-prompt canvas with a few generated tokens already written, the rest masked."""
    prompts = [model.tokenizer("Question: 3+4?\nAnswer:")["input_ids"]]
    state = DecodeState.start(model, prompts, gen_length)
    for k, offset in enumerate(written):
        state.x[0, state.prompt_length + offset] = model.tokenizer.convert_tokens_to_ids(str(k + 7))
    window = torch.zeros(state.seq_len, dtype=torch.bool)
    window[state.prompt_length :] = True
    return state, window


def test_default_knobs_reproduce_the_paper_soft_write_and_score_exactly(tiny_llada):
    """At tau = 1, no normalisation and gate exponent 1, the step's soft write is E^T pi - e_m
    and its score c_i TIS_i - lambda max(h - H_i, 0)^2, bit for bit."""
    state, window = mid_state(tiny_llada)
    sampler = BoESampler(rho=0.5)
    sampler.total_steps = 8
    ranking = sampler.rank(tiny_llada, state, window, torch.tensor([1]), steps_done=2)
    cand = ranking["candidates"]
    probs = sampler.confidence_logits(tiny_llada, ranking["logits"]).softmax(-1)
    expected_delta = torch.zeros_like(ranking["delta"])
    expected_delta[cand] = probs[cand] @ tiny_llada.embedding_matrix - tiny_llada.mask_embedding
    assert torch.equal(ranking["delta"], expected_delta)
    ent, tis = ranking["entropy"], ranking["tis"]
    lam, floor = sampler.anti_collapse_terms(2)
    assert lam > 0 and floor > 0
    expected_score = (1 - ent / math.log(tiny_llada.vocab_size)).clamp(0, 1) * tis - lam * (floor - ent).clamp(min=0) ** 2
    assert torch.equal(ranking["score"], expected_score)
    assert (tis[cand] != 0).any()


def toy_embedding_model():
    """Three tokens embedded as the unit vectors of R^3, the mask (id 3) at the origin."""
    matrix = torch.cat([torch.eye(3), torch.zeros(1, 3)]).double()
    return SimpleNamespace(embedding_matrix=matrix, mask_embedding=matrix[3], dtype=torch.float64)


def test_soft_write_temperature_sharpens_the_renormalised_distribution():
    model = toy_embedding_model()
    probs = torch.tensor([[[0.5, 0.25, 0.25, 0.0]]], dtype=torch.float64)
    where = torch.ones(1, 1, dtype=torch.bool)
    assert torch.allclose(soft_write_shift(model, probs, where)[0, 0], torch.tensor([0.5, 0.25, 0.25]).double())
    # pi^(1/0.5) = (0.25, 0.0625, 0.0625), renormalised (2/3, 1/6, 1/6); the zero stays zero.
    sharp = soft_write_shift(model, probs, where, tau=0.5)[0, 0]
    assert torch.allclose(sharp, torch.tensor([2 / 3, 1 / 6, 1 / 6]).double())
    assert torch.allclose(soft_write_shift(model, probs, where, tau=0.01)[0, 0], torch.tensor([1.0, 0, 0]).double())
    flat = soft_write_shift(model, probs, where, tau=1e6)[0, 0]
    assert torch.allclose(flat, torch.full((3,), 1 / 3).double(), atol=1e-5)


def test_min_max_normalisation_and_gate_exponent_follow_their_formulas():
    tis = torch.tensor([[1.0, 3.0, -1.0, 5.0]])
    cand = torch.tensor([[True, True, True, False]])
    assert torch.equal(normalise_tis(tis, cand, "minmax"), torch.tensor([[0.5, 1.0, 0.0, 0.0]]))
    assert torch.equal(normalise_tis(tis, cand, "none"), tis)
    assert torch.equal(normalise_tis(torch.ones(1, 4), cand, "minmax"), torch.zeros(1, 4))  # a tie
    vocab = 4
    ent = torch.tensor([[0.5, 0.25, 0.0, 1.0]]) * math.log(vocab)  # gates c = 0.5, 0.75, 1, 0
    squared = gated_score(tis, ent, vocab, gate=True, lam=0.0, floor=0.0, gate_exponent=2.0)
    assert torch.allclose(squared, torch.tensor([[0.25 * 1, 0.5625 * 3, -1.0, 0.0]]))
    none = gated_score(tis, ent, vocab, gate=True, lam=0.0, floor=0.0, gate_exponent=0.0)
    assert torch.equal(none, tis)
    both = gated_score(tis, ent, vocab, gate=True, lam=0.0, floor=0.0, normalise="minmax", candidates=cand)
    assert torch.allclose(both, torch.tensor([[0.25, 0.75, 0.0, 0.0]]))
    # A negative TIS gated by high confidence ranks a confident candidate lower; min-max does not.
    assert gated_score(tis, ent, vocab, True, 0.0, 0.0)[0, 2] < gated_score(tis, ent, vocab, True, 0.0, 0.0)[0, 0]


@pytest.mark.parametrize("bad", [{"soft_write_tau": 0}, {"tis_normalise": "zscore"}, {"gate_exponent": -1}])
def test_bad_knobs_are_config_errors(bad):
    with pytest.raises(ConfigError):
        BoESampler(**bad)


@pytest.mark.parametrize("targets", ["rest", "candidates"])
def test_boe_exact_score_is_the_recomputed_drop_of_s_after_the_soft_write(tiny_llada64, targets):
    model = tiny_llada64
    state, window = mid_state(model)
    sampler = BoEExactSampler(rho=0.5, targets=targets, anti_collapse={"enabled": False})
    ranking = sampler.rank(model, state, window, torch.tensor([1]))
    cand = ranking["candidates"][0]
    assert cand.sum() > 1
    with torch.no_grad():
        logits = model(state.x)
        before = entropy(logits)[0]
        probs = logits.softmax(-1)
        for i in cand.nonzero().flatten().tolist():
            embeds = model.embed(state.x).clone()
            embeds[0, i] = probs[0, i] @ model.embedding_matrix  # E^T pi_i replaces e_m
            after = entropy(model(embeds=embeds, attention_mask=state.attention_mask))[0]
            targets_i = (cand if targets == "candidates" else state.masked[0] & ~cand).clone()
            targets_i[i] = False
            drop = float(((before - after) * targets_i).sum())
            assert ranking["tis"][0, i].item() == pytest.approx(drop, rel=1e-6, abs=1e-9)
            gate = 1 - float(entropy(logits[0, i])) / math.log(model.vocab_size)
            assert ranking["score"][0, i].item() == pytest.approx(gate * drop, rel=1e-6, abs=1e-9)
    # Every candidate forward is counted: the step forward plus one per candidate.
    assert state.accounting[0].nfe == 1 + int(cand.sum())
    assert state.accounting[0].live_rows_bwd == 0


def test_boe_exact_refuses_backward_knobs():
    with pytest.raises(ConfigError, match="no backward"):
        BoEExactSampler(rows="all")


def test_spearman_handles_ties_and_constants():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)


def composed(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="diagnose", overrides=list(overrides))


def tiny_overrides(tmp_path, *extra):
    return ["model=tiny", "task=gsm8k", "task.num_fewshot=0", f"task.data_files.test={FIXTURES / 'gsm8k_test.jsonl'}",
            f"task.data_files.train={FIXTURES / 'gsm8k_train.jsonl'}", "limit=2", "batch_size=2", "gen_length=16",
            "steps=8", "block_length=16", "steps_every=2", "progress=false", f"out_dir={tmp_path}", *extra]


@pytest.mark.parametrize("sampler", ["boe", "confidence"])
def test_diagnose_runs_on_the_tiny_model_and_writes_its_files(tmp_path, sampler):
    summary = diagnose(composed(*tiny_overrides(tmp_path, f"sampler={sampler}")))
    for name in ("candidates.csv", "steps.csv", "summary.md", "summary.json", "diagnose.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    frame = pd.read_csv(tmp_path / "candidates.csv")
    steps = pd.read_csv(tmp_path / "steps.csv")
    assert len(frame) > 0
    # 8 steps of 2 tokens in one block, measured at steps 0, 2, 4, 6 while 4 candidates compete for 2 slots.
    assert set(frame["step"]) <= {0, 2, 4, 6} and len(steps) > 0
    assert frame.groupby(["doc", "step"])["chosen"].sum().eq(2).all()
    assert frame[["soft_drop_S", "hard_drop_S", "hard_drop_total"]].notna().all().all()
    # The hard reveal removes the revealed cell's own entropy from the total: total drop >= that entropy minus
    # what the others gained, so it is never below the S drop by more than the cell's entropy.
    assert (frame["hard_drop_total"] - frame["hard_drop_S"] <= frame["entropy"] + 1e-3).all()
    if sampler == "boe":
        assert frame["tis_dense"].notna().all() and frame["in_candidates"].all()
    # Diagnostic forwards are not the decode's: a time-independent model decodes in one NFE per step.
    assert summary["mean_nfe"] == 8
    assert "TIS vs exact soft-write drop" in (tmp_path / "summary.md").read_text()


def test_diagnose_refuses_adaptive_samplers(tmp_path):
    with pytest.raises(ConfigError, match="fixed budget"):
        diagnose(composed(*tiny_overrides(tmp_path, "sampler=klass")))


def test_cli_refusal_is_one_sentence_and_exit_code_2(tmp_path):
    import os
    import subprocess
    import sys

    overrides = [o for o in tiny_overrides(tmp_path, "sampler=remdm")]
    result = subprocess.run([sys.executable, "-m", "boe_bench.diagnose", *overrides], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: diagnose needs") and "Traceback" not in result.stderr
