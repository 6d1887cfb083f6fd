import os

# Tests must never reach a hub: any accidental download fails loudly instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from boe_bench.models.tiny import build_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llada():
    return build_tiny("llama", seed=0)


@pytest.fixture(scope="session")
def tiny_dream():
    return build_tiny("qwen2", n_kv_heads=2, seed=0)


@pytest.fixture(scope="session")
def tiny_llada64():
    """float64 LLaDA-shaped tiny model, for gradient and finite-difference checks."""
    return build_tiny("llama", seed=0, dtype="float64")
