"""MDLM (Sahoo et al., 2024): a DiT denoiser with the SUBS parameterisation.

The released ``kuleshov-group/mdlm-owt`` checkpoint (OpenWebText, GPT-2 tokens plus one
mask token) ships remote code built on flash-attn; this module is our own forward of the
same architecture, written so that it takes input embeddings and recomputes live rows.

Architecture (reference ``kuleshov-group/mdlm`` models/dit.py, HF hub config.json):
- token embedding [V, d] (no positional table: rotary on queries and keys, base 10000,
  half-split rotation, positions 0..L-1);
- a condition vector c = silu(MLP(sinusoid_256(sigma))) of size ``cond_dim``;
- per block: weight-only LayerNorm (eps 1e-5, no bias), adaLN modulation of six vectors
  from c (shift/scale/gate for attention and MLP), fused bias-free qkv and output
  projections, a GELU(tanh) MLP of width 4d with biases; residuals are added as
  ``h + gate * branch``;
- final layer: LayerNorm, adaLN shift/scale from c, linear head with bias.

SUBS (MDLM section 3.2; ``_subs_parameterization``): the mask logit is pushed to -1e6,
the rest is log-softmax normalised, and a position whose input is not MASK predicts its
own input with probability one (every other entry -1e6). Outputs are therefore
log-probabilities; they serve as logits. -1e6 is the reference's value; exp gives exactly
0 all the same, so samplers see what they would see with -inf.

Time: the ``time`` argument is the diffusion time t in [0, 1] (the masked fraction, as
everywhere in this package). A time-conditioned checkpoint gets MDLM's log-linear noise
level sigma(t) = -log(1 - (1 - 1e-3) t); a checkpoint trained without time conditioning
(mdlm-owt: ``"time_conditioning": false``) always sees sigma = 0, as in the reference's
``_process_sigma``, so its condition vector is a constant and ``time_conditioned`` is False.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from boe_bench.errors import ConfigError
from boe_bench.models import MODELS
from boe_bench.models.base import Denoiser, FrozenState, canvas_masks, frozen_with_padding_slot, padding_bias
from boe_bench.models.hub import default_device, default_dtype, iter_safetensors, read_config, resolve_checkpoint

TIME_FREQUENCIES = 256  # width of the sinusoidal time features (the reference's TimestepEmbedder)
NOISE_EPS = 1e-3  # MDLM's LogLinearNoise default, used only to turn t into sigma
NEVER = -1e6  # the log-probability SUBS gives impossible tokens (exp is exactly 0)


@dataclass(frozen=True)
class DiTConfig:
    vocab_size: int = 50258
    hidden_dim: int = 768
    cond_dim: int = 128
    n_blocks: int = 12
    n_heads: int = 12
    mlp_ratio: int = 4
    time_conditioning: bool = False
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.n_heads

    @classmethod
    def from_hub(cls, cfg: dict) -> "DiTConfig":
        """From the hub's config.json (keys ``hidden_dim``, ``cond_dim``, ``n_blocks``, ...)."""
        try:
            return cls(vocab_size=cfg["vocab_size"], hidden_dim=cfg["hidden_dim"], cond_dim=cfg["cond_dim"],
                       n_blocks=cfg["n_blocks"], n_heads=cfg["n_heads"],
                       time_conditioning=bool(cfg.get("time_conditioning", False)))
        except KeyError as err:
            raise ConfigError(f"MDLM config.json lacks the key {err.args[0]!r}") from err


def layer_norm(x: Tensor, weight: Tensor) -> Tensor:
    """Weight-only LayerNorm, statistics in at least float32 (float64 stays float64)."""
    compute = torch.promote_types(x.dtype, torch.float32)
    return F.layer_norm(x.to(compute), x.shape[-1:]).to(x.dtype) * weight


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_dim
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.attn_norm = nn.Parameter(torch.ones(d))
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.mlp_norm = nn.Parameter(torch.ones(d))
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.mlp_ratio * d, d))
        self.modulation = nn.Linear(cfg.cond_dim, 6 * d)

    def qkv_heads(self, h: Tensor, mods: tuple[Tensor, ...], cos: Tensor, sin: Tensor):
        b, n, d = h.shape
        x = modulate(layer_norm(h, self.attn_norm), mods[0], mods[1])
        q, k, v = (t.view(b, n, self.n_heads, self.head_dim).transpose(1, 2) for t in self.qkv(x).split(d, -1))
        return rotate(q, cos, sin), rotate(k, cos, sin), v

    def finish(self, h: Tensor, mods: tuple[Tensor, ...], q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        h = h + mods[2] * self.attn_out(attn.transpose(1, 2).reshape(h.shape))
        return h + mods[5] * self.mlp(modulate(layer_norm(h, self.mlp_norm), mods[3], mods[4]))


@dataclass
class SubsFrozenState(FrozenState):
    """The frozen state plus the input ids, which SUBS needs to copy unmasked rows."""

    ids: Tensor | None = None


def _repeat_to(t: Tensor | None, batch: int) -> Tensor | None:
    """A per-example tensor repeated copy-major up to ``batch`` rows (leave-one-out copies)."""
    if t is None or t.shape[0] == batch:
        return t
    return t.repeat(batch // t.shape[0], *([1] * (t.dim() - 1)))


class MDLMDenoiser(Denoiser):
    logit_shift = 0

    def __init__(self, cfg: DiTConfig, tokenizer=None, mask_id: int | None = None, eos_ids=(), pad_id: int = 0,
                 name: str = "mdlm"):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.mask_id = cfg.vocab_size - 1 if mask_id is None else int(mask_id)
        self.eos_ids = tuple(int(i) for i in eos_ids)
        self.pad_id = int(pad_id)
        self.vocab_size = cfg.vocab_size
        self.time_conditioned = cfg.time_conditioning
        self.name = name
        d = cfg.hidden_dim
        self.token_embedding = nn.Parameter(torch.empty(cfg.vocab_size, d))
        self.time_mlp = nn.Sequential(nn.Linear(TIME_FREQUENCIES, cfg.cond_dim), nn.SiLU(),
                                      nn.Linear(cfg.cond_dim, cfg.cond_dim))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.n_blocks))
        self.final_norm = nn.Parameter(torch.ones(d))
        self.final_modulation = nn.Linear(cfg.cond_dim, 2 * d)
        self.head = nn.Linear(d, cfg.vocab_size)

    @property
    def embedding_matrix(self) -> Tensor:
        return self.token_embedding

    # -- pieces shared by the full and the live-row forward ---------------------------------

    def condition(self, time: Tensor | None, batch: int) -> Tensor:
        """c [B, cond_dim]: silu(MLP(sinusoid(sigma(t)))), sigma = 0 without time conditioning."""
        ref = self.token_embedding
        sigma = torch.zeros(batch, dtype=ref.dtype, device=ref.device)
        if self.time_conditioned and time is not None:
            t = torch.as_tensor(time, dtype=ref.dtype, device=ref.device).reshape(-1).expand(batch)
            sigma = -torch.log1p(-(1 - NOISE_EPS) * t)
        half = TIME_FREQUENCIES // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=ref.dtype, device=ref.device) / half)
        args = sigma[:, None] * freqs[None]
        return F.silu(self.time_mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1)))

    def rotary(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos, sin [B, 1, n, head_dim] for the given positions (computed in float32 or wider)."""
        compute = torch.promote_types(dtype, torch.float32)
        hd = self.cfg.head_dim
        inv_freq = 1.0 / self.cfg.rope_base ** (torch.arange(0, hd, 2, device=positions.device, dtype=compute) / hd)
        angles = positions.to(compute)[..., None] * inv_freq
        angles = torch.cat([angles, angles], dim=-1)[:, None]
        return angles.cos().to(dtype), angles.sin().to(dtype)

    @staticmethod
    def block_mods(block: DiTBlock, cond: Tensor) -> tuple[Tensor, ...]:
        return block.modulation(cond)[:, None].chunk(6, dim=-1)

    def head_logits(self, h: Tensor, cond: Tensor) -> Tensor:
        shift, scale = self.final_modulation(cond)[:, None].chunk(2, dim=-1)
        return self.head(modulate(layer_norm(h, self.final_norm), shift, scale))

    def subs(self, logits: Tensor, ids: Tensor | None) -> Tensor:
        """Mask logit -1e6, log-softmax; rows whose input is a real token copy it."""
        return self.carry_decoded(self.without_mask(logits).log_softmax(-1), ids)

    def without_mask(self, logits: Tensor) -> Tensor:
        """The mask id's entry set to -1e6 (or the dtype's floor): x0 is never MASK."""
        never = max(NEVER, torch.finfo(logits.dtype).min)
        return logits.masked_fill(torch.arange(logits.shape[-1], device=logits.device) == self.mask_id, never)

    def carry_decoded(self, log_p: Tensor, ids: Tensor | None) -> Tensor:
        """Rows whose input is a real token put all their mass on it (carry-over unmasking)."""
        if ids is None:
            return log_p
        never = max(NEVER, torch.finfo(log_p.dtype).min)
        carried = torch.zeros_like(log_p).masked_fill(~F.one_hot(ids, log_p.shape[-1]).bool(), never)
        return torch.where((ids != self.mask_id)[..., None], carried, log_p)

    # -- the Denoiser interface ------------------------------------------------------------

    def forward_rows(self, embeds, attention_mask=None, time=None, capture=False, ids=None):
        b, n, _ = embeds.shape
        key_mask, positions, bias = canvas_masks(embeds, attention_mask)
        cos, sin = self.rotary(positions, embeds.dtype)
        cond = self.condition(time, b)
        keys, values = [], []
        h = embeds
        for block in self.blocks:
            mods = self.block_mods(block, cond)
            q, k, v = block.qkv_heads(h, mods, cos, sin)
            if capture:
                keys.append(k.detach())
                values.append(v.detach())
            h = block.finish(h, mods, q, k, v, bias)
        logits = self.subs(self.head_logits(h, cond), ids)
        if not capture:
            return logits, None
        time = None if time is None else torch.as_tensor(time, device=embeds.device).reshape(-1).expand(b)
        return logits, SubsFrozenState(keys, values, positions, key_mask, time, ids=ids)

    def live_forward(self, state: FrozenState, live_rows: Tensor, live_embeds: Tensor) -> Tensor:
        batch = live_rows.shape[0]
        length = state.key_mask.shape[1]
        key_mask, keys, values = frozen_with_padding_slot(state, live_rows)
        positions = state.positions.gather(1, live_rows.clamp(max=length - 1))
        bias = padding_bias(key_mask, live_embeds.dtype)
        cos, sin = self.rotary(positions, live_embeds.dtype)
        cond = self.condition(_repeat_to(state.time, batch), batch)
        slot = live_rows[:, None, :, None].expand(-1, self.cfg.n_heads, -1, self.cfg.head_dim)
        h = live_embeds
        for block, k_frozen, v_frozen in zip(self.blocks, keys, values):
            mods = self.block_mods(block, cond)
            q, k, v = block.qkv_heads(h, mods, cos, sin)
            # Written back into their own slots, so the summation order (and the result)
            # is the full forward's.
            h = block.finish(h, mods, q, k_frozen.scatter(2, slot, k), v_frozen.scatter(2, slot, v), bias)
        ids = _repeat_to(getattr(state, "ids", None), batch)
        if ids is not None:
            ids = ids.gather(1, live_rows.clamp(max=ids.shape[1] - 1))
        return self.subs(self.head_logits(h, cond), ids)


# -- checkpoints ----------------------------------------------------------------------------

# Reference (hub ``modeling_mdlm.py`` / Lightning ``backbone.``) names -> ours.
TOP_KEYS = {
    "vocab_embed.embedding": "token_embedding",
    "output_layer.norm_final.weight": "final_norm",
    "output_layer.adaLN_modulation.weight": "final_modulation.weight",
    "output_layer.adaLN_modulation.bias": "final_modulation.bias",
    "output_layer.linear.weight": "head.weight",
    "output_layer.linear.bias": "head.bias",
}
BLOCK_KEYS = {
    "norm1.weight": "attn_norm",
    "attn_qkv.weight": "qkv.weight",
    "attn_out.weight": "attn_out.weight",
    "norm2.weight": "mlp_norm",
    "adaLN_modulation.weight": "modulation.weight",
    "adaLN_modulation.bias": "modulation.bias",
}
BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)")
IGNORED_KEYS = {"rotary_emb.inv_freq"}  # rebuilt from rope_base


def mdlm_key(key: str) -> str | None:
    """Our parameter name for a checkpoint key (None: a buffer we rebuild)."""
    key = key.removeprefix("backbone.")
    if key in IGNORED_KEYS:
        return None
    if key in TOP_KEYS:
        return TOP_KEYS[key]
    if key.startswith("sigma_map.mlp."):
        return "time_mlp." + key.removeprefix("sigma_map.mlp.")
    match = BLOCK_KEY.fullmatch(key)
    if match:
        rest = match.group(2)
        if rest in BLOCK_KEYS:
            return f"blocks.{match.group(1)}.{BLOCK_KEYS[rest]}"
        if rest.startswith("mlp."):
            return f"blocks.{match.group(1)}.{rest}"
    return key  # unknown: reported as unexpected by the loader


def load_mdlm_weights(model: MDLMDenoiser, directory: Path, device: str, dtype: torch.dtype) -> MDLMDenoiser:
    expected = set(model.state_dict())
    loaded, unexpected = {}, []
    for key, tensor in iter_safetensors(directory):
        name = mdlm_key(key)
        if name is None:
            continue
        if name not in expected:
            unexpected.append(key)
            continue
        loaded[name] = tensor.to(device=device, dtype=dtype)
    missing = sorted(expected - set(loaded))
    if missing or unexpected:
        raise ConfigError(f"checkpoint {str(directory)!r} does not match the {type(model).__name__} DiT: "
                          f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(loaded, assign=True, strict=True)
    return model.eval()


def gpt2_tokenizer(path: str):
    """GPT-2's tokenizer with MDLM's mask token appended (id 50257)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # offline, unknown repo... one sentence for all
        raise ConfigError(f"cannot load the tokenizer {path!r} ({type(err).__name__}); download it first or "
                          f"pass model.tokenizer_path=/local/dir") from err
    if tokenizer.mask_token is None:
        tokenizer.add_special_tokens({"mask_token": "[MASK]"})
    return tokenizer


@MODELS.register("mdlm")
def build_mdlm(path: str = "kuleshov-group/mdlm-owt", tokenizer_path: str = "gpt2", dtype: str | None = None,
               device: str | None = None) -> MDLMDenoiser:
    """The released MDLM-OWT checkpoint (hub id or a local directory with config.json and
    model.safetensors); the checkpoint has no tokenizer, so GPT-2's comes from ``tokenizer_path``."""
    directory = resolve_checkpoint(path)
    cfg = DiTConfig.from_hub(read_config(directory))
    return load_dit(MDLMDenoiser, cfg, directory, gpt2_tokenizer(tokenizer_path), tokenizer_path, f"mdlm:{path}",
                    dtype, device)


def load_dit(cls, cfg, directory, tokenizer, tokenizer_path: str, name: str, dtype: str | None,
             device: str | None):
    """A released DiT checkpoint (MDLM's or SEDD's layout) into ``cls``: GPT-2's tokenizer with
    the mask appended must match the checkpoint's vocabulary; float32 unless asked (the
    checkpoints are float32 and small, 170M / 420M parameters)."""
    if len(tokenizer) != cfg.vocab_size:
        raise ConfigError(f"tokenizer {tokenizer_path!r} has {len(tokenizer)} tokens with the mask, "
                          f"the checkpoint {cfg.vocab_size}")
    device = default_device(device)
    with torch.device("meta"):
        model = cls(cfg, tokenizer, tokenizer.mask_token_id, eos_ids=(tokenizer.eos_token_id,),
                    pad_id=tokenizer.eos_token_id, name=name)
    load_mdlm_weights(model, directory, device, default_dtype(dtype or "float32", device))
    model.requires_grad_(False)
    return model


@MODELS.register("tiny_mdlm")
def build_tiny_mdlm(n_layers: int = 2, d_model: int = 64, n_heads: int = 4, cond_dim: int = 32,
                    time_conditioning: bool = False, seed: int = 0, dtype: str | torch.dtype = "float32",
                    device: str = "cpu") -> MDLMDenoiser:
    """A random MDLM-shaped DiT over the character tokenizer; its outputs mean nothing."""
    from boe_bench.models.tiny import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    cfg = DiTConfig(vocab_size=len(tokenizer), hidden_dim=d_model, cond_dim=cond_dim, n_blocks=n_layers,
                    n_heads=n_heads, time_conditioning=time_conditioning)
    torch.manual_seed(seed)
    eos = (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|eot|>"))
    model = MDLMDenoiser(cfg, tokenizer, tokenizer.mask_token_id, eos, tokenizer.pad_token_id, name="tiny-mdlm")
    return randomised(model, dtype, device)


def randomised(model: MDLMDenoiser, dtype: str | torch.dtype, device: str) -> MDLMDenoiser:
    """A tiny DiT with every parameter random (seed the generator first), frozen, in eval mode.

    The reference zero-initialises adaLN and the head (training starts from identity); a
    random model needs every path live, or the time conditioning could not be tested."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm"):
                param.copy_(1 + 0.1 * torch.randn_like(param))
            elif param.dim() == 1:
                param.normal_(0.0, 0.05)
            else:
                param.normal_(0.0, 1.0 / math.sqrt(param.shape[-1]))
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    return model


def reference_key_names(cfg: DiTConfig) -> list[str]:
    """Every tensor name of a hub checkpoint of this shape (for tests and error messages)."""
    names = [f"backbone.{k}" for k in TOP_KEYS] + [f"backbone.sigma_map.mlp.{i}.{p}" for i in (0, 2)
                                                     for p in ("weight", "bias")]
    for b in range(cfg.n_blocks):
        names += [f"backbone.blocks.{b}.{k}" for k in BLOCK_KEYS]
        names += [f"backbone.blocks.{b}.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    return names


__all__ = ["DiTConfig", "MDLMDenoiser", "SubsFrozenState", "build_mdlm", "build_tiny_mdlm", "mdlm_key",
           "reference_key_names"]
