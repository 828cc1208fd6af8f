"""enable / disable / enabled: attach attention transition to a loaded model and remove it.

All state is one :class:`~.state.TransitionState` object, ``model._attn_transition`` (see
:mod:`.state`). ``enable`` registers two hooks on the decoder and keeps their handles in the
state: a forward pre-hook that plans each call (:mod:`.calls`) and a forward hook that ends
it (its scratch buffer is let go, also when the forward raised). ``disable`` removes both by
their handles and every reference to the state, and switches the model back to the attention
implementation it had, so its logits are bitwise those of the untouched model.

``enabled`` is per context, not model-wide: the settings of an open block apply to the calls of
the thread (or asyncio task) that opened it, and to nobody else's (see :mod:`.state`). On a
model that was not enabled, the first block installs the patch with the model's own setting off
(calls outside every block see the stock model) and the last block to exit removes it. Opening,
closing, ``enable`` and ``disable`` hold one lock, so the count of open blocks and the patch
agree across threads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
import weakref
from typing import Any, Iterator, Optional, Union

import torch

from attn_transition.budget import DEFAULT_MAX_CHUNK_MIB, ChunkSetting
from attn_transition.config import TransitionConfig
from attn_transition.errors import NotACausalLMError, UnsupportedModelError, UsageError
from attn_transition.families import schedule_layout
from attn_transition.keywords import LENGTH_KWARG, SWITCH_KWARG

from .attention import register
from .calls import CallGeometry, read_call
from .compat import allow_continuous_batching, allow_generate_switch, refuse_continuous_batching
from .families import family_for
from .registration import BASE_IMPLEMENTATIONS
from .state import STATE_ATTR, Options, TransitionState

__all__ = ["TransitionState", "Options", "enable", "disable", "enabled", "is_enabled", "get_state", "STATE_ATTR",
           "DEFAULT_MAX_CHUNK_MIB"]

logger = logging.getLogger("attn_transition")

# Held by enable, disable and the opening and closing of ``enabled`` blocks (any model): the patch
# is installed or removed, and the blocks open on it counted, as one step.
_LOCK = threading.RLock()
# Open ``enabled`` blocks per installed state, over all threads and tasks (a copied model's
# state starts with none).
_OPEN_SCOPES: "weakref.WeakKeyDictionary[TransitionState, int]" = weakref.WeakKeyDictionary()


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


def _installed(model: Any) -> Optional[TransitionState]:
    """The model's state while it still runs the library's attention function, else None."""
    state = get_state(model)
    return state if state is not None and _config_implementation(model) == state.implementation else None


def is_enabled(model: Any) -> bool:
    """True when a call made here and now would run the transition's patch: ``model`` carries a
    state, still runs the library's attention function (an implementation changed by hand with
    ``set_attn_implementation`` reads as not enabled), and either ``enable`` was called or this
    thread / task is inside an ``enabled`` block on it (another thread's block does not count)."""
    state = _installed(model)
    return state is not None and state.settings() is not None


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


_STOCK_CALL = CallGeometry(None, 0, 0, 0, ())


@torch.compiler.disable
def _before_decoder(module: torch.nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook of the decoder: plan this call once for all its layers (this thread's).

    The call keeps the settings in effect as it begins (its scope's, else the model's own) until
    it ends, whatever other threads or tasks enable, disable, open or close meanwhile. Where they
    are none (the patch is installed only for other contexts' ``enabled`` blocks) the call is
    the stock model's: the library's keywords are dropped unread, as a stock model ignores them.
    """
    state = getattr(module, STATE_ATTR, None)
    if state is None:
        return None
    if state.pin_options() is None:
        kwargs.pop(SWITCH_KWARG, None)
        kwargs.pop(LENGTH_KWARG, None)
        state.begin_call(_STOCK_CALL)
    else:
        state.begin_call(read_call(state, args, kwargs))
    return args, kwargs


@torch.compiler.disable
def _after_decoder(module: torch.nn.Module, args: tuple, output: Any) -> None:
    """Forward hook of the decoder (also when it raised): the call ends, its buffer is let go."""
    state = getattr(module, STATE_ATTR, None)
    if state is not None:
        state.end_call()
        state.unpin_options()


def _attach(model: Any, state: TransitionState) -> None:
    decoder = _decoder(model)
    object.__setattr__(model, STATE_ATTR, state)
    object.__setattr__(decoder, STATE_ATTR, state)
    for module in decoder.modules():
        if hasattr(module, "layer_idx"):
            object.__setattr__(module, STATE_ATTR, state)
    state.hooks = [decoder.register_forward_pre_hook(_before_decoder, with_kwargs=True),
                   decoder.register_forward_hook(_after_decoder, always_call=True)]
    refuse_continuous_batching(model)             # it packs requests into one row: refused while installed


def _detach(model: Any) -> None:
    state = get_state(model)
    if state is not None:
        for handle in state.hooks:
            handle.remove()
        state.hooks = []
    for module in model.modules():
        module.__dict__.pop(STATE_ATTR, None)
    model.__dict__.pop(STATE_ATTR, None)
    allow_continuous_batching(model)


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
        config: :class:`ClassicConfig` (default), :class:`SRAConfig`, any schedule registered with
            :func:`attn_transition.register_schedule`, or a config string (``"classic:alpha=1"``,
            ``"sra"``, ``"<registered name>:field=value"``).
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
    not supported. Inside or beside open ``enabled`` blocks, ``enable`` sets the model's own
    settings (what calls outside every block run with, also after the blocks exit); the
    blocks keep theirs.
    """
    options = _options(config, active=active, full_matrix=full_matrix, max_chunk_mib=max_chunk_mib)
    with _LOCK:
        _enable(model, options)
    return model


def _options(config: Union[TransitionConfig, str, None], **settings: Any) -> Options:
    from attn_transition.config import ClassicConfig

    return Options(ClassicConfig() if config is None else config, **settings)


def _enable(model: Any, options: Options, *, model_enabled: bool = True) -> TransitionState:
    """Install the patch with ``options`` as the model's own settings, or replace them if it is
    installed; ``model_enabled`` False (a block's install) only where it is not. The state."""
    _check_model(model)
    _decoder(model)                               # a model whose layers cannot be found: before any change
    num_layers, schedule_index = schedule_layout(model.config)
    register()
    allow_generate_switch()

    state = get_state(model)
    if state is not None and not _implementation_changed(model, state):
        if model_enabled:
            logger.info("attn_transition: model already enabled; replacing %r with %r", state.options.config,
                        options.config)
            state.replace_options(options)
            state.model_enabled = True
        return state
    if state is not None:                         # stale: start again from the implementation set by hand
        _detach(model)

    previous = _config_implementation(model) or "eager"
    base = previous if previous in BASE_IMPLEMENTATIONS else "sdpa"
    if base != previous and not previous.startswith("attn_transition_"):
        warnings.warn(f"attn_transition: the model uses {previous!r}; while enabled, rows the schedule does "
                      f"not edit go through 'sdpa' instead ({previous!r} comes back on disable)", stacklevel=3)
    state = TransitionState(options=options, num_layers=num_layers, schedule_index=schedule_index,
                            previous_implementation=previous, base_implementation=base,
                            model_enabled=model_enabled)
    model.set_attn_implementation(state.implementation)
    _attach(model, state)
    return state


def _remove(model: Any, state: TransitionState) -> None:
    changed = _implementation_changed(model, state)
    _detach(model)
    if not changed:
        model.set_attn_implementation(state.previous_implementation)


def disable(model: Any) -> Any:
    """Remove attention transition from ``model`` and restore its attention implementation.

    A model that was never enabled is left as it is (with a warning). If the implementation
    was changed by hand while enabled, that choice is kept (with a warning).

    While ``enabled`` blocks are open on the model: inside one (this thread or task) ``disable``
    is a :class:`UsageError` (the block asked for the patch until it exits); from elsewhere the
    model's own setting goes off at once (calls outside every block run stock) and the patch is
    removed when the last block exits.
    """
    with _LOCK:
        state = get_state(model)
        if state is None:
            warnings.warn("attn_transition.disable: this model was not enabled; nothing to undo", stacklevel=2)
            return model
        if not state.model_enabled and not _OPEN_SCOPES.get(state):
            _remove(model, state)                 # a copy of a model taken inside a block: no block holds it
            return model
        if state.scope() is not None:
            raise UsageError("attn_transition.disable was called inside an open `with at.enabled(model, ...)` "
                             "block on this model; disable after the block, or switch one call off with "
                             f"{SWITCH_KWARG}=False")
        if _OPEN_SCOPES.get(state):
            if not state.model_enabled:
                warnings.warn("attn_transition.disable: this model was not enabled (only `at.enabled` blocks "
                              "in other threads or tasks hold the patch, until they exit); nothing to undo",
                              stacklevel=2)
            logger.info("attn_transition: disable deferred until %d open at.enabled block(s) exit",
                        _OPEN_SCOPES[state])
            state.model_enabled = False
            return model
        _remove(model, state)
    return model


def _open_scope(model: Any, options: Options) -> TransitionState:
    """Count one more open block on ``model``, installing the patch (own setting off) if needed."""
    with _LOCK:
        state = _installed(model)
        if state is None:                         # not enabled, or changed by hand: as if never enabled
            state = _enable(model, Options(options.config, active=False), model_enabled=False)
        _OPEN_SCOPES[state] = _OPEN_SCOPES.get(state, 0) + 1
        return state


def _close_scope(model: Any, state: TransitionState) -> None:
    """One block fewer; the last one removes a patch that ``enable`` did not ask for."""
    with _LOCK:
        left = _OPEN_SCOPES.get(state, 1) - 1
        if left > 0:
            _OPEN_SCOPES[state] = left
            return
        _OPEN_SCOPES.pop(state, None)
        if not state.model_enabled and get_state(model) is state:
            _remove(model, state)


@contextlib.contextmanager
def enabled(model: Any, config: Union[TransitionConfig, str, None] = None, *, full_matrix: bool = False,
            active: bool = True, max_chunk_mib: ChunkSetting = DEFAULT_MAX_CHUNK_MIB) -> Iterator[Any]:
    """Context manager: the transition with these settings for the calls of this thread or
    asyncio task inside the block (arguments as in :func:`enable`); yields the model.

    Per context, not model-wide: calls of other threads and tasks see what they saw before
    (the model's own setting from ``enable``, or the stock model), and the model's own
    setting is the same after the block as before it. Blocks nest (the innermost wins) and
    end in ``finally``, also when the block raised. A thread started inside the block does
    not inherit it (``threading.Thread`` copies no context; ``contextvars.copy_context().run``
    does); an asyncio task created inside it does (tasks copy the context when they are
    created), until the block exits. A call keeps the settings it began with until it ends.
    """
    options = _options(config, active=active, full_matrix=full_matrix, max_chunk_mib=max_chunk_mib)
    state = _open_scope(model, options)
    try:
        scope, token = state.enter_scope(options)
    except BaseException:
        _close_scope(model, state)
        raise
    try:
        yield model
    finally:
        try:
            state.exit_scope(scope, token)
        finally:
            _close_scope(model, state)
