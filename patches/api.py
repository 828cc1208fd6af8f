"""enable / disable / enabled: attach attention transition to a loaded model and remove it.

All state lives in one attribute, ``model._attn_transition`` (a :class:`TransitionState`);
``disable`` removes it and switches the model back to the attention implementation it
had, so its logits are bitwise those of the untouched model.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from attn_transition.config import ClassicConfig, SRAConfig, TransitionConfig
from attn_transition.errors import ConfigError, NotACausalLMError

from . import attention
from .compat import allow_generate_switch
from .families import family_for, num_decoder_layers

__all__ = ["TransitionState", "enable", "disable", "enabled", "is_enabled", "get_state", "STATE_ATTR"]

logger = logging.getLogger("attn_transition")
STATE_ATTR = "_attn_transition"


@dataclass
class TransitionState:
    """What ``enable`` attached to a model (``model._attn_transition``)."""

    config: TransitionConfig
    num_layers: int
    previous_implementation: str
    base_implementation: str
    full_matrix: bool = False


def _check_model(model: Any) -> None:
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise NotACausalLMError(
            f"attn_transition.enable needs a transformers causal LM (e.g. from AutoModelForCausalLM), "
            f"got {type(model).__name__}")
    if not model._can_set_attn_implementation():
        raise NotACausalLMError(
            f"{type(model).__name__} does not route attention through transformers' AttentionInterface, "
            f"so its attention cannot be patched at run time")


def get_state(model: Any) -> Optional[TransitionState]:
    return getattr(model, STATE_ATTR, None)


def is_enabled(model: Any) -> bool:
    return get_state(model) is not None


def enable(model: Any, config: Optional[TransitionConfig] = None, *, full_matrix: bool = False) -> Any:
    """Turn attention transition on for ``model`` and return it.

    Args:
        model: A loaded transformers causal LM of a supported family.
        config: :class:`ClassicConfig` (default) or :class:`SRAConfig`.
        full_matrix: Compute every layer's full attention matrix explicitly, as the
            reference did (slow, O(n^2) memory; for comparison and debugging). By default
            only the rows a schedule edits are computed explicitly.

    Enabling a model that is already enabled replaces its config and keeps the original
    attention implementation to restore. Nothing on the model changes if it is not
    supported.
    """
    config = ClassicConfig() if config is None else config
    if not isinstance(config, (ClassicConfig, SRAConfig)):
        raise ConfigError(f"config must be a ClassicConfig or SRAConfig, got {type(config).__name__}")
    _check_model(model)
    family_for(model.config)                      # raises UnsupportedModelError before any change
    num_layers = num_decoder_layers(model.config)
    attention.register()
    allow_generate_switch()

    state = get_state(model)
    if state is not None:
        logger.info("attn_transition: model already enabled; replacing %r with %r", state.config, config)
        state.config = config
        state.full_matrix = full_matrix
        return model

    previous = model.config._attn_implementation or "eager"
    base = previous if previous in attention.BASE_IMPLEMENTATIONS else "sdpa"
    if base != previous:
        warnings.warn(f"attn_transition: the model uses {previous!r}; while enabled, rows the schedule does "
                      f"not edit go through 'sdpa' instead ({previous!r} comes back on disable)", stacklevel=2)
    state = TransitionState(config=config, num_layers=num_layers, previous_implementation=previous,
                            base_implementation=base, full_matrix=full_matrix)
    model.set_attn_implementation(attention.implementation_name(base))
    object.__setattr__(model, STATE_ATTR, state)
    for module in model.modules():
        if hasattr(module, "layer_idx"):
            attention.STATES[module] = state
    return model


def disable(model: Any) -> Any:
    """Remove attention transition from ``model`` and restore its attention implementation.

    A model that was never enabled is left as it is (with a warning).
    """
    state = get_state(model)
    if state is None:
        warnings.warn("attn_transition.disable: this model was not enabled; nothing to undo", stacklevel=2)
        return model
    for module in model.modules():
        attention.STATES.pop(module, None)
    model.set_attn_implementation(state.previous_implementation)
    object.__delattr__(model, STATE_ATTR)
    return model


@contextlib.contextmanager
def enabled(model: Any, config: Optional[TransitionConfig] = None, *,
            full_matrix: bool = False) -> Iterator[Any]:
    """Context manager: transition on inside the block, the previous state restored after it.

    If the model was already enabled, its previous config comes back on exit.
    """
    before = get_state(model)
    saved = (before.config, before.full_matrix) if before is not None else None
    enable(model, config, full_matrix=full_matrix)
    try:
        yield model
    finally:
        if saved is None:
            disable(model)
        else:
            enable(model, saved[0], full_matrix=saved[1])
