"""The model arguments of the lm-evaluation-harness model ``attn-transition`` that are this
project's own (``transition=``), read without lm_eval: the command (:mod:`.harness`) and the
model (:mod:`.harness_model`) both use them.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Optional

import attn_transition as at
from attn_transition.config import ClassicConfig, SRAConfig, TransitionConfig
from attn_transition.errors import ConfigError

__all__ = ["MODEL_NAME", "parse_transition", "stray_config_items"]

MODEL_NAME = "attn-transition"

# Fields of the configs: a model_arg with one of these names is a piece of a transition value
# that lm_eval's comma splitting cut off.
_CONFIG_FIELDS = frozenset(f.name for cls in (ClassicConfig, SRAConfig) for f in fields(cls))
_STOCK = ("none", "off", "stock", "false")


def parse_transition(value: Any) -> Optional[TransitionConfig]:
    """The config a ``transition=`` model argument names; None means the stock model.

    Accepts a config object, ``True`` (the default classic config), ``None`` / ``False`` /
    ``"none"`` (stock), or a config string whose items are separated by ``,`` or ``;``.
    """
    if isinstance(value, (ClassicConfig, SRAConfig)):
        return value
    if value is None or value is False:
        return None
    if value is True:
        return ClassicConfig()
    if not isinstance(value, str):
        raise ConfigError(f"transition must be a config string like 'classic', 'sra', "
                          f"'classic:alpha=1,beta=0.5' or 'none', got {value!r}")
    text = value.strip()
    if text.lower() in _STOCK:
        return None
    try:
        return at.parse_config(text.replace(";", ","))
    except ConfigError as exc:
        raise ConfigError(f"transition={value!r}: {exc}") from None


def stray_config_items(kwargs: dict) -> list[str]:
    return sorted(k for k in kwargs if k in _CONFIG_FIELDS)
