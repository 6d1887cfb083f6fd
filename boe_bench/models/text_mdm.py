"""``text_mdm``: our small LLaDA-architecture text model, loaded by the LLaDA loader.

Trained by ``boe_bench/train/text_mdm.py`` on d1's Sudoku and Countdown formats (model card:
``boe_bench/data/text_mdm/README.md``) and shipped in LLaDA's released layout (config.json
with LLaDA's field names, LLaDA's weight names, tokenizer files with a chat template), so it
goes through ``build_llada`` exactly as ``llada_8b_*`` do: the key renaming, the config
checks, the float32 rotary, the live-row path, bf16.
"""
from __future__ import annotations

from importlib import resources

from boe_bench.models import MODELS
from boe_bench.models.llada import build_llada

SHIPPED = "text_mdm"


def shipped_checkpoint() -> str:
    return str(resources.files("boe_bench.data") / SHIPPED)


@MODELS.register("text_mdm")
def build_text_mdm(path: str | None = None, dtype: str | None = None, device: str | None = None):
    """The shipped checkpoint (``path`` null) or another one trained by the same trainer."""
    return build_llada(path or shipped_checkpoint(), dtype=dtype, device=device)
