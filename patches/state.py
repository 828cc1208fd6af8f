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
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import torch

from attn_transition.config import ClassicConfig, SRAConfig, TransitionConfig, parse_config
from attn_transition.errors import ConfigError
from attn_transition.kernel import Budget

from .budget import DEFAULT_MAX_CHUNK_MIB, ChunkSetting, chunk_budget
from .calls import CallPlan, ChunkedPrefill
from .registration import implementation_name

__all__ = ["STATE_ATTR", "Options", "TransitionState"]

STATE_ATTR = "_attn_transition"


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
        elif not isinstance(config, (ClassicConfig, SRAConfig)):
            raise ConfigError(f"config must be a ClassicConfig, an SRAConfig or a config string like "
                              f"'classic:alpha=1', got {type(config).__name__}", field="config")
        for name in ("active", "full_matrix"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"enable({name}=...) must be True or False, got {getattr(self, name)!r}",
                                  field=name)
        mib = self.max_chunk_mib
        if mib is not None and mib != "auto" and (isinstance(mib, bool) or not isinstance(mib, (int, float))
                                                  or not math.isfinite(mib) or mib <= 0):
            raise ConfigError(f"enable(max_chunk_mib=...) must be a number in (0, inf) (MiB of edited rows "
                              f"per layer), 'auto' or None for no bound, got {mib!r}", field="max_chunk_mib")


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.calls: list[CallPlan] = []                 # nested calls: innermost last
        self.chunked: Optional[ChunkedPrefill] = None   # a prefill in chunks under way in generate


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
    """

    options: Options
    num_layers: int
    schedule_index: dict[int, int]
    previous_implementation: str
    base_implementation: str
    hooks: list = field(default_factory=list, repr=False)
    _local: _PerThread = field(default_factory=_PerThread, repr=False)
    _warned: set = field(default_factory=set, repr=False)

    # -- settings --------------------------------------------------------------------------
    @property
    def config(self) -> TransitionConfig:
        return self.options.config

    @property
    def active(self) -> bool:
        return self.options.active

    @property
    def full_matrix(self) -> bool:
        return self.options.full_matrix

    @property
    def max_chunk_mib(self) -> ChunkSetting:
        return self.options.max_chunk_mib

    @property
    def implementation(self) -> str:
        return implementation_name(self.base_implementation)

    def replace_options(self, options: Options) -> None:
        self.options = options

    def schedule_layer(self, layer_idx: int) -> int:
        """The layer of the schedule an attention module with ``layer_idx`` is."""
        return self.schedule_index.get(layer_idx, layer_idx)

    def budget(self, device: torch.device, heads: int, keys: int) -> Budget:
        return chunk_budget(self.options.max_chunk_mib, device, heads, keys)

    # -- the call in progress, per thread ----------------------------------------------------
    def begin_call(self, call: CallPlan) -> None:
        self._local.calls.append(call)

    def current_call(self) -> Optional[CallPlan]:
        calls = self._local.calls
        return calls[-1] if calls else None

    def end_call(self) -> None:
        calls = self._local.calls
        if calls:
            calls.pop().scratch.release()

    @property
    def chunked(self) -> Optional[ChunkedPrefill]:
        return self._local.chunked

    @chunked.setter
    def chunked(self, value: Optional[ChunkedPrefill]) -> None:
        self._local.chunked = value

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
        from .registration import register

        self.__dict__.update(values)
        self._local = _PerThread()
        register()
        allow_generate_switch()

    def with_options(self, **changes: Any) -> Options:
        return replace(self.options, **changes)
