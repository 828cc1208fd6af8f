"""The names under which the library's attention functions live in transformers' registries,
the stock function each one falls back on for the rows it leaves alone, and the attribute that
holds an enabled model's state. Names only: the functions registered under them are made and
registered by :mod:`.attention` (:func:`~.attention.register`)."""

from __future__ import annotations

import functools
import sys
from typing import Callable

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

__all__ = ["BASE_IMPLEMENTATIONS", "STATE_ATTR", "implementation_name", "register_attention", "base_function"]

BASE_IMPLEMENTATIONS = ("sdpa", "eager")
# The attribute of an enabled model, its decoder and its attention modules that holds the state.
STATE_ATTR = "_attn_transition"
_PREFIX = "attn_transition_"


def implementation_name(base: str) -> str:
    return _PREFIX + base


def base_function(base: str, module: torch.nn.Module, fallback: Callable) -> Callable:
    """The stock attention of ``base`` for ``module``: transformers' sdpa, or the family's own
    eager function (it knows that family's quirks), else ``fallback``."""
    if base == "sdpa":
        return ALL_ATTENTION_FUNCTIONS["sdpa"]
    eager = _eager_for(type(module))
    return eager if eager is not None else fallback


@functools.lru_cache(maxsize=None)
def _eager_for(module_type: type):
    # "eager" lives in each model's own modeling file.
    return getattr(sys.modules.get(module_type.__module__), "eager_attention_forward", None)


def register_attention(name: str, function: Callable[..., tuple], *, mask: str = "sdpa") -> None:
    """Register ``function`` as the attention implementation ``name`` in transformers, with the
    mask function of the stock implementation ``mask`` ("sdpa": boolean masks, "eager": additive)
    under the same name: without one, transformers would pass ``attention_mask=None``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, {"sdpa": sdpa_mask, "eager": eager_mask}[mask])

