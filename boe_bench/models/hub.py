"""Loading released checkpoints into stock transformers classes, without remote code.

Weights are read tensor by tensor from the safetensors shards the checkpoint's index names,
renamed, and assigned into a model built on the meta device (no random initialisation of
8B parameters, and at most one tensor in flight beyond the model itself); rotary tables,
which are not in checkpoints, are then rebuilt on the target device.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import torch

from boe_bench.errors import ConfigError

WEIGHT_INDEX = "model.safetensors.index.json"
# What a loader needs from a hub repository: configs, weights, and tokenizer files (the
# remote *.py files are never fetched, since they are never run).
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]


def resolve_checkpoint(path: str) -> Path:
    """A local directory as given, else a hub id fetched into (or found in) the HF cache."""
    local = Path(str(path)).expanduser()
    if local.is_dir():
        return local
    if local.is_absolute() or str(path).startswith(("." , "~")) or str(path).count("/") > 1:
        raise ConfigError(f"model path {str(path)!r} does not exist; give a local directory or a hub id like 'org/name'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(str(path), allow_patterns=HUB_FILES))
    except (GatedRepoError, RepositoryNotFoundError) as err:
        raise ConfigError(
            f"cannot load model {str(path)!r}: the hub has no such repository or it needs a login "
            f"({type(err).__name__}); check the id or pass model.path=/local/dir"
        ) from err
    except Exception as err:  # offline, no connection, hub down: all look alike from here
        raise ConfigError(
            f"cannot load model {str(path)!r}: not in the local HF cache and the hub is unreachable "
            f"({type(err).__name__}); download it first or pass model.path=/local/dir"
        ) from err


def read_config(directory: Path) -> dict:
    config_file = Path(directory) / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"model directory {str(directory)!r} has no config.json")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{str(config_file)!r} is not valid JSON ({err.msg} at line {err.lineno})") from err


def weight_files(directory: Path) -> list[Path]:
    """The shards the index lists (a snapshot may hold stray files), else every *.safetensors."""
    directory = Path(directory)
    index = directory / WEIGHT_INDEX
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [name for name in names if not (directory / name).is_file()]
        if missing:
            raise ConfigError(f"model directory {str(directory)!r} lacks the weight shards {missing} its index lists")
        return [directory / name for name in names]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"model directory {str(directory)!r} has no .safetensors weights")
    return files


def iter_safetensors(directory: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, CPU tensor) pairs, one tensor read at a time."""
    from safetensors import safe_open

    for file in weight_files(directory):
        with safe_open(str(file), framework="pt", device="cpu") as shard:
            for key in shard.keys():
                yield key, shard.get_tensor(key)


def load_weights(hf_model, directory: Path, rename: Callable[[str], str], device: str, dtype: torch.dtype):
    """Assign renamed checkpoint tensors into ``hf_model`` (built on meta); every parameter
    must be covered exactly once, or the checkpoint is rejected with the keys at fault."""
    expected = hf_model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    unexpected, duplicated, misshapen = [], [], []
    for key, tensor in iter_safetensors(directory):
        name = rename(key)
        if name not in expected:
            unexpected.append(key)
        elif name in loaded:
            duplicated.append(key)
        elif tensor.shape != expected[name].shape:
            misshapen.append(f"{key} {tuple(tensor.shape)} vs {tuple(expected[name].shape)}")
        else:
            loaded[name] = tensor.to(device=device, dtype=dtype)
    missing = sorted(set(expected) - set(loaded))
    if missing or unexpected or duplicated or misshapen:
        problems = {"missing": missing, "unexpected": unexpected, "duplicated": duplicated, "wrong shape": misshapen}
        listed = "; ".join(f"{what} {_few(keys)}" for what, keys in problems.items() if keys)
        raise ConfigError(f"checkpoint {str(directory)!r} does not match the model: {listed}")
    hf_model.load_state_dict(loaded, assign=True, strict=True)
    with torch.device(device):
        hf_model.model.rotary_emb = type(hf_model.model.rotary_emb)(hf_model.config)
    left_on_meta = [name for name, t in [*hf_model.named_parameters(), *hf_model.named_buffers()] if t.is_meta]
    if left_on_meta:  # a transformers version with a new buffer we do not rebuild: fail here, not mid-run
        raise RuntimeError(f"tensors left uninitialised after loading: {left_on_meta}")
    return hf_model.eval()


def _few(keys: list[str]) -> str:
    return str(keys[:5])[:-1] + (f", ... {len(keys) - 5} more]" if len(keys) > 5 else "]")


def default_device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ConfigError(f"unknown dtype {dtype!r}; use bfloat16, float16, float32 or float64")
    return resolved


def load_tokenizer(directory: Path, stock_fallback=None):
    """The checkpoint's tokenizer through a stock transformers class, never its remote code.

    ``trust_remote_code=False`` is explicit: left unset, transformers asks on stdin whether
    to run a repository's tokenizer code, which hangs a batch job. A checkpoint whose
    tokenizer class exists only as remote code (Dream's ``DreamTokenizer``) is loaded with
    ``stock_fallback``, a stock class that reads the same files.
    """
    from transformers import AutoTokenizer, PretrainedConfig

    options = {}
    if _tokenizer_class_named(directory):
        # The tokenizer needs nothing from config.json, whose remote architecture AutoConfig
        # would only warn about.
        options["config"] = PretrainedConfig()
    try:
        return AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False, **options)
    except Exception as err:
        if stock_fallback is None:
            raise ConfigError(f"cannot load the tokenizer in {str(directory)!r} ({type(err).__name__})") from err
        first_error = err
    try:
        return stock_fallback.from_pretrained(str(directory))
    except Exception as err:
        raise ConfigError(
            f"cannot load the tokenizer in {str(directory)!r} with AutoTokenizer ({type(first_error).__name__}) "
            f"or {stock_fallback.__name__} ({type(err).__name__})"
        ) from err


def _tokenizer_class_named(directory: Path) -> bool:
    config_file = Path(directory) / "tokenizer_config.json"
    try:
        return bool(json.loads(config_file.read_text()).get("tokenizer_class"))
    except (OSError, json.JSONDecodeError):
        return False


def end_of_text_ids(config_eos, tokenizer, eot_token: str | None) -> list[int]:
    """EOS ids from config.json (an int or a list), plus the end-of-turn token if the tokenizer has it."""
    ids = [int(i) for i in (config_eos if isinstance(config_eos, (list, tuple)) else [config_eos]) if i is not None]
    if not ids and tokenizer.eos_token_id is not None:
        ids = [tokenizer.eos_token_id]
    eot = tokenizer.convert_tokens_to_ids(eot_token) if eot_token else None
    if isinstance(eot, int) and eot != tokenizer.unk_token_id and eot not in ids:
        ids.append(eot)
    return ids


def load_stock_model(path: str, hf_class, to_config, rename, dtype: str | None, device: str | None):
    """(hf model, raw config.json, directory): a released checkpoint in a stock transformers
    class, built on meta and filled by ``load_weights`` (shared by LLaDA and Dream)."""
    directory = resolve_checkpoint(path)
    raw = read_config(directory)
    config = to_config(raw)
    config._attn_implementation = "sdpa"
    device = default_device(device)
    with torch.device("meta"):
        hf = hf_class(config)
    load_weights(hf, directory, rename, device, default_dtype(dtype, device))
    return hf, raw, directory
