"""Loading released checkpoints into stock transformers classes, without remote code.

Weights are read shard by shard from safetensors, renamed, and assigned into a model built
on the meta device (no random initialisation of 8B parameters); rotary tables, which are
not in checkpoints, are then rebuilt on the target device.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from boe_bench.errors import ConfigError


def resolve_checkpoint(path: str) -> Path:
    """A local directory as given, else a hub id fetched into (or found in) the HF cache."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    if local.is_absolute() or path.startswith("."):
        raise ConfigError(f"model path {path!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as err:  # offline, unknown repo, gated repo... one sentence for all
        raise ConfigError(
            f"cannot load model {path!r}: not in the local HF cache and the hub is unreachable "
            f"({type(err).__name__}); download it first or pass model.path=/local/dir"
        ) from err


def read_config(directory: Path) -> dict:
    config_file = directory / "config.json"
    if not config_file.exists():
        raise ConfigError(f"model directory {str(directory)!r} has no config.json")
    return json.loads(config_file.read_text())


def iter_safetensors(directory: Path):
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"model directory {str(directory)!r} has no .safetensors weights")
    for file in files:
        yield from load_file(str(file)).items()


def load_weights(hf_model, directory: Path, rename: Callable[[str], str], device: str, dtype: torch.dtype):
    """Assign renamed checkpoint tensors into ``hf_model`` (built on meta); every parameter
    must be covered exactly once, or the checkpoint is rejected with the keys at fault."""
    expected = set(hf_model.state_dict())
    loaded: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in iter_safetensors(directory):
        name = rename(key)
        if name not in expected:
            unexpected.append(key)
            continue
        loaded[name] = tensor.to(device=device, dtype=dtype)
    missing = sorted(expected - set(loaded))
    if missing or unexpected:
        raise ConfigError(
            f"checkpoint {str(directory)!r} does not match the model: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    hf_model.load_state_dict(loaded, assign=True, strict=True)
    with torch.device(device):
        hf_model.model.rotary_emb = type(hf_model.model.rotary_emb)(hf_model.config)
    return hf_model.eval()


def default_device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(dtype: str | None, device: str) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as err:
        raise ConfigError(f"cannot load the tokenizer in {str(directory)!r}: {err}") from err
