"""The attention function registered in transformers' ``AttentionInterface``.

One function per *base* implementation (``sdpa`` or ``eager``). On a prefill it first
runs the base implementation on the whole input (fused SDPA for the stock model),
then recomputes only the query rows the schedule edits, explicitly and in float32,
edits them with :mod:`attn_transition.schedules`, and writes their outputs back. Extra
memory is O(edited rows x n) per layer, never O(n^2). Decoding steps (a query shorter
than the keys) go to the base implementation untouched.
"""

from __future__ import annotations

import functools
import sys
import warnings
import weakref
from typing import Any, Callable, Optional

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from attn_transition.schedules import apply_edit_, layer_plan, real_spans

__all__ = ["BASE_IMPLEMENTATIONS", "implementation_name", "register", "STATES"]

# Attention module -> the owning model's TransitionState. Weak keys: nothing here keeps a
# model alive, and a module removed from the table is simply not edited.
STATES: "weakref.WeakKeyDictionary[torch.nn.Module, Any]" = weakref.WeakKeyDictionary()

BASE_IMPLEMENTATIONS = ("sdpa", "eager")
_PREFIX = "attn_transition_"


def implementation_name(base: str) -> str:
    return _PREFIX + base


def _base_function(base: str, module: torch.nn.Module) -> Callable:
    if base == "sdpa":
        return ALL_ATTENTION_FUNCTIONS["sdpa"]
    return _eager_for(type(module))


@functools.lru_cache(maxsize=None)
def _eager_for(module_type: type) -> Callable:
    # "eager" lives in each model's own modeling file (it knows that family's quirks).
    eager = getattr(sys.modules.get(module_type.__module__), "eager_attention_forward", None)
    return eager if eager is not None else _explicit_attention


def _allowed(mask: torch.Tensor) -> torch.Tensor:
    """Boolean view of a transformers 4D mask (bool, or additive float with dtype-min)."""
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


def _row_weights(q_rows: torch.Tensor, k: torch.Tensor, start: int,
                 mask_rows: Optional[torch.Tensor], scaling: float,
                 softcap: Optional[float]) -> torch.Tensor:
    """Post-softmax float32 weights of the contiguous query rows ``[start, start + r)`` of one
    sequence over its first ``c`` keys (``c >= start + r``; a causal row never sees further).

    q_rows: (heads, r, d); k: (kv_heads, c, d); mask_rows: (r, c) bool or additive float, or
    None for plain causal. Returns (heads, r, c).
    """
    heads, r, d = q_rows.shape
    kv_heads, c, _ = k.shape
    assert c >= start + r, f"rows [{start}, {start + r}) need at least {start + r} keys, got {c}"
    groups = heads // kv_heads
    q = (q_rows.float() * scaling).reshape(kv_heads, groups * r, d)      # (kv_heads, g*r, d), scaled
    scores = torch.matmul(q, k.float().transpose(-1, -2))                # (kv_heads, g*r, c)
    scores = scores.view(heads, r, c)                                    # (heads, r, c)
    if softcap is not None:
        scores = scores.div_(softcap).tanh_().mul_(softcap)
    if mask_rows is None:
        # Causal: row start+i hides keys > start+i, all of them in the last c - start columns.
        hidden = torch.ones(r, c - start, dtype=torch.bool, device=k.device).triu_(1)   # (r, c - start)
        scores[..., start:].masked_fill_(hidden, float("-inf"))
        return torch.softmax(scores, dim=-1)                             # every row sees itself
    if mask_rows.dtype == torch.bool:
        scores.masked_fill_(~mask_rows, float("-inf"))
    else:
        scores.add_(mask_rows.float())
    return torch.softmax(scores, dim=-1).nan_to_num_(nan=0.0)            # fully masked rows -> 0


def _weighted_values(weights: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(heads, r, n) @ (kv_heads, n, d) -> (heads, r, d), without repeating v."""
    heads, r, n = weights.shape
    kv_heads = v.shape[0]
    w = weights.reshape(kv_heads, (heads // kv_heads) * r, n)            # (kv_heads, g*r, n)
    return torch.matmul(w, v.float()).view(heads, r, -1)                 # (heads, r, d)


def _mask_spans(attention_mask: Optional[torch.Tensor], batch: int, n: int):
    if attention_mask is None:
        return [(0, n)] * batch
    diag = _allowed(attention_mask[:, 0]).diagonal(dim1=-2, dim2=-1)     # (batch', n)
    return real_spans(diag.expand(batch, n))


def _explicit_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                        scaling: Optional[float] = None, softcap: Optional[float] = None,
                        **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention computed row by row in float32 (the fallback ``eager``)."""
    return _transition(module, query, key, value, attention_mask, scaling=scaling, softcap=softcap,
                       base=None, state=None, want_weights=True, full=True)


def _transition(module, query, key, value, attention_mask, *, scaling, softcap, base, state,
                want_weights: bool, full: bool, **base_kwargs):
    batch, heads, n, head_dim = query.shape                              # (batch, heads, q, d)
    scaling = head_dim ** -0.5 if scaling is None else scaling
    if base is not None and not full:
        out, _ = base(module, query, key, value, attention_mask, scaling=scaling, softcap=softcap,
                      **base_kwargs)                                     # (batch, q, heads, d)
    else:
        out = query.new_zeros(batch, n, heads, value.shape[-1])          # (batch, q, heads, d)
    weights_out = query.new_zeros(batch, heads, n, key.shape[2]) if want_weights else None
    every_row = full or want_weights
    for b, span in enumerate(_mask_spans(attention_mask, batch, n)):
        if span is None:
            warnings.warn("attn_transition: a batch row's real tokens are not contiguous (packed "
                          "sequences?); that row is left unedited", stacklevel=3)
            plan = ()
            span = (0, n)
        else:
            plan = layer_plan(state.config, module.layer_idx, state.num_layers, span[1]) if state else ()
        first, count = span
        if count == 0:
            continue
        # Segments of contiguous query rows [start, end), each computed over keys [0, end) only (a
        # causal row sees nothing further): one per edit, or all real rows when every row is wanted.
        segments = [(0, count, plan)] if every_row else [(e.start, e.end, (e,)) for e in plan]
        for start, end, edits in segments:
            rows, cols = slice(first + start, first + end), slice(first, first + end)
            mask_rows = None if attention_mask is None else \
                attention_mask[b if attention_mask.shape[0] > 1 else 0, 0, rows, cols]   # (r, end)
            w = _row_weights(query[b, :, rows], key[b, :, cols], start, mask_rows,
                             scaling, softcap)                            # (heads, r, end)
            for edit in edits:
                apply_edit_(w[:, edit.start - start:edit.end - start], edit)
            if edits and mask_rows is not None:                           # keep windows / padding
                w.mul_(_allowed(mask_rows))
            o = _weighted_values(w, value[b, :, cols])                    # (heads, r, d)
            out[b, rows] = o.transpose(0, 1).to(out.dtype)                # (r, heads, d)
            if weights_out is not None:
                weights_out[b, :, rows, cols] = w.to(weights_out.dtype)
    return out, weights_out


def _make_attention(base_name: str) -> Callable:
    def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: Optional[torch.Tensor], dropout: float = 0.0,
                  scaling: Optional[float] = None, **kwargs) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        switch = kwargs.pop("attn_transition", True)
        state = STATES.get(module)
        base = _base_function(base_name, module)
        want_weights = bool(kwargs.get("output_attentions", False))
        is_prefill = query.shape[2] == key.shape[2]
        active = (state is not None and switch is not False and is_prefill
                  and not (module.training and dropout > 0))
        if not active:
            if want_weights and base_name == "sdpa":
                # sdpa returns no weights; compute them plainly so output_attentions still works.
                return _transition(module, query, key, value, attention_mask, scaling=scaling,
                                   softcap=kwargs.get("softcap"), base=None, state=None,
                                   want_weights=True, full=True)
            return base(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        softcap = kwargs.pop("softcap", None)
        return _transition(module, query, key, value, attention_mask, scaling=scaling, softcap=softcap,
                           base=base, state=state, want_weights=want_weights,
                           full=state.full_matrix, dropout=dropout, **kwargs)

    attention.__name__ = f"attn_transition_{base_name}_attention"
    attention.__qualname__ = attention.__name__
    return attention


_REGISTERED = False


def register() -> None:
    """Register ``attn_transition_sdpa`` / ``attn_transition_eager`` (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    masks = {"sdpa": sdpa_mask, "eager": eager_mask}
    for base in BASE_IMPLEMENTATIONS:
        AttentionInterface.register(implementation_name(base), _make_attention(base))
        # Without a mask function under the same name transformers would pass mask=None.
        AttentionMaskInterface.register(implementation_name(base), masks[base])
    _REGISTERED = True
