"""SEDD (absorbing graph, log-linear noise) as a denoiser: the score -> p(x0 | x_t) relation,
time conditioning, live rows, and loading a checkpoint in the hub layout (tiny, random)."""
import json
import math

import pytest
import torch

from boe_bench.errors import ConfigError
from boe_bench.models import MODELS
from boe_bench.models.mdlm import DiTConfig, MDLMDenoiser, randomised
from boe_bench.models.sedd import SEDDDenoiser, build_sedd, build_tiny_sedd, reference_key_names, sedd_key
from boe_bench.samplers.sedd import analytic_probs, unnormalised_p_x0


class RawSEDD(SEDDDenoiser):
    """The same network with the output transform removed: the reference's pre-scaling output l."""

    def subs(self, logits, ids):
        return logits


@pytest.fixture(scope="module")
def sedd64():
    return build_tiny_sedd(dtype="float64", seed=1)


def raw_twin(model):
    raw = RawSEDD(model.cfg, model.tokenizer, model.mask_id, model.eos_ids, model.pad_id)
    raw.load_state_dict(model.state_dict())
    return raw.to(model.dtype).eval()


def canvas(model, batch=2, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, model.vocab_size - 1, (batch, length), generator=g)
    ids[:, 3:9] = model.mask_id
    ids[1, 1] = model.mask_id
    return ids


def log_sigma_bar(t, eps=1e-3):
    return -math.log1p(-(1 - eps) * t)


def test_registered_and_attributes(sedd64):
    assert MODELS.get("sedd") is build_sedd and MODELS.get("tiny_sedd") is build_tiny_sedd
    assert isinstance(sedd64, SEDDDenoiser) and sedd64.time_conditioned and sedd64.unnormalised_p_x0
    with pytest.raises(ConfigError):
        SEDDDenoiser(DiTConfig(vocab_size=10, hidden_dim=8, cond_dim=4, n_blocks=1, n_heads=2))


def test_logits_are_sedds_scores_times_the_absorbing_factor(sedd64):
    """At a masked position: logits = log s_theta + log(e^sigma - 1), where the reference's log
    score is l - log(e^sigma - 1) - log(V - 1) (scale_by_sigma). Decoded positions copy."""
    ids = canvas(sedd64)
    t = 0.6
    time = torch.full((2,), t, dtype=torch.float64)
    logits = sedd64(ids, time=time)
    l = raw_twin(sedd64)(ids, time=time)
    sigma = log_sigma_bar(t)
    log_score = l - math.log(math.expm1(sigma)) - math.log(sedd64.vocab_size - 1)
    masked = ids == sedd64.mask_id
    real = torch.arange(sedd64.vocab_size) != sedd64.mask_id
    expected = log_score + math.log(math.expm1(sigma))
    assert torch.allclose(logits[masked][:, real], expected[masked][:, real], atol=1e-10)
    assert (logits[masked][:, sedd64.mask_id] <= -1e5).all()
    decoded = logits[~masked]
    assert torch.equal(decoded.argmax(-1), ids[~masked]) and (decoded.max(-1).values == 0).all()
    assert torch.equal(decoded.exp().sum(-1), torch.ones(len(decoded), dtype=torch.float64))


def test_softmax_of_the_logits_is_the_normalised_denoiser(sedd64):
    """Same weights, read as MDLM (SUBS log-softmax, time-conditioned): the normalised
    p(x0 | x_t) agrees, and the SEDD logits' logsumexp is the model's mass log Z."""
    ids = canvas(sedd64)
    time = torch.full((2,), 0.5, dtype=torch.float64)
    mdlm = MDLMDenoiser(sedd64.cfg, sedd64.tokenizer, sedd64.mask_id)
    mdlm.load_state_dict(sedd64.state_dict())
    mdlm = mdlm.to(torch.float64).eval()
    sedd_logits, mdlm_logits = sedd64(ids, time=time), mdlm(ids, time=time)
    masked = ids == sedd64.mask_id
    assert torch.allclose(sedd_logits.log_softmax(-1)[masked], mdlm_logits[masked], atol=1e-10)
    log_z = sedd_logits[masked].logsumexp(-1)
    assert not torch.allclose(log_z, torch.zeros_like(log_z), atol=1e-3)  # a random net is not normalised


def test_time_defaults_to_the_masked_fraction_and_matters(sedd64):
    ids = canvas(sedd64)
    fraction = (ids == sedd64.mask_id).double().mean(-1)
    assert torch.allclose(sedd64(ids), sedd64(ids, time=fraction), atol=1e-12)
    assert not torch.allclose(sedd64(ids, time=torch.full((2,), 0.9, dtype=torch.float64)),
                              sedd64(ids, time=torch.full((2,), 0.2, dtype=torch.float64)), atol=1e-3)
    with pytest.raises(ValueError, match="time"):
        sedd64(embeds=sedd64.embed(ids))


def test_live_rows_equal_full_forward(sedd64):
    ids = canvas(sedd64)
    full, state = sedd64.forward_with_state(ids)
    rows = torch.tensor([[3, 5, 8], [1, 4, 7]])
    live = sedd64.live_forward(state, rows, sedd64.embed(ids.gather(1, rows)))
    assert torch.allclose(live, full.gather(1, rows[..., None].expand(-1, -1, full.shape[-1])), atol=1e-10)


def test_analytic_step_on_sedd_matches_the_reference_score_form(sedd64):
    """SEDD's AnalyticPredictor computed from the reference's scores of this network equals
    ``analytic_probs`` on the denoiser's logits (up to clipping a negative MASK entry)."""
    ids = canvas(sedd64)[:1]
    t, s = 0.7, 0.65
    time = torch.full((1,), t, dtype=torch.float64)
    l = raw_twin(sedd64)(ids, time=time)[0]
    sigma_t, sigma_s = log_sigma_bar(t), log_sigma_bar(s)
    dsigma = sigma_t - sigma_s
    score = (l - math.log(math.expm1(sigma_t)) - math.log(sedd64.vocab_size - 1)).exp()
    score[:, sedd64.mask_id] = 1.0  # the reference scatters log score 0 at x_t = MASK
    pos = 4  # a masked position
    stag = score[pos] * math.exp(dsigma)
    stag[sedd64.mask_id] += (1 - math.exp(dsigma)) * score[pos].sum()
    transp = torch.full_like(stag, -math.expm1(-dsigma))
    transp[sedd64.mask_id] = 1.0
    reference = (stag * transp).clamp(min=0)
    ours = analytic_probs(unnormalised_p_x0(sedd64(ids, time=time), ids, sedd64.mask_id), ids, sedd64.mask_id, t, s)
    assert torch.allclose(ours[0, pos], reference, rtol=1e-9, atol=1e-12)


# -- the hub layout ----------------------------------------------------------------------------


def hub_tokenizer(directory):
    """A GPT-2-like tokenizer without a mask token (the loader appends it as the last id)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate("abcdefghijklmnop ")}
    vocab["<|endoftext|>"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.save_pretrained(str(directory))
    return len(vocab)


def sedd_hub_config(tokens, cfg, graph="absorb", wrapped=False):
    """config.json as SEDD's PyTorchModelHubMixin saved its Hydra config."""
    raw = {"ngpus": 8, "tokens": tokens, "graph": {"type": graph, "file": "data", "report_all": False},
           "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20},
           "model": {"name": "small", "type": "ddit", "hidden_size": cfg.hidden_dim, "cond_dim": cfg.cond_dim,
                     "length": 1024, "n_blocks": cfg.n_blocks, "n_heads": cfg.n_heads, "scale_by_sigma": True,
                     "dropout": 0.1},
           "sampling": {"predictor": "euler", "steps": 128, "noise_removal": True}}
    return {"config": raw} if wrapped else raw


@pytest.mark.parametrize("wrapped", [False, True])
def test_loads_a_checkpoint_in_the_hub_layout(tmp_path, wrapped):
    from safetensors.torch import save_file

    tokdir = tmp_path / "tok"
    tokens = hub_tokenizer(tokdir)
    cfg = DiTConfig(vocab_size=tokens + 1, hidden_dim=32, cond_dim=16, n_blocks=2, n_heads=4, time_conditioning=True)
    torch.manual_seed(5)
    source = randomised(SEDDDenoiser(cfg, mask_id=tokens), "float32", "cpu")
    params = source.state_dict()
    names = reference_key_names(cfg)
    mapped = {key: sedd_key(key) for key in names}
    assert sorted(v for v in mapped.values() if v) == sorted(params), "the key map must cover every parameter once"
    tensors = {key: params[name].contiguous() for key, name in mapped.items() if name}
    tensors["rotary_emb.inv_freq"] = torch.ones(cfg.head_dim // 2)  # saved by the reference; rebuilt here
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    save_file(tensors, str(checkpoint / "model.safetensors"))
    (checkpoint / "config.json").write_text(json.dumps(sedd_hub_config(tokens, cfg, wrapped=wrapped)))

    loaded = build_sedd(path=str(checkpoint), tokenizer_path=str(tokdir), device="cpu")
    assert loaded.mask_id == tokens == loaded.tokenizer.mask_token_id and loaded.vocab_size == tokens + 1
    ids = torch.randint(0, tokens, (2, 10))
    ids[:, 2:7] = tokens
    assert torch.allclose(loaded(ids), source(ids), atol=1e-6)

    del tensors["blocks.1.attn_out.weight"]
    save_file(tensors, str(checkpoint / "model.safetensors"))
    with pytest.raises(ConfigError, match="missing"):
        build_sedd(path=str(checkpoint), tokenizer_path=str(tokdir), device="cpu")


def test_unsupported_or_missing_checkpoints_are_config_errors(tmp_path):
    cfg = DiTConfig(vocab_size=19, hidden_dim=32, cond_dim=16, n_blocks=1, n_heads=4)
    checkpoint = tmp_path / "uniform"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(sedd_hub_config(18, cfg, graph="uniform")))
    with pytest.raises(ConfigError, match="absorbing"):
        build_sedd(path=str(checkpoint), tokenizer_path=str(tmp_path))
    (checkpoint / "config.json").write_text(json.dumps({"tokens": 18}))
    with pytest.raises(ConfigError, match="lacks the key"):
        build_sedd(path=str(checkpoint), tokenizer_path=str(tmp_path))
    with pytest.raises(ConfigError, match="does not exist"):
        build_sedd(path=str(tmp_path / "missing"))
    with pytest.raises(ConfigError):
        build_sedd(path="louaaron/no-such-sedd-checkpoint")
