"""The integrations: the engine-neutral core (:mod:`attn_transition`) plugged into two engines.

Installed as ``attn_transition.patches``. Two sibling packages, each importing the core only
(never each other; ``lint-imports`` checks it, see setup.cfg):

- :mod:`.transformers`: the runtime patch for Hugging Face transformers (``enable`` /
  ``disable``; the attention function in transformers' registry);
- :mod:`.vllm`: the vLLM plugin (entry point ``vllm.general_plugins``); loading it imports
  nothing of transformers' modeling code.

The transformers integration's public names stay importable from here (``from
attn_transition.patches import enable``); they load :mod:`.transformers` on first use, so
importing this package (as vLLM does for its plugin) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attn_transition.budget import DEFAULT_MAX_CHUNK_MIB
    from attn_transition.families import FAMILIES

    from .transformers import (STATE_ATTR, Options, TransitionState, disable, enable, enabled, family_for, get_state,
                               is_enabled)

__all__ = ["enable", "disable", "enabled", "is_enabled", "get_state", "TransitionState", "Options", "FAMILIES",
           "family_for", "STATE_ATTR", "DEFAULT_MAX_CHUNK_MIB"]

# name -> the module that defines it (the transformers integration's, or the core's).
_LAZY = {
    **{name: "attn_transition.patches.transformers" for name in (
        "enable", "disable", "enabled", "is_enabled", "get_state", "TransitionState", "Options", "STATE_ATTR",
        "family_for")},
    "FAMILIES": "attn_transition.families",
    "DEFAULT_MAX_CHUNK_MIB": "attn_transition.budget",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'attn_transition.patches' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
