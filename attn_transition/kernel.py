"""The edited rows, engine-neutral: one sequence's queries, keys and values in, its rows
recomputed explicitly and edited by the schedule out.

Nothing here knows about transformers or vLLM. An integration calls :func:`transition_rows`
once per sequence and layer with tensors it already holds, and leaves every other row to
its own (fused) attention:

- ``query`` ``(heads, R, d)``: the sequence's query rows in this call, at prompt positions
  ``[row_start, row_start + R)``; positions count from the prompt's first real token
  (``row_start`` is negative where a batch is left-padded, the padding rows come first);
- ``key`` / ``value`` ``(kv_heads, C, d)`` / ``(kv_heads, C, dv)``: its keys at prompt positions
  ``[key_start, key_start + C)`` (``key_start > 0`` where a windowed cache dropped the first
  keys; grouped-query attention without repeating them);
- ``edits``: the layer's plan, ``attn_transition.schedules.layer_plan(config, layer, num_layers, n)``.

The rows are computed in chunks sized by a :class:`Budget`; every step of both schedules is
per (head, query row), so the result does not depend on the chunking. Every chunk of a call
can reuse one :class:`Scratch` buffer.

Module contents, top to bottom: the memory model (:class:`Budget`), the reused buffer
(:class:`Scratch`), explicit attention (:func:`attention_weights`, :func:`weighted_values`),
the rows a plan touches (:func:`edited_spans`), and the driver (:func:`transition_rows`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .errors import ConfigError, InputError
from .schedules import Edit, apply_edit_

__all__ = ["BYTES_PER_ENTRY", "Budget", "Scratch", "attention_weights", "weighted_values", "bool_mask",
           "edited_spans", "transition_rows"]

# The memory model. An *entry* is one (head, query row, key) triple of an explicit attention
# chunk. Computing a chunk holds, per entry, at most: its float32 score, its float32 weight
# (the same buffer when nothing needs a gradient) and one transient bool of the causal or
# window mask. Every other buffer of the kernel is a (head, row) or (key, dim) vector, small
# beside these, except the float32 up-cast of half-precision keys and values, which is done in
# blocks of keys within a quarter of the same budget (:meth:`Budget.key_block`).
BYTES_PER_ENTRY = 9


@dataclass(frozen=True)
class Budget:
    """How much memory one chunk of explicit rows may hold, in MiB (None: no bound).

    The single rule: a chunk is as many rows as fit, at ``bytes_per_row`` each, and never
    fewer than one. The kernel's rows cost ``BYTES_PER_ENTRY x heads x keys`` each; callers
    with other per-row temporaries (e.g. a base attention computed in pieces) state theirs.
    """

    mib: Optional[float] = None

    def __post_init__(self) -> None:
        if self.mib is not None and (isinstance(self.mib, bool) or not isinstance(self.mib, (int, float))
                                     or not math.isfinite(self.mib) or self.mib <= 0):
            raise ConfigError(f"Budget.mib must be a number of MiB in (0, inf) or None, got {self.mib!r}",
                              field="mib")

    def rows_for(self, bytes_per_row: int) -> int:
        """Rows of ``bytes_per_row`` bytes that fit (at least one; effectively all without a bound)."""
        if self.mib is None:
            return 1 << 62
        return max(1, int(self.mib * 2**20) // max(int(bytes_per_row), 1))

    def rows(self, heads: int, keys: int) -> int:
        """Query rows over ``keys`` keys per chunk of explicit attention."""
        return self.rows_for(BYTES_PER_ENTRY * heads * max(keys, 1))

    def key_block(self, keys: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        """Keys per float32 up-cast block of half-precision keys or values (all when already
        float32/float64 or unbounded): 4 bytes per (kv head, key, dim) in a quarter of the budget."""
        if dtype in (torch.float32, torch.float64) or self.mib is None:
            return keys
        return max(1, int(self.mib * 2**18) // (4 * kv_heads * head_dim))


class Scratch:
    """One buffer that the edited chunks of a forward call reuse, layer after layer.

    On the CPU a fresh tensor of tens of MiB is fresh memory from the system (the allocator
    maps large blocks and unmaps them when freed), and every 4 KiB page of it is faulted in
    and zeroed on first touch: measured at 2048 tokens (SmolLM2 shape, sra), about 200k page
    faults per prefill and a third of the edit's time. Reused, the pages stay mapped. The
    buffer grows to the largest chunk asked for (so it stays within the chunk budget). One
    buffer serves one call at a time: an integration makes one per call (or per thread).
    """

    def __init__(self) -> None:
        self._buffer: Optional[torch.Tensor] = None

    def take(self, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` over the buffer (valid until the next ``take``)."""
        numel = math.prod(shape)
        buffer = self._buffer
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype or buffer.device != device:
            self._buffer = None                                          # free the old one first
            buffer = self._buffer = torch.empty(numel, dtype=dtype, device=device)
        return buffer[:numel].view(shape)

    def release(self) -> None:
        self._buffer = None

    @property
    def nbytes(self) -> int:
        return 0 if self._buffer is None else self._buffer.numel() * self._buffer.element_size()


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """float32 at least (float64 stays float64, e.g. for finite-difference checks)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def bool_mask(mask: torch.Tensor) -> torch.Tensor:
    """Boolean view of an attention mask (bool, or additive float with the dtype's minimum)."""
    return mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2


def attention_weights(q_rows: torch.Tensor, k: torch.Tensor, start: int, mask_rows: Optional[torch.Tensor],
                      scaling: float, softcap: Optional[float] = None, *, sinks: Optional[torch.Tensor] = None,
                      inplace: bool = True, budget: Budget = Budget(), scratch: Optional[Scratch] = None):
    """Post-softmax float32 weights of contiguous query rows over their keys.

    The rows are ``[start, start + r)`` counted in the key columns of ``k`` (a causal row
    sees no column past its own); ``c >= start + r``.

    Args:
        q_rows: (heads, r, d) queries. k: (kv_heads, c, d) keys.
        mask_rows: (r, c) or per head (heads, r, c) bool or additive float mask, or None for
            plain causal.
        scaling / softcap: the layer's own.
        sinks: (heads,) attention-sink logits (gpt-oss) that join each row's softmax.
        inplace: compute in place (no autograd through the result).
        budget: bounds the float32 up-cast of half-precision keys.
        scratch: where the weights are computed (in place only); they are then valid until its
            next use. None allocates them.

    Returns:
        ``(weights, total)``: weights (heads, r, c) float32; total (heads, r, 1), each row's
        mass over the keys (1 - the sink's share), or None without sinks.
    """
    heads, r, d = q_rows.shape
    kv_heads, c, _ = k.shape
    assert c >= start + r, f"rows [{start}, {start + r}) need at least {start + r} keys, got {c}"
    groups = heads // kv_heads
    q = (_upcast(q_rows) * scaling).reshape(kv_heads, groups * r, d)      # (kv_heads, g*r, d), scaled
    block = budget.key_block(c, kv_heads, d, k.dtype)
    reuse = scratch is not None and inplace
    if block >= c:
        scores = None if not reuse else scratch.take((kv_heads, groups * r, c), q.dtype, q.device)
        scores = torch.matmul(q, _upcast(k).transpose(-1, -2), out=scores)   # (kv_heads, g*r, c)
    else:
        scores = (q.new_empty(kv_heads, groups * r, c) if not reuse       # (kv_heads, g*r, c)
                  else scratch.take((kv_heads, groups * r, c), q.dtype, q.device))
        for j in range(0, c, block):
            scores[..., j:j + block] = torch.matmul(q, _upcast(k[:, j:j + block]).transpose(-1, -2))
    scores = scores.view(heads, r, c)                                    # (heads, r, c)
    if softcap is not None:
        scores = scores.div_(softcap).tanh_().mul_(softcap) if inplace else torch.tanh(scores / softcap) * softcap
    if mask_rows is None:
        # Causal: row start+i hides keys > start+i, all of them in the last c - start columns.
        hidden = torch.ones(r, c - start, dtype=torch.bool, device=k.device).triu_(1)   # (r, c - start)
        if inplace:
            scores[..., start:].masked_fill_(hidden, float("-inf"))
        else:
            scores = torch.cat([scores[..., :start], scores[..., start:].masked_fill(hidden, float("-inf"))], -1)
    elif mask_rows.dtype == torch.bool:
        scores = scores.masked_fill_(~mask_rows, float("-inf")) if inplace else scores.masked_fill(~mask_rows, float("-inf"))
    else:
        scores = scores.add_(mask_rows.to(scores.dtype)) if inplace else scores + mask_rows.to(scores.dtype)
    if sinks is None:
        # One fused pass; in place when allowed (bitwise the same as torch.softmax).
        weights = (torch.ops.aten._softmax.out(scores, -1, False, out=scores) if inplace
                   else torch.softmax(scores, dim=-1))                   # (heads, r, c)
        del scores
        if mask_rows is not None:                                        # fully masked rows: NaN -> 0
            weights = weights.nan_to_num_(nan=0.0) if inplace else weights.nan_to_num(nan=0.0)
        return weights, None
    # The sink is one more logit per row: it takes its share of the softmax and is then dropped.
    sink = sinks.to(scores.dtype).view(heads, 1, 1)
    top = torch.maximum(scores.amax(-1, keepdim=True).detach(), sink)    # (heads, r, 1)
    e = scores.sub_(top).exp_() if inplace else (scores - top).exp()     # (heads, r, c)
    denom = e.sum(-1, keepdim=True) + (sink - top).exp()                 # (heads, r, 1)
    weights = e.div_(denom) if inplace else e / denom
    return weights, 1.0 - (sink - top).exp() / denom


def weighted_values(weights: torch.Tensor, v: torch.Tensor, *, budget: Budget = Budget()) -> torch.Tensor:
    """(heads, r, n) @ (kv_heads, n, dv) -> (heads, r, dv) in float32, without repeating v."""
    heads, r, n = weights.shape
    kv_heads, _, dv = v.shape
    w = weights.reshape(kv_heads, (heads // kv_heads) * r, n)            # (kv_heads, g*r, n)
    block = budget.key_block(n, kv_heads, dv, v.dtype)
    if block >= n:
        return torch.matmul(w, _upcast(v).to(w.dtype)).view(heads, r, dv)             # (heads, r, dv)
    out = torch.zeros(kv_heads, w.shape[1], dv, dtype=w.dtype, device=w.device)     # (kv_heads, g*r, dv)
    for j in range(0, n, block):
        out += torch.matmul(w[..., j:j + block], _upcast(v[:, j:j + block]).to(w.dtype))
    return out.view(heads, r, dv)                                        # (heads, r, dv)


def edited_spans(edits: Sequence[Edit], row_start: int, row_end: int) -> list[tuple[int, int]]:
    """The prompt-position spans of rows ``[row_start, row_end)`` that ``edits`` touch, sorted."""
    spans = [(max(e.start, row_start), min(e.end, row_end)) for e in edits]
    return sorted((a, c) for a, c in spans if a < c)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _check_inputs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, out: torch.Tensor,
                  key_start: int, real_end: int) -> None:
    """InputError naming the argument of :func:`transition_rows` whose shape does not fit."""
    heads, rows, _ = query.shape
    kv_heads, keys, _ = key.shape
    if heads % kv_heads:
        raise InputError(f"transition_rows: query heads {heads} are not a multiple of key heads {kv_heads}",
                         field="key")
    if value.shape[:2] != (kv_heads, keys):
        raise InputError(f"transition_rows: value {tuple(value.shape)} must be (kv_heads={kv_heads}, C={keys}, dv)",
                         field="value")
    if out.shape[:2] != (rows, heads):
        raise InputError(f"transition_rows: out {tuple(out.shape)} must be (R={rows}, heads={heads}, dv)", field="out")
    if key_start + keys < real_end:
        raise InputError(f"transition_rows: rows up to position {real_end} need keys up to it; keys cover "
                         f"[{key_start}, {key_start + keys})", field="key")


def transition_rows(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, edits: Sequence[Edit], *,
                    row_start: int, scaling: float, out: torch.Tensor, key_start: int = 0,
                    real_end: Optional[int] = None, every_row: bool = False,
                    softcap: Optional[float] = None, sinks: Optional[torch.Tensor] = None,
                    mask: Optional[torch.Tensor] = None, window: Optional[int] = None,
                    budget: Budget = Budget(), scratch: Optional[Scratch] = None, dropout: float = 0.0,
                    weights_out: Optional[torch.Tensor] = None) -> list[tuple[int, int]]:
    """Recompute, edit and write one sequence's edited rows of one layer.

    Args:
        query: (heads, R, d), rows at prompt positions ``[row_start, row_start + R)``.
        key / value: (kv_heads, C, d) / (kv_heads, C, dv), at prompt positions
            ``[key_start, key_start + C)``; they reach at least the last row computed.
        edits: the layer's plan for this sequence's prompt length.
        row_start / key_start: prompt positions of ``query[:, 0]`` and ``key[:, 0]``.
        scaling / softcap / sinks: the layer's own (sinks: (heads,) logits).
        out: (R, heads, dv); the rows computed are written into it, nothing else is touched.
        real_end: end (prompt position) of the sequence's real rows; default ``row_start + R``.
        every_row: compute every real row explicitly, edited or not (full-matrix mode, or
            when the weights are returned).
        mask: (R, C), or per head (heads or 1, R, C), bool or additive mask of these rows over
            these keys (padding, windows, a family's per-head dynamic mask), or None: causal,
            limited to ``window`` keys (row p sees keys ``(p - window, p]``) if given.
        budget / scratch: chunk size and the reused buffer (see :class:`Budget`, :class:`Scratch`).
        dropout: attention dropout on the final weights (train mode).
        weights_out: (heads, R, C) float, receives the weights of the rows computed.

    Returns:
        The prompt-position spans that were written, sorted.
    """
    heads, rows, _ = query.shape
    real_end = row_start + rows if real_end is None else min(real_end, row_start + rows)
    first = max(row_start, 0)
    _check_inputs(query, key, value, out, key_start, real_end)
    if every_row:
        spans = [(first, real_end)] if real_end > first else []
    else:
        spans = edited_spans(edits, first, real_end)
    grad = _needs_grad(query, key, value)
    pad = max(key_start, 0)                      # prompt columns [0, pad) were dropped by a window
    for span_start, span_end in spans:
        # Chunks of equal size within the budget (65 rows in chunks of 32 would leave a chunk of one).
        pieces = -(-(span_end - span_start) // budget.rows(heads, span_end - pad))
        step = -(-(span_end - span_start) // pieces)
        for a in range(span_start, span_end, step):
            c = min(span_end, a + step)          # prompt rows [a, c) see prompt keys [pad, c)
            qi = slice(a - row_start, c - row_start)                     # local query rows
            ki = slice(pad - key_start, c - key_start)                   # local key columns
            if mask is not None:
                mask_rows = mask[..., qi, ki]                            # ([heads,] r, c - pad)
            elif window is not None:
                pos = torch.arange(a, c, device=key.device)[:, None]     # (r, 1) row positions
                cols = torch.arange(pad, c, device=key.device)[None, :]  # (1, c - pad) key positions
                mask_rows = (cols <= pos) & (cols > pos - window)        # (r, c - pad)
            else:
                mask_rows = None
            w, total = attention_weights(query[:, qi], key[:, ki], a - pad, mask_rows, scaling, softcap,
                                         sinks=sinks, inplace=not grad, budget=budget,
                                         scratch=scratch)                # (heads, r, c - pad)
            if grad:
                w = w.clone()
            touched = [(e, max(e.start, a), min(e.end, c)) for e in edits if max(e.start, a) < min(e.end, c)]
            if touched:
                full = w if pad == 0 else torch.cat([w.new_zeros(heads, c - a, pad), w], -1)   # (heads, r, c)
                for edit, i0, i1 in touched:
                    apply_edit_(full[:, i0 - a:i1 - a], edit, first_row=i0,
                                total=None if total is None else total[:, i0 - a:i1 - a])
                w = full[..., pad:]                                      # (heads, r, c - pad)
                if mask_rows is not None:                                # no weight where the row may not look
                    hidden = ~bool_mask(mask_rows)
                    w = w.masked_fill_(hidden, 0.0) if not grad else w.masked_fill(hidden, 0.0)
            if dropout > 0:
                w = torch.nn.functional.dropout(w, p=dropout, training=True)
            o = weighted_values(w, value[:, ki], budget=budget)         # (heads, r, dv)
            out[qi] = o.transpose(0, 1).to(out.dtype)                    # (r, heads, dv)
            if weights_out is not None:
                weights_out[:, qi, ki] = w.to(weights_out.dtype)
    return spans
