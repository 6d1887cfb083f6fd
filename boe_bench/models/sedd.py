"""SEDD (Lou et al., 2024, "Discrete Diffusion Modeling by Estimating the Ratios of the Data
Distribution"), absorbing graph, log-linear noise, as a masked-diffusion denoiser.

Network. The released ``louaaron/sedd-small`` / ``sedd-medium`` checkpoints
(``PyTorchModelHubMixin``: config.json holding SEDD's Hydra config, model.safetensors) are
the DiT that MDLM later reused, with identical module names (reference
louaaron/Score-Entropy-Discrete-Diffusion ``model/transformer.py``: ``vocab_embed.embedding``,
``sigma_map.mlp.{0,2}``, ``blocks.N.{norm1, attn_qkv, attn_out, norm2, mlp.{0,2},
adaLN_modulation}``, ``output_layer.{norm_final, linear, adaLN_modulation}``, the buffer
``rotary_emb.inv_freq``; ``model/rotary.py``: half-split rotary on queries and keys only). So
the forward is ``MDLMDenoiser``'s and the key map is ``mdlm_key``; what differs is the time
input and the output. Vocabulary: GPT-2's 50257 tokens plus the absorbing state, id 50257.

Time. SEDD is always time-conditioned: the network sees the total noise
sigma(t) = -log(1 - (1 - 1e-3) t) of ``noise_lib.LogLinearNoise`` (the masked fraction at time
t is 1 - e^-sigma = (1 - 1e-3) t), as MDLM's time-conditioned forward computes it. Samplers pass
t (the canvas's masked fraction); a forward from ids without a time uses that fraction too.

Output. The network's output l at position i is turned into log concrete scores
(``scale_by_sigma``): log s_theta(x_t)_{i,y} = l_y - log(e^sigma - 1) - log(V - 1), V the
vocabulary with the mask, and the entry of the current token set to 0. For the absorbing graph
the true score of a masked position is (SEDD's absorbing-state relation; Ou et al., 2024,
"Your Absorbing Discrete Diffusion Secretly Models the Conditional Distributions of Clean
Data", Thm. 1)

    p_t(x_t with x_t^i -> y) / p_t(x_t) = e^-sigma / (1 - e^-sigma) * p_0(x^i = y | unmasked part of x_t)
                                       = p_0(x^i = y | x_t) / (e^sigma - 1),

so the model's denoiser is  p~(y) = s_theta(x_t)_{i,y} (e^sigma - 1) = exp(l_y - log(V - 1)),
for every real token y. It is an estimate: its mass Z = sum_y p~(y) is close to, not
exactly, one. ``forward`` returns log p~ at masked positions (MASK: -1e6), so the logits'
softmax is the normalised p(x0 | x_t) every sampler uses and their logsumexp is log Z, which
SEDD's own analytic sampler (``samplers/sedd.py``) needs to reproduce the reference exactly.
A decoded position returns its own token with log-probability 0 (every other entry -1e6), as
MDLM's SUBS does: under the absorbing graph a decoded token never changes, and the network's
output there carries no denoiser.

Only ``graph.type: absorb`` with ``noise.type: loglinear`` and ``scale_by_sigma: true`` (the
released checkpoints) is supported. ReMDM's SEDD baseline used a SEDD retrained in MDLM's
codebase (a Lightning checkpoint, keys prefixed ``backbone.``, which ``mdlm_key`` also maps,
once saved as safetensors with a config.json in this layout); the public hub checkpoints are
the ones loaded here by default.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from boe_bench.errors import ConfigError
from boe_bench.models import MODELS
from boe_bench.models.hub import read_config, resolve_checkpoint
from boe_bench.models.mdlm import (DiTConfig, MDLMDenoiser, gpt2_tokenizer, load_dit, mdlm_key,
                                   randomised)

sedd_key = mdlm_key  # the same module names (SEDD's DiT is MDLM's); no ``backbone.`` prefix on the hub


def sedd_config(raw: dict) -> DiTConfig:
    """DiTConfig from a SEDD config.json (the Hydra config the hub mixin saved; some versions
    nest it under ``config``), refusing anything but the absorbing graph with log-linear noise."""
    if "model" not in raw and isinstance(raw.get("config"), dict):
        raw = raw["config"]
    try:
        model, graph, noise, tokens = raw["model"], raw["graph"]["type"], raw["noise"]["type"], raw["tokens"]
        hidden, cond, blocks, heads = model["hidden_size"], model["cond_dim"], model["n_blocks"], model["n_heads"]
    except (KeyError, TypeError) as err:
        raise ConfigError(f"SEDD config.json lacks the key {err.args[0]!r}") from err
    if graph != "absorb" or noise != "loglinear" or not model.get("scale_by_sigma", False):
        raise ConfigError(f"only SEDD's absorbing graph with log-linear noise and scale_by_sigma is supported, "
                          f"got graph {graph!r}, noise {noise!r}, scale_by_sigma {model.get('scale_by_sigma')}")
    return DiTConfig(vocab_size=int(tokens) + 1, hidden_dim=hidden, cond_dim=cond, n_blocks=blocks, n_heads=heads,
                     time_conditioning=True)


class SEDDDenoiser(MDLMDenoiser):
    """SEDD's absorbing-graph score network exposed as a denoiser (see the module docstring)."""

    # exp(logits) at a masked position is the model's unnormalised p(x0 | x_t), whose mass Z
    # SEDD's analytic sampler uses (samplers/sedd.py).
    unnormalised_p_x0 = True

    def __init__(self, cfg: DiTConfig, tokenizer=None, mask_id: int | None = None, eos_ids=(), pad_id: int = 0,
                 name: str = "sedd"):
        if not cfg.time_conditioning:
            raise ConfigError("SEDD is always conditioned on the noise level; build it with time_conditioning=True")
        super().__init__(cfg, tokenizer, mask_id, eos_ids, pad_id, name)

    def subs(self, logits: Tensor, ids: Tensor | None) -> Tensor:
        """log p~ = l - log(V - 1) over real tokens, MASK -1e6; decoded rows copy their input."""
        return self.carry_decoded(self.without_mask(logits - math.log(logits.shape[-1] - 1)), ids)

    def forward_rows(self, embeds, attention_mask=None, time=None, capture=False, ids=None):
        if time is None:
            if ids is None:
                raise ValueError("SEDD needs the diffusion time, or the ids to read the masked fraction from")
            time = masked_fraction(ids, attention_mask, self.mask_id)
        return super().forward_rows(embeds, attention_mask, time, capture, ids)


def masked_fraction(ids: Tensor, attention_mask: Tensor | None, mask_id: int) -> Tensor:
    """[B] the fraction of each row's real (non-padding) positions that are MASK."""
    real = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    return ((ids == mask_id) & real).sum(-1).double() / real.sum(-1).clamp(min=1)


@MODELS.register("sedd")
def build_sedd(path: str = "louaaron/sedd-small", tokenizer_path: str = "gpt2", dtype: str | None = None,
               device: str | None = None) -> SEDDDenoiser:
    """A released SEDD absorbing checkpoint (hub id or a local directory with config.json and
    model.safetensors), run by our own DiT forward; GPT-2's tokenizer with the mask appended."""
    directory = resolve_checkpoint(path)
    cfg = sedd_config(read_config(directory))
    tokenizer = gpt2_tokenizer(tokenizer_path)
    if tokenizer.mask_token_id != cfg.vocab_size - 1:
        raise ConfigError(f"SEDD's absorbing state is the last id {cfg.vocab_size - 1}, but tokenizer "
                          f"{tokenizer_path!r} puts its mask at {tokenizer.mask_token_id}")
    return load_dit(SEDDDenoiser, cfg, directory, tokenizer, tokenizer_path, f"sedd:{path}", dtype, device)


@MODELS.register("tiny_sedd")
def build_tiny_sedd(n_layers: int = 2, d_model: int = 64, n_heads: int = 4, cond_dim: int = 32, seed: int = 0,
                    dtype: str | torch.dtype = "float32", device: str = "cpu") -> SEDDDenoiser:
    """A random SEDD-shaped DiT over the character tokenizer; its outputs mean nothing. (Its
    mask is not the last id, as in the checkpoints; nothing in the forward depends on that.)"""
    from boe_bench.models.tiny import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    cfg = DiTConfig(vocab_size=len(tokenizer), hidden_dim=d_model, cond_dim=cond_dim, n_blocks=n_layers,
                    n_heads=n_heads, time_conditioning=True)
    torch.manual_seed(seed)
    eos = (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|eot|>"))
    model = SEDDDenoiser(cfg, tokenizer, tokenizer.mask_token_id, eos, tokenizer.pad_token_id, name="tiny-sedd")
    return randomised(model, dtype, device)


def reference_key_names(cfg: DiTConfig) -> list[str]:
    """Every tensor name of a hub SEDD checkpoint of this shape (``SEDD.state_dict()``)."""
    names = ["vocab_embed.embedding", "rotary_emb.inv_freq", "output_layer.norm_final.weight",
             "output_layer.linear.weight", "output_layer.linear.bias", "output_layer.adaLN_modulation.weight",
             "output_layer.adaLN_modulation.bias"]
    names += [f"sigma_map.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    for b in range(cfg.n_blocks):
        names += [f"blocks.{b}.{k}" for k in ("norm1.weight", "attn_qkv.weight", "attn_out.weight", "norm2.weight",
                                              "adaLN_modulation.weight", "adaLN_modulation.bias")]
        names += [f"blocks.{b}.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    return names


__all__ = ["SEDDDenoiser", "build_sedd", "build_tiny_sedd", "masked_fraction", "reference_key_names", "sedd_config",
           "sedd_key"]
