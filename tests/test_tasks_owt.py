"""OpenWebText protocol (ReMDM): reference blocks, unigram entropy, generative perplexity
and MAUVE, on tiny stand-ins (char tokenizer, random float64 GPT-2, precomputed features)."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from boe_bench.errors import ConfigError
from boe_bench.scoring.text_metrics import (generative_perplexity, last_token_features, load_scorer_lm,
                                            unigram_entropy)
from boe_bench.tasks import build_task
from boe_bench.tasks.owt import remdm_reference_order, wrap_blocks

FIX = Path(__file__).resolve().parent / "fixtures"
TINY = dict(data_files=str(FIX / "owt_stand_in_texts.jsonl"), n_samples=8, block_tokens=64, text_tokenizer="tiny",
            mauve_featurizer="tiny-gpt2", ppl_model="tiny-gpt2", max_text_length=64, scorer_device="cpu")


def test_unigram_entropy_in_nats():
    assert unigram_entropy([5, 5, 5, 5]) == 0.0
    assert unigram_entropy([1, 2, 3, 4]) == pytest.approx(math.log(4))
    assert unigram_entropy([1, 1, 2, 2]) == pytest.approx(math.log(2))


def test_wrap_blocks_frame_and_drop_remainder():
    docs = [[10, 11, 12], [13, 14]]  # stream with EOS=2 after each: 10 11 12 2 13 14 2
    assert wrap_blocks(docs, block_tokens=5, bos=1, eos=2) == [[1, 10, 11, 12, 2], [1, 2, 13, 14, 2]]
    assert wrap_blocks(docs, block_tokens=9, bos=1, eos=2) == [[1, 10, 11, 12, 2, 13, 14, 2, 2]]
    assert wrap_blocks(docs, block_tokens=10, bos=1, eos=2) == []  # 7 tokens, a body needs 8


def test_wrap_blocks_restart_at_each_document_group(monkeypatch):
    import boe_bench.tasks.owt as owt

    monkeypatch.setattr(owt, "GROUP_DOCS", 1)  # ReMDM: 1000 documents per datasets.map batch
    assert wrap_blocks([[10, 11, 12], [13, 14]], block_tokens=4, bos=1, eos=2) == [[1, 10, 11, 2], [1, 12, 2, 2],
                                                                                  [1, 13, 14, 2]]


def test_reference_order_matches_a_reshuffled_dataloader():
    loader = torch.utils.data.DataLoader(list(range(37)), batch_size=1, shuffle=True,
                                         generator=torch.Generator().manual_seed(1))
    drawn = [int(next(iter(loader))[0]) for _ in range(12)]
    assert remdm_reference_order(37, 12, seed=1) == drawn


def manual_gen_ppl(texts, model, tokenizer):
    """Per text, unpadded: NLL of every non-EOS target and of the first EOS of the row,
    where a row without EOS that was padded scores its first pad (an EOS) too."""
    eos = tokenizer.eos_token_id
    rows = [tokenizer(t)["input_ids"] for t in texts]
    longest = max(len(r) for r in rows)
    total, count = 0.0, 0
    for row in rows:
        padded = row + [eos] if len(row) < longest else row  # the only pad that can count
        ids = torch.tensor([padded])
        logits = model(ids[:, : len(row)]).logits[0].detach().double()
        logprobs = F.log_softmax(logits, -1)
        seen_eos = False
        for position in range(1, len(padded)):
            token = padded[position]
            counted = token != eos or not seen_eos and eos not in padded[:position]
            seen_eos = seen_eos or token == eos
            if counted:
                total -= float(logprobs[position - 1, token])
                count += 1
    return math.exp(total / count)


def test_generative_perplexity_matches_remdm_masking():
    model, tokenizer = load_scorer_lm("tiny-gpt2")
    texts = ["the cat sat on the mat<|eos|>and more<|eos|>tail", "short one", "a longer text with no end marker"]
    assert generative_perplexity(texts, model, tokenizer, max_length=64, batch_size=2) == \
        pytest.approx(manual_gen_ppl(texts, model, tokenizer), rel=1e-9)
    repeated = generative_perplexity(["ab" * 20], model, tokenizer)
    assert math.isfinite(repeated) and repeated > 1.0


def test_mauve_on_precomputed_features():
    pytest.importorskip("mauve", reason="MAUVE needs the optional mauve-text package (boe_bench[mauve])")
    from boe_bench.scoring.text_metrics import mauve_score

    generator = torch.Generator().manual_seed(0)
    human = torch.randn(40, 6, generator=generator, dtype=torch.float64)
    same = human + 1e-4 * torch.randn(40, 6, generator=generator, dtype=torch.float64)
    far = torch.randn(40, 6, generator=generator, dtype=torch.float64) + 4.0
    assert mauve_score(human, same, num_buckets=4) > 0.95
    assert mauve_score(human, far, num_buckets=4) < 0.1


def test_features_are_last_token_hidden_states():
    model, tokenizer = load_scorer_lm("tiny-gpt2")
    features = last_token_features(["abc", "", "abcd"], model, tokenizer, max_length=3)
    assert features.shape == (2, model.config.n_embd)   # the empty text is dropped
    # Truncation to 3 tokens makes "abcd" the same input as "abc".
    assert torch.allclose(features[0], features[1])


def test_docs_and_scores_on_stand_in_texts():
    task = build_task("owt", **TINY)
    docs = task.docs()
    assert len(docs) == 8 and all(d["prefix"] == "" and d["reference"].startswith("<|bos|>") for d in docs)
    assert task.score(docs[0], "aaaa")["entropy"] == 0.0
    records = [{"id": d["id"], "answer": task.score(d, d["reference"])["answer"], "metrics": task.score(d, d["reference"])}
               for d in docs]
    metrics = task.aggregate(records)
    assert set(metrics) >= {"entropy", "gen_ppl"} and metrics["gen_ppl"] > 1.0
    prefixed = build_task("owt", **TINY, mode="prefix", prefix_tokens=10).docs()[0]
    assert prefixed["reference"].startswith(prefixed["prefix"]) and len(prefixed["prefix"]) == len("<|bos|>") + 9


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="mode must be one of"):
        build_task("owt", mode="conditional")
    with pytest.raises(ConfigError, match="prefix_tokens"):
        build_task("owt", mode="prefix", prefix_tokens=0)


@pytest.mark.parametrize("model,sampler", [("tiny", "confidence"), ("tiny_mdlm", "remdm")])
def test_runs_end_to_end_on_tiny(model, sampler, tmp_path):
    from hydra import compose, initialize_config_dir

    from boe_bench.runner import run

    stand_ins = [f"task.{key}={value}" for key, value in TINY.items()]
    with initialize_config_dir(config_dir=str(FIX.parents[1] / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"model={model}", f"sampler={sampler}", "task=owt", "limit=4", "gen_length=32", "steps=16", "block_length=32", "progress=false",
            f"out_dir={tmp_path}", *stand_ins])
    summary = run(cfg)
    assert summary["n"] == 4 and summary["task"]["mode"] == "unconditional"
    assert summary["metrics"]["gen_ppl"] > 1.0 and summary["metrics"]["entropy"] >= 0.0
    if "mauve" in summary["metrics"]:  # present when mauve-text is installed
        assert 0.0 < summary["score"] <= 1.0
