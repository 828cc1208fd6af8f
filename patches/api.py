"""enable / disable / enabled: attach attention transition to a loaded model and remove it.

All state is one :class:`~.state.TransitionState` object, ``model._attn_transition`` (see
:mod:`.state`). ``enable`` registers two hooks on the decoder and keeps their handles in the
state: a forward pre-hook that plans each call (:mod:`.calls`) and a forward hook that ends
it (its scratch buffer is let go, also when the forward raised). ``disable`` removes both by
their handles and every reference to the state, and switches the model back to the attention
implementation it had, so its logits are bitwise those of the untouched model.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any, Iterator, Optional, Union

import torch

from attn_transition.config import TransitionConfig
from attn_transition.errors import NotACausalLMError, UnsupportedModelError

from .budget import DEFAULT_MAX_CHUNK_MIB, ChunkSetting
from .calls import plan_call
from .compat import allow_generate_switch
from .families import family_for, schedule_layout
from .registration import BASE_IMPLEMENTATIONS, register
from .state import STATE_ATTR, Options, TransitionState

__all__ = ["TransitionState", "Options", "enable", "disable", "enabled", "is_enabled", "get_state", "STATE_ATTR",
           "DEFAULT_MAX_CHUNK_MIB"]

logger = logging.getLogger("attn_transition")


def _check_model(model: Any) -> None:
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel) and callable(getattr(model, "get_base_model", None)):
        raise NotACausalLMError(
            f"attn_transition.enable got a {type(model).__name__} (a PEFT wrapper); enable the model inside it, "
            f"at.enable(peft_model.get_base_model()), or enable the model before wrapping it "
            f"(at.enable(model); get_peft_model(model, ...))")
    if not isinstance(model, PreTrainedModel):
        raise NotACausalLMError(
            f"attn_transition.enable needs a transformers causal LM (e.g. from AutoModelForCausalLM), "
            f"got {type(model).__name__}")
    family_for(model.config)                      # names the type (and why, if refused) before any change
    if not model._can_set_attn_implementation():
        raise NotACausalLMError(
            f"{type(model).__name__} does not route attention through transformers' AttentionInterface, "
            f"so its attention cannot be patched at run time")


def get_state(model: Any) -> Optional[TransitionState]:
    return getattr(model, STATE_ATTR, None)


def _config_implementation(model: Any) -> Optional[str]:
    return getattr(model.config, "_attn_implementation", None)


def is_enabled(model: Any) -> bool:
    """True when ``model`` carries a state *and* still runs the library's attention function
    (an implementation changed by hand with ``set_attn_implementation`` reads as not enabled)."""
    state = get_state(model)
    return state is not None and _config_implementation(model) == state.implementation


def _has_attention(module: torch.nn.Module) -> bool:
    return any(hasattr(m, "layer_idx") for m in module.modules())


def _decoder(model: Any) -> torch.nn.Module:
    """The module that owns the attention layers: ``get_decoder()`` when it holds them (some
    models name their output projection ``decoder``), else the base model, else the model."""
    get = getattr(model, "get_decoder", None)
    try:
        decoder = get() if callable(get) else None
    except (AttributeError, NotImplementedError, ValueError):
        decoder = None
    for candidate in (decoder, getattr(model, "base_model", None), model):
        if isinstance(candidate, torch.nn.Module) and _has_attention(candidate):
            return candidate
    raise UnsupportedModelError(f"{type(model).__name__} has no attention modules with a layer_idx under "
                                f"its decoder, so the schedule cannot address its layers")


@torch.compiler.disable
def _before_decoder(module: torch.nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook of the decoder: plan this call once for all its layers (this thread's)."""
    state = getattr(module, STATE_ATTR, None)
    if state is None:
        return None
    state.begin_call(plan_call(state, args, kwargs))
    return args, kwargs


@torch.compiler.disable
def _after_decoder(module: torch.nn.Module, args: tuple, output: Any) -> None:
    """Forward hook of the decoder (also when it raised): the call ends, its buffer is let go."""
    state = getattr(module, STATE_ATTR, None)
    if state is not None:
        state.end_call()


def _attach(model: Any, state: TransitionState) -> None:
    decoder = _decoder(model)
    object.__setattr__(model, STATE_ATTR, state)
    object.__setattr__(decoder, STATE_ATTR, state)
    for module in decoder.modules():
        if hasattr(module, "layer_idx"):
            object.__setattr__(module, STATE_ATTR, state)
    state.hooks = [decoder.register_forward_pre_hook(_before_decoder, with_kwargs=True),
                   decoder.register_forward_hook(_after_decoder, always_call=True)]


def _detach(model: Any) -> None:
    state = get_state(model)
    if state is not None:
        for handle in state.hooks:
            handle.remove()
        state.hooks = []
    for module in model.modules():
        module.__dict__.pop(STATE_ATTR, None)
    model.__dict__.pop(STATE_ATTR, None)


def _implementation_changed(model: Any, state: TransitionState) -> bool:
    current = _config_implementation(model)
    if current == state.implementation:
        return False
    warnings.warn(f"attn_transition: the attention implementation was changed by hand to {current!r} while "
                  f"enabled; the transition was not running since then", stacklevel=3)
    return True


def enable(model: Any, config: Union[TransitionConfig, str, None] = None, *, full_matrix: bool = False,
           active: bool = True, max_chunk_mib: ChunkSetting = DEFAULT_MAX_CHUNK_MIB) -> Any:
    """Turn attention transition on for ``model`` and return it.

    Args:
        model: A loaded transformers causal LM of a supported family.
        config: :class:`ClassicConfig` (default), :class:`SRAConfig`, or a config string
            (``"classic:alpha=1"``, ``"sra"``).
        full_matrix: Compute every row of every layer explicitly, as the reference did
            (slow; for comparison and debugging). By default only the rows a schedule
            edits are computed explicitly.
        active: If False the patch is installed but calls run the stock attention unless
            they ask for the edit (``attn_transition=True`` or a config, per call).
        max_chunk_mib: Memory budget, in MiB, of one chunk of edited rows in one layer. The
            extra memory per layer stays near this bound at every prompt length (one row
            over all keys is the smallest chunk); None computes each edit in one piece.
            "auto" (default): on the CPU, chunks of 32 query rows but at least 16 MiB and at
            most 64 MiB, so the extra memory is a small share of the stock model's (a few MiB
            more on short prompts, where small chunks cost time); 512 MiB on an accelerator,
            where larger chunks mean fewer kernel launches.

    Enabling a model that is already enabled replaces these settings and keeps the
    original attention implementation to restore. Nothing on the model changes if it is
    not supported.
    """
    from attn_transition.config import ClassicConfig

    options = Options(ClassicConfig() if config is None else config, active=active, full_matrix=full_matrix,
                      max_chunk_mib=max_chunk_mib)
    return _enable(model, options)


def _enable(model: Any, options: Options) -> Any:
    _check_model(model)
    _decoder(model)                               # a model whose layers cannot be found: before any change
    num_layers, schedule_index = schedule_layout(model.config)
    register()
    allow_generate_switch()

    state = get_state(model)
    if state is not None and not _implementation_changed(model, state):
        logger.info("attn_transition: model already enabled; replacing %r with %r", state.config, options.config)
        state.replace_options(options)
        return model
    if state is not None:                         # stale: start again from the implementation set by hand
        _detach(model)

    previous = _config_implementation(model) or "eager"
    base = previous if previous in BASE_IMPLEMENTATIONS else "sdpa"
    if base != previous and not previous.startswith("attn_transition_"):
        warnings.warn(f"attn_transition: the model uses {previous!r}; while enabled, rows the schedule does "
                      f"not edit go through 'sdpa' instead ({previous!r} comes back on disable)", stacklevel=3)
    state = TransitionState(options=options, num_layers=num_layers, schedule_index=schedule_index,
                            previous_implementation=previous, base_implementation=base)
    model.set_attn_implementation(state.implementation)
    _attach(model, state)
    return model


def disable(model: Any) -> Any:
    """Remove attention transition from ``model`` and restore its attention implementation.

    A model that was never enabled is left as it is (with a warning). If the implementation
    was changed by hand while enabled, that choice is kept (with a warning).
    """
    state = get_state(model)
    if state is None:
        warnings.warn("attn_transition.disable: this model was not enabled; nothing to undo", stacklevel=2)
        return model
    changed = _implementation_changed(model, state)
    _detach(model)
    if not changed:
        model.set_attn_implementation(state.previous_implementation)
    return model


@contextlib.contextmanager
def enabled(model: Any, config: Union[TransitionConfig, str, None] = None, *, full_matrix: bool = False,
            active: bool = True, max_chunk_mib: ChunkSetting = DEFAULT_MAX_CHUNK_MIB) -> Iterator[Any]:
    """Context manager: transition on inside the block, the previous state restored after it.

    If the model was already enabled, its previous settings come back on exit.
    """
    before = get_state(model).options if is_enabled(model) else None
    enable(model, config, full_matrix=full_matrix, active=active, max_chunk_mib=max_chunk_mib)
    try:
        yield model
    finally:
        if before is None:
            disable(model)
        else:
            _enable(model, before)
