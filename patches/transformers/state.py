"""What ``enable`` attaches to a model, in one place: the settings (:class:`Options`), the
layout of the schedule over the model's layers, and, per thread, the call in progress.

The state object is ``model._attn_transition``; the decoder and every attention module hold a
reference to the same object, so a layer finds it without walking up the model, and a copy of
the model (``copy.deepcopy``, pickle) carries a working copy of it.

Per-call data (the plan of the call, its scratch buffer, a prefill in chunks under way) lives
in a ``threading.local``: each thread that runs the model has its own, so one enabled model
serves several threads as a stock model does. A forward call runs in one thread from the
decoder's pre-hook to its forward hook (``torch.nn.DataParallel`` replicas each run in their
own thread, with their own calls).

The settings a call runs with come from one of three places, first match wins:

1. the options the call itself captured when it began (:meth:`TransitionState.pin_options`, from
   the decoder's pre-hook), so every layer of one call reads the same settings whatever other
   threads or tasks do meanwhile;
2. the innermost open ``at.enabled`` scope of *this* context (a ``contextvars.ContextVar``: each
   thread has its own, each asyncio task a copy of its creator's taken when it was created);
   a scope that has exited is skipped, also by a task that outlived it;
3. the model's own options, set by ``enable`` (:attr:`TransitionState.options`), or, where only
   scopes installed the patch (:attr:`TransitionState.model_enabled` False), none: the call sees
   the stock model.
"""

from __future__ import annotations

import contextvars
import math
import threading
import warnings
import weakref
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping, Optional

import torch

from attn_transition.config import ClassicConfig, TransitionConfig, parse_config
from attn_transition.errors import ConfigError
from attn_transition.budget import DEFAULT_MAX_CHUNK_MIB, ChunkSetting, chunk_budget
from attn_transition.kernel import Budget

from .calls import CallGeometry, ChunkedPrefill
from .registration import STATE_ATTR, implementation_name

__all__ = ["STATE_ATTR", "Options", "Scope", "TransitionState"]


@dataclass(frozen=True)
class Options:
    """``enable``'s settings, validated on construction.

    Attributes:
        config: The schedule applied by calls that do not choose one.
        active: Whether calls without ``attn_transition=`` are edited.
        full_matrix: Compute every row explicitly (slow; for comparison).
        max_chunk_mib: Memory budget of one chunk of edited rows, per layer ("auto", MiB, or
            None: unbounded); see :mod:`.budget`.
    """

    config: TransitionConfig = field(default_factory=ClassicConfig)
    active: bool = True
    full_matrix: bool = False
    max_chunk_mib: ChunkSetting = DEFAULT_MAX_CHUNK_MIB

    def __post_init__(self) -> None:
        config = self.config
        if isinstance(config, str):
            object.__setattr__(self, "config", parse_config(config))
        elif not isinstance(config, TransitionConfig):
            raise ConfigError(f"config must be a ClassicConfig, an SRAConfig or a config string like 'classic:alpha=1' "
                              f"(or the config of a schedule registered with attn_transition.register_schedule), got "
                              f"{type(config).__name__}", field="config")
        for name in ("active", "full_matrix"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"enable({name}=...) must be True or False, got {getattr(self, name)!r}",
                                  field=name)
        mib = self.max_chunk_mib
        if mib is not None and mib != "auto" and (isinstance(mib, bool) or not isinstance(mib, (int, float))
                                                  or not math.isfinite(mib) or mib <= 0):
            raise ConfigError(f"enable(max_chunk_mib=...) must be a number in (0, inf) (MiB of edited rows "
                              f"per layer), 'auto' or None for no bound, got {mib!r}", field="max_chunk_mib")


@dataclass(eq=False)
class Scope:
    """One open ``at.enabled`` block on one model, as the context that opened it sees it.

    Attributes:
        options: The settings calls inside the block run with.
        outer: The scope this one is nested in (same model, same context), or None.
        open: False once the block has exited; readers then skip it (a task created inside the
            block and still running after it sees what the code around the block sees).
    """

    options: Options
    outer: Optional["Scope"]
    open: bool = True


# Per context (each thread; each asyncio task, copied at its creation): state -> innermost scope.
# The mapping is never mutated, only replaced, so a copied context cannot see later changes.
_SCOPES: contextvars.ContextVar[Mapping["TransitionState", Scope]] = contextvars.ContextVar(
    "attn_transition_scopes", default=MappingProxyType({}))


class _Pins(threading.local):
    """Per thread: the options each call in progress captured when it began (innermost last)."""

    def __init__(self) -> None:
        self.stack: list[Optional[Options]] = []

    def __reduce__(self) -> tuple:
        return _Pins, ()                # a copied state starts with no call in progress


class _PerThread(threading.local):
    """This thread's calls under way (innermost last), the prefill in chunks its ``generate``
    has under way (a record tied to that ``generate`` call: :class:`~.calls.ChunkedPrefill`), and
    the ``generate`` call its last planned call was made by (a weak reference to that call's
    generation config, :attr:`~.generation.GenerateCall.marker`)."""

    def __init__(self) -> None:
        self.calls: list[CallGeometry] = []
        self.chunked: Optional[ChunkedPrefill] = None
        self.generate: Optional[weakref.ref] = None


@dataclass(eq=False)
class TransitionState:
    """What ``enable`` attached to a model (``model._attn_transition``).

    Args:
        options: The settings (see :class:`Options`).
        num_layers: Layers the schedule spreads over.
        schedule_index: Attention module ``layer_idx`` -> its layer in the schedule (only
            where the two differ, e.g. hybrid models that count attention layers only).
        previous_implementation: The attention implementation ``disable`` restores.
        base_implementation: ``sdpa`` or ``eager``: what unedited rows run on.
        model_enabled: True when ``enable`` installed the patch (calls outside any scope run
            with :attr:`options`); False while only ``at.enabled`` scopes hold it (calls outside
            every scope see the stock model, and the last scope to exit removes the patch).

    The properties ``config``, ``active``, ``full_matrix`` and ``max_chunk_mib`` are the settings
    in effect here and now (see the module's docstring): a call's own, else this context's
    innermost open scope's, else the model's own; :attr:`options` is always the model's own.
    """

    options: Options
    num_layers: int
    schedule_index: dict[int, int]
    previous_implementation: str
    base_implementation: str
    model_enabled: bool = True
    hooks: list = field(default_factory=list, repr=False)
    _local: _PerThread = field(default_factory=_PerThread, repr=False)
    _warned: set = field(default_factory=set, repr=False)
    _pins: _Pins = field(default_factory=_Pins, repr=False)

    # -- settings --------------------------------------------------------------------------
    def scope(self) -> Optional[Scope]:
        """This context's innermost open ``at.enabled`` scope on this model, or None."""
        scope = _SCOPES.get().get(self)
        while scope is not None and not scope.open:
            scope = scope.outer
        return scope

    def settings(self) -> Optional[Options]:
        """The options a call that begins here and now runs with; None: the stock model (the
        patch is installed only for scopes this context is not in)."""
        scope = self.scope()
        if scope is not None:
            return scope.options
        return self.options if self.model_enabled else None

    def current_options(self) -> Optional[Options]:
        """The options in effect: the innermost call in progress on this thread keeps the ones
        it began with (:meth:`pin_options`), else :meth:`settings`."""
        stack = self._pins.stack
        return stack[-1] if stack else self.settings()

    def pin_options(self) -> Optional[Options]:
        """A call begins on this thread: it keeps :meth:`settings` as they are now until
        :meth:`unpin_options`. Returns them."""
        options = self.settings()
        self._pins.stack.append(options)
        return options

    def unpin_options(self) -> None:
        """The innermost call on this thread has ended (also when it raised)."""
        if self._pins.stack:
            self._pins.stack.pop()

    def enter_scope(self, options: Options) -> tuple[Scope, contextvars.Token]:
        """Open a scope in this context; what :meth:`exit_scope` needs to close it."""
        scopes = _SCOPES.get()
        scope = Scope(options, scopes.get(self))
        return scope, _SCOPES.set(MappingProxyType({**scopes, self: scope}))

    def exit_scope(self, scope: Scope, token: contextvars.Token) -> None:
        """Close ``scope``: skipped by every context from now on, and this context's mapping back
        to what it was before :meth:`enter_scope`."""
        scope.open = False
        try:
            _SCOPES.reset(token)
        except ValueError:          # exited in another context than it was entered in
            scopes = dict(_SCOPES.get())
            if scopes.get(self) is scope:
                if scope.outer is None:
                    del scopes[self]
                else:
                    scopes[self] = scope.outer
                _SCOPES.set(MappingProxyType(scopes))

    def _effective(self) -> Options:
        options = self.current_options()
        return replace(self.options, active=False) if options is None else options

    @property
    def config(self) -> TransitionConfig:
        return self._effective().config

    @property
    def active(self) -> bool:
        return self._effective().active

    @property
    def full_matrix(self) -> bool:
        return self._effective().full_matrix

    @property
    def max_chunk_mib(self) -> ChunkSetting:
        return self._effective().max_chunk_mib

    @property
    def implementation(self) -> str:
        return implementation_name(self.base_implementation)

    def replace_options(self, options: Options) -> None:
        self.options = options

    def schedule_layer(self, layer_idx: int) -> int:
        """The layer of the schedule an attention module with ``layer_idx`` is."""
        return self.schedule_index.get(layer_idx, layer_idx)

    def budget(self, device: torch.device, heads: int, keys: int) -> Budget:
        return chunk_budget(self.max_chunk_mib, device, heads, keys)

    # -- the call in progress, per thread ----------------------------------------------------
    def begin_call(self, call: CallGeometry) -> None:
        self._local.calls.append(call)

    def current_call(self) -> Optional[CallGeometry]:
        calls = self._local.calls
        return calls[-1] if calls else None

    def end_call(self) -> None:
        calls = self._local.calls
        if calls:
            calls.pop().scratch.release()

    @property
    def chunked(self) -> Optional[ChunkedPrefill]:
        """This thread's prefill in chunks under way, or None; a record whose ``generate`` call
        is over (it returned or raised) is dropped here, so none outlives its call."""
        record = self._local.chunked
        if record is not None and not record.alive:
            self._local.chunked = record = None
        return record

    @chunked.setter
    def chunked(self, value: Optional[ChunkedPrefill]) -> None:
        self._local.chunked = value

    @property
    def in_generate(self) -> bool:
        """Whether this thread's last planned call was made by a ``generate`` call still under
        way: a one-token call then is one of its decoding steps, and needs no look at the stack."""
        marker = self._local.generate
        return marker is not None and marker() is not None

    def generate_seen(self, marker: Optional[weakref.ref]) -> None:
        self._local.generate = marker

    def warn_once(self, key: str, message: str, stacklevel: int = 2) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=stacklevel + 1)

    # -- copies ---------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        values = dict(self.__dict__)
        values.pop("_local", None)      # per-thread calls stay with the original
        return values

    def __setstate__(self, values: dict) -> None:
        # An unpickled (or deep-copied) model needs the registry entries in this process too.
        # The hook handles were copied with the model: torch's RemovableHandle pickles the hook
        # dictionary it points into, which the copy shares with the copied decoder.
        from .compat import allow_generate_switch
        from .attention import register

        self.__dict__.update(values)
        self._local = _PerThread()
        register()
        allow_generate_switch()

    def with_options(self, **changes: Any) -> Options:
        return replace(self.options, **changes)
