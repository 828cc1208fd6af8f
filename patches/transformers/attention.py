"""The attention function registered in transformers' ``AttentionInterface``.

One function per *base* implementation (``sdpa`` or ``eager``). When a call edits (its plan
comes from the decoder's pre-hook, :mod:`.calls`, through this thread's state), the base
implementation computes the rows the schedule leaves alone (:mod:`.base_rows`: fused SDPA,
skipping the recomputed rows where that saves work), and the edited rows are recomputed,
edited and written in by the engine-neutral kernel (:func:`attn_transition.kernel.transition_rows`),
one batch row at a time. Calls that edit nothing (decoding steps, stock calls) go straight to
the base implementation.

The function is excluded from ``torch.compile`` graphs (it reads the call's plan, a Python
object, and sizes its loops from the prompt): a compiled model runs it eagerly, once per
layer, and the rest of the model compiled.

Under ``torch.autocast`` an edited call runs on its queries, keys and values in the autocast
dtype, as stock sdpa does; its explicit rows are float32 and its output is in the autocast dtype.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional, Protocol, Sequence

import torch

from attn_transition.config import TransitionConfig
from attn_transition.protocol import Edit
from attn_transition.kernel import Budget, needs_grad, transition_rows
from attn_transition.schedules import Plan, layer_plan

from .base_rows import base_rows
from .calls import CallGeometry, geometry_from_mask
from .explicit import plain_attention, sinks_of
from .registration import BASE_IMPLEMENTATIONS, STATE_ATTR, base_function, implementation_name, register_attention

__all__ = ["make_attention", "register", "rows_all_edit", "autocast_inputs"]


class AttentionState(Protocol):
    """What the attention function reads of the state it finds on a module (``STATE_ATTR``;
    :class:`~.state.TransitionState` is one): the settings in effect, this thread's call, the
    schedule's layout and the memory budget."""

    @property
    def config(self) -> TransitionConfig: ...

    @property
    def active(self) -> bool: ...

    @property
    def full_matrix(self) -> bool: ...

    num_layers: int

    def schedule_layer(self, layer_idx: int) -> int: ...

    def current_call(self) -> Optional[CallGeometry]: ...

    def budget(self, device: torch.device, heads: int, keys: int) -> Budget: ...


def rows_all_edit(call: CallGeometry, plans: Sequence[Sequence[Edit]]) -> list[tuple[int, int]]:
    """The call's query rows (local indices) that every batch row recomputes, as sorted spans."""
    common: Optional[list[tuple[int, int]]] = None
    for row, plan in zip(call.rows, plans):
        spans = []
        for e in plan:
            a = max(row.first + e.start, call.offset, row.first) - call.offset
            c = min(row.first + e.end, call.offset + call.q_len, row.real_end) - call.offset
            if a < c:
                spans.append((a, c))
        spans.sort()
        if common is None:
            common = spans
        else:
            common = [(max(a, x), min(c, y)) for a, c in common for x, y in spans if max(a, x) < min(c, y)]
        if not common:
            return []
    return common or []


def autocast_inputs(query: torch.Tensor, key: torch.Tensor,
                    value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inside ``torch.autocast``, the queries, keys and values in the autocast dtype, as stock sdpa
    gets them (autocast's policy casts ``scaled_dot_product_attention``'s inputs to it; under
    autocast the rotary embedding leaves queries and keys in float32 and values in the autocast
    dtype); outside, unchanged. The stock rows of an edited call then run on what stock runs on,
    and the explicit rows are computed in float32 from the same values
    (:func:`attn_transition.kernel.explicit_precision`)."""
    device = query.device.type
    if not torch.is_autocast_enabled(device):
        return query, key, value
    dtype = torch.get_autocast_dtype(device)
    return query.to(dtype), key.to(dtype), value.to(dtype)


def _transition(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: Optional[torch.Tensor], call: CallGeometry, state: AttentionState, *,
                scaling: Optional[float], softcap: Optional[float], dropout: float, base: Optional[Callable],
                want_weights: bool, **base_kwargs) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The base attention, then the edited rows of this call recomputed, edited and written back."""
    batch, heads, q, head_dim = query.shape                              # (batch, heads, q, d)
    k_len = key.shape[2]
    scaling = head_dim ** -0.5 if scaling is None else scaling
    sinks = sinks_of(module, base_kwargs)
    grad = needs_grad(query, key, value)
    every_row = base is None or want_weights
    # Absolute position of key index 0: caches that keep a window hold only the last keys.
    shift = call.offset + q - k_len if k_len <= call.offset + q else 0
    layer = state.schedule_layer(module.layer_idx)
    budget = state.budget(query.device, heads, k_len)
    plans = [layer_plan(call.config, layer, state.num_layers, row.n) if row.n > 0 else Plan()
             for row in call.rows]
    if base is not None:
        skip = (() if every_row or grad or dropout > 0 or shift else rows_all_edit(call, plans))
        out = base_rows(base, module, query, key, value, attention_mask, skip, offset=call.offset,
                        scaling=scaling, softcap=softcap, dropout=dropout, budget=budget,
                        base_kwargs=base_kwargs)                         # (batch, q, heads, dv)
        if grad:
            out = out.clone()                                            # written to below
    else:
        out = query.new_zeros(batch, q, heads, value.shape[-1])          # (batch, q, heads, dv)
    weights_out = query.new_zeros(batch, heads, q, k_len) if want_weights else None
    for b, (row, plan) in enumerate(zip(call.rows, plans)):
        if not plan and not every_row:
            continue
        mb = b if attention_mask is not None and attention_mask.shape[0] > 1 else 0
        # Prompt positions count from the row's first real token.
        transition_rows(query[b], key[b], value[b], plan, row_start=call.offset - row.first,
                        key_start=shift - row.first, real_end=row.real_end - row.first, every_row=every_row,
                        scaling=scaling, softcap=softcap, sinks=sinks,
                        mask=None if attention_mask is None else attention_mask[mb],   # (heads or 1, q, k)
                        budget=budget, scratch=call.scratch, dropout=dropout, out=out[b],
                        weights_out=None if weights_out is None else weights_out[b], prompt_length=row.n)
    return out, weights_out


def _current_call(state: AttentionState, query: torch.Tensor, key: torch.Tensor,
                  attention_mask: Optional[torch.Tensor]) -> Optional[CallGeometry]:
    """The plan of the call this layer runs in, or None when it edits nothing."""
    call = state.current_call()
    batch, q = query.shape[0], query.shape[2]
    if call is not None and call.batch == batch and call.q_len == q:
        return call if call.config is not None else None
    # No plan from the decoder for this shape (a layer called on its own): a one-shot prefill is
    # read from its mask.
    if state.active and q == key.shape[2] and q > 1:
        return geometry_from_mask(state.config, attention_mask, batch, q)
    return None


def make_attention(base_name: str) -> Callable:
    """The attention function registered as ``attn_transition_<base_name>``."""

    @torch.compiler.disable
    def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: Optional[torch.Tensor], dropout: float = 0.0,
                  scaling: Optional[float] = None, **kwargs) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        state = getattr(module, STATE_ATTR, None)
        base = base_function(base_name, module, plain_attention)
        call = None if state is None else _current_call(state, query, key, attention_mask)
        want_weights = bool(kwargs.get("output_attentions", False))
        if call is not None or (want_weights and base_name == "sdpa"):
            query, key, value = autocast_inputs(query, key, value)
        if call is None:
            if want_weights and base_name == "sdpa":
                # sdpa returns no weights; compute them plainly so output_attentions still works.
                return plain_attention(module, query, key, value, attention_mask, dropout=dropout,
                                       scaling=scaling, **kwargs)
            return base(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        softcap = kwargs.pop("softcap", None)
        return _transition(module, query, key, value, attention_mask, call, state, scaling=scaling,
                           softcap=softcap, dropout=dropout, want_weights=want_weights,
                           base=None if state.full_matrix else base, **kwargs)

    attention.__name__ = f"attn_transition_{base_name}_attention"
    attention.__qualname__ = attention.__name__
    return attention


_LOCK = threading.Lock()
_REGISTERED = False


def register() -> None:
    """Register ``attn_transition_sdpa`` / ``attn_transition_eager`` (idempotent, thread-safe)."""
    global _REGISTERED
    with _LOCK:
        if _REGISTERED:
            return
        for base in BASE_IMPLEMENTATIONS:
            register_attention(implementation_name(base), make_attention(base), mask=base)
        _REGISTERED = True
