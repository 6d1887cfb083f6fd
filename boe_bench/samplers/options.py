"""Sampler options, checked from the config alone: no torch, no model, no data.

Each sampler's ``__init__`` calls its check here, and the runner calls the same checks on the
config node (``check_sampler_config``) before it imports torch or reads any data, so a bad
``sampler.rho=1.5`` is refused in well under a second instead of after the model and the data
have loaded. One check per option, in one place: the sampler modules keep no second copy.

A check takes the sampler's keyword options (those it does not know pass through ``**_``) with
the sampler's defaults, and raises ``ConfigError`` with one sentence.
"""
from __future__ import annotations

import os
import shutil
import sys
from typing import Callable

from boe_bench.errors import ConfigError

RANK_DTYPES = ("float32", "model")
BOE_ROWS = ("masked", "candidates", "all")
BOE_DEFAULT_TARGETS = {"masked": "rest", "candidates": "candidates", "all": "rest"}
BOE_NORMALISE = ("none", "minmax")
BOE_EXACT_READING = {"rest": "masked", "candidates": "candidates"}
EB_PROXIES = ("entropy", "confidence", "margin")
REMDM_STRATEGIES = ("mdlm", "cap", "rescale", "conf", "loop")


def common(temperature: float = 0.0, rank_dtype: str = "float32", **_) -> None:
    """Options every ranking sampler (``Sampler``) takes."""
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if rank_dtype not in RANK_DTYPES:
        raise ConfigError(f"rank_dtype must be one of {', '.join(RANK_DTYPES)}, got {rank_dtype!r}")


def cpp_compiler() -> str | None:
    """The path of the C++ compiler inductor calls on the CPU ($CXX, else g++; clang++ on
    macOS), or None where it is not on PATH (``compile_backward`` needs it)."""
    return shutil.which(os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++"))


def boe(rho: float = 0.25, rows: str = "masked", targets: str | None = None, soft_write_tau: float = 1.0,
        tis_normalise: str = "none", gate_exponent: float = 1.0, anti_collapse: dict | None = None,
        compile_backward: bool = False, **_) -> None:
    if not 0 < rho <= 1:
        raise ConfigError(f"boe rho must be in (0, 1], got {rho}")
    if not soft_write_tau > 0:
        raise ConfigError(f"boe soft_write_tau must be > 0, got {soft_write_tau}")
    if tis_normalise not in BOE_NORMALISE:
        raise ConfigError(f"boe tis_normalise must be one of {', '.join(BOE_NORMALISE)}, got {tis_normalise!r}")
    if not gate_exponent >= 0:
        raise ConfigError(f"boe gate_exponent must be >= 0, got {gate_exponent}")
    if rows not in BOE_ROWS:
        raise ConfigError(f"boe rows must be one of {', '.join(BOE_ROWS)}, got {rows!r}")
    targets = targets or BOE_DEFAULT_TARGETS[rows]
    if rows == "candidates" and targets == "rest":
        raise ConfigError(
            "boe rows=candidates with targets outside the candidates gives TIS = 0 everywhere: under "
            "ActiveQueryAttention gradient leaves a target only through its own query (design/boe.md); "
            "use rows=masked, or targets=candidates"
        )
    if (rows, targets) not in {("masked", "rest"), ("all", "rest"), ("candidates", "candidates")}:
        raise ConfigError(f"boe rows={rows} does not support targets={targets!r}")
    anti = dict(anti_collapse or {})
    if anti.get("floor_schedule", "decreasing") not in ("decreasing", "increasing") \
            or anti.get("anneal", "none") not in ("none", "linear"):
        raise ConfigError(f"boe anti_collapse has an unknown floor_schedule or anneal: {anti}")
    if compile_backward and not cpp_compiler():
        raise ConfigError("boe compile_backward needs the C++ compiler torch.compile calls ($CXX, else g++), "
                          "and it is not on PATH; install one or leave compile_backward false")


def boe_exact(targets: str = "rest", chunk: int = 16, **options) -> None:
    if targets not in BOE_EXACT_READING:
        raise ConfigError(f"boe_exact targets must be one of {', '.join(BOE_EXACT_READING)}, got {targets!r}")
    if chunk < 1:
        raise ConfigError(f"boe_exact chunk must be >= 1, got {chunk}")
    for knob in ("rows", "cuda_graphs", "compile_backward"):
        if knob in options:
            raise ConfigError(f"boe_exact runs no backward, so it takes no {knob!r}")
    boe(rows=BOE_EXACT_READING[targets], targets=targets, **options)


def fast_dllm(threshold: float = 0.9, factor: float | None = None, **_) -> None:
    if factor is None and not 0 < threshold <= 1:
        raise ConfigError(f"fast_dllm threshold must be in (0, 1], got {threshold}")
    if factor is not None and factor <= 0:
        raise ConfigError(f"fast_dllm factor must be > 0, got {factor}")


def eb_sampler(gamma: float = 0.01, proxy: str = "entropy", **_) -> None:
    if gamma < 0:
        raise ConfigError(f"eb_sampler gamma must be >= 0, got {gamma}")
    if proxy not in EB_PROXIES:
        raise ConfigError(f"eb_sampler proxy must be one of {EB_PROXIES}, got {proxy!r}")


def klass(kl_history_length: int = 2, **_) -> None:
    if kl_history_length < 1:
        raise ConfigError(f"klass kl_history_length must be >= 1, got {kl_history_length}")


def lookum(pool_size: int = 5, num_paths: int = 2, verifier_temperature: float = 0.1, **_) -> None:
    if pool_size < 1 or num_paths < 1 or verifier_temperature < 0:
        raise ConfigError(f"lookum needs pool_size >= 1, num_paths >= 1, verifier_temperature >= 0; got "
                          f"{pool_size}, {num_paths}, {verifier_temperature}")


def pc_sampler(lam: float = 0.25, alpha: float = 10.0, **_) -> None:
    if lam < 0 or alpha <= 0:
        raise ConfigError(f"pc_sampler needs lam >= 0 and alpha > 0, got lam={lam}, alpha={alpha}")


def remdm(strategy: str = "rescale", eta: float = 0.015, t_on: float = 0.55, t_off: float = 0.05,
          alpha_on: float = 0.9, nucleus_p: float = 0.9, steps: int | None = None, **_) -> None:
    if strategy not in REMDM_STRATEGIES:
        raise ConfigError(f"unknown ReMDM strategy {strategy!r}; use one of {', '.join(REMDM_STRATEGIES)}")
    if not 0 < nucleus_p <= 1:
        raise ConfigError(f"nucleus_p must be in (0, 1], got {nucleus_p}")
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    if strategy == "loop":
        if not 0 < t_off < t_on < 1 or not 0 < alpha_on < 1:
            raise ConfigError(f"loop needs 0 < t_off < t_on < 1 and 0 < alpha_on < 1, got "
                              f"t_off={t_off}, t_on={t_on}, alpha_on={alpha_on}")
        if eta > (1 - alpha_on) / alpha_on:
            raise ConfigError(f"loop needs eta <= (1 - alpha_on)/alpha_on = {(1 - alpha_on) / alpha_on:.4g}, "
                              f"got {eta}")
    if steps is not None and steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")


def dfm(scale: float = 10.0, power: float = 0.25, nucleus_p: float = 0.9, steps: int | None = None, **_) -> None:
    remdm(strategy="mdlm", eta=0.0, nucleus_p=nucleus_p, steps=steps)
    if scale < 0 or power <= 0:
        raise ConfigError(f"the DFM corrector needs scale >= 0 and power > 0, got scale={scale}, power={power}")


_PACKAGE = "boe_bench.samplers"
# A config's ``_target_`` -> the checks its class runs (its own and its base classes'), so the
# runner can check a config without importing the class's module (which imports torch).
CHECKS: dict[str, tuple[Callable[..., None], ...]] = {
    f"{_PACKAGE}.boe.BoESampler": (common, boe),
    f"{_PACKAGE}.boe_exact.BoEExactSampler": (common, boe_exact),
    f"{_PACKAGE}.confidence.ConfidenceSampler": (common,),
    f"{_PACKAGE}.entropy.EntropySampler": (common,),
    f"{_PACKAGE}.margin.MarginSampler": (common,),
    f"{_PACKAGE}.random.RandomSampler": (common,),
    f"{_PACKAGE}.fast_dllm.FastDLLMSampler": (common, fast_dllm),
    f"{_PACKAGE}.eb_sampler.EBSampler": (common, eb_sampler),
    f"{_PACKAGE}.klass.KLASSSampler": (common, klass),
    f"{_PACKAGE}.lookum.LookUMSampler": (common, lookum),
    f"{_PACKAGE}.pc_sampler.PCSampler": (common, pc_sampler),
    f"{_PACKAGE}.remdm.ReMDMSampler": (remdm,),
    f"{_PACKAGE}.dfm.DFMSampler": (dfm,),
}


def check_sampler_config(node) -> None:
    """Run the checks of the sampler a config node (``_target_`` + options) builds. Numbers of
    the wrong type are refused here too (a string ``rho`` would otherwise fail deep in torch)."""
    from omegaconf import OmegaConf

    options = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    target = options.pop("_target_", None)
    checks = CHECKS.get(target, ())
    try:
        for check in checks:
            check(**options)
    except TypeError as err:  # a comparison of a string with a number
        raise ConfigError(f"sampler options of the wrong type ({err}); check the sampler.* overrides") from None
