"""The stock rows of an edited call on the CPU: the base attention computed on the rows the
schedule does not recompute, where leaving the recomputed rows out saves work.

Without a mask, rows before the first skipped span are one causal kernel call; rows after it
are not a causal square any more, and are merged from two kernel calls (the keys every row
sees, then the causal square) by their log-sum-exp, or given an explicit lower-right mask
where that kernel is not available. With a mask of one row per query row (padded batches,
sliding windows) the kept rows run on the masked kernel with their rows of the mask, as stock
does on every row. Elsewhere (accelerators, eager, gradients, dropout) the base runs on every
row and the edited rows are overwritten by the caller.

Public: :func:`base_rows` (the base output, some rows possibly left unset),
:func:`rows_to_skip` (the decision), :func:`worth_skipping` (the cost model),
:func:`flash_lse` (torch's CPU flash kernel with its log-sum-exp, probed once).
"""

from __future__ import annotations

import threading
from typing import Callable, Optional, Sequence

import torch
from torch.nn.attention.bias import causal_lower_right
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from attn_transition.kernel import Budget

__all__ = ["MASKED_ENTRY_COST", "flash_lse", "merges", "causal_rows", "worth_skipping", "rows_to_skip", "base_rows",
           "complement"]

Spans = Sequence[tuple[int, int]]

def _probe_flash_lse() -> Optional[Callable]:
    """torch's CPU flash kernel with its log-sum-exp, if it merges as expected (checked once)."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None:
        return None
    try:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 2, 6, 4, generator=g) for _ in range(3))
        o1, l1 = op(q[:, :, 3:], k[:, :, :3], v[:, :, :3], 0.0, False, scale=0.5)
        o2, l2 = op(q[:, :, 3:], k[:, :, 3:], v[:, :, 3:], 0.0, True, scale=0.5)
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.5)[:, :, 3:]
        ok = (_merge(o1, l1, o2, l2) - want).abs().max().item() < 1e-5
    except (RuntimeError, TypeError, ValueError):
        return None
    return op if ok else None


def _merge(o1, l1, o2, l2) -> torch.Tensor:
    """Attention over two key sets from each one's output (batch, heads, r, dv) and log-sum-exp
    (batch, heads, r), float32 or float64; written over ``o1`` and ``o2`` (the kernel's fresh outputs)."""
    assert o1.dtype in (torch.float32, torch.float64) and o2.dtype == o1.dtype, (o1.dtype, o2.dtype)
    top = torch.maximum(l1, l2)
    w1 = (l1 - top).exp_().unsqueeze(-1)                                 # (batch, heads, r, 1)
    w2 = (l2 - top).exp_().unsqueeze(-1)
    return o1.mul_(w1).add_(o2.mul_(w2)).div_(w1.add_(w2))             # (batch, heads, r, dv)


_FLASH_LSE: Optional[Callable] = None
_FLASH_LSE_PROBED = False
_PROBE_LOCK = threading.Lock()


def flash_lse() -> Optional[Callable]:
    """torch's CPU flash kernel with its log-sum-exp, or None where it does not merge as expected."""
    global _FLASH_LSE, _FLASH_LSE_PROBED
    with _PROBE_LOCK:
        if not _FLASH_LSE_PROBED:
            _FLASH_LSE, _FLASH_LSE_PROBED = _probe_flash_lse(), True
    return _FLASH_LSE


# Rows of a causal call that do not start at row 0 cost, per (row, key) entry, about this much
# relative to the causal kernel (CPU float32, 8k tokens): merged from two kernel calls by their
# log-sum-exp, or with an explicit lower-right mask where that kernel is not available. The base
# skips recomputed rows only where that saves work at this price.
MASKED_ENTRY_COST = {"merged": 1.05, "mask": 1.75}
# Bytes per query row of the pieces below, within the same budget as the edited rows: the merged
# path holds about six (heads, dv) float32 vectors per row; the mask path one bool and one float32
# per (row, key) entry of the lower-right mask.
_MERGED_BYTES_PER_ROW_HEAD_DIM = 24
_MASK_BYTES_PER_ENTRY = 5


def causal_rows(out, query, key, value, a: int, c: int, *, offset: int, scaling: float,
                 budget: Budget) -> None:
    """Write the causal attention of query rows [a, c) into ``out`` (batch, q, heads, dv); row i
    sees keys [0, offset + i]. In chunks of rows whose temporaries stay within the budget."""
    heads, dv = query.shape[1], value.shape[-1]
    if merges(query, value):
        op = flash_lse()
        # Chunk [i, j): keys [0, offset + i) seen by every row, and the square [offset + i, offset + j)
        # (causal, upper-left is right); about six (r, heads, dv) float32 temporaries.
        step = min(c - a, budget.rows_for(_MERGED_BYTES_PER_ROW_HEAD_DIM * heads * dv))
        for i in range(a, c, step):
            j = min(c, i + step)
            qs = query[:, :, i:j]                                        # (batch, heads, r, d)
            o1, l1 = op(qs, key[:, :, :offset + i], value[:, :, :offset + i], 0.0, False, scale=scaling)
            o2, l2 = op(qs, key[:, :, offset + i:offset + j], value[:, :, offset + i:offset + j], 0.0, True,
                        scale=scaling)
            out[:, i:j] = _merge(o1, l1, o2, l2).transpose(1, 2)        # (batch, r, heads, dv)
        return
    # A lower-right causal mask over keys [0, offset + j): (rows, keys) bool, then float in SDPA.
    groups = heads // key.shape[1]
    step = min(c - a, budget.rows_for(_MASK_BYTES_PER_ENTRY * (offset + c)))
    for i in range(a, c, step):
        j = min(c, i + step)
        o = torch.nn.functional.scaled_dot_product_attention(
            query[:, :, i:j], key[:, :, :offset + j], value[:, :, :offset + j],
            attn_mask=causal_lower_right(j - i, offset + j), scale=scaling, enable_gqa=groups > 1)
        out[:, i:j] = o.transpose(1, 2)                                  # (batch, r, heads, dv)


def _causal_entries(a: int, c: int, offset: int) -> int:
    """(row, key) entries of causal rows [a, c) whose row i sees keys [0, offset + i]."""
    return (c - a) * (2 * offset + a + c + 1) // 2


def complement(spans: Spans, q: int) -> list[tuple[int, int]]:
    """The rows of [0, q) outside the sorted disjoint ``spans``."""
    kept, at = [], 0
    for a, c in spans:
        if a > at:
            kept.append((at, a))
        at = c
    if at < q:
        kept.append((at, q))
    return kept


def merges(query: torch.Tensor, value: torch.Tensor) -> bool:
    """Whether rows after a skipped span are merged from two kernel calls: float32 / float64 only
    (in half precision each call's output is rounded before the merge, a rounding stock makes
    once), and one head size for queries, keys and values (the kernel's requirement; MLA-style
    attention has wider queries and keys than values)."""
    return (query.dtype in (torch.float32, torch.float64) and query.shape[-1] == value.shape[-1]
            and flash_lse() is not None)


def worth_skipping(skip: Spans, q: int, offset: int, *, merged: bool) -> list[tuple[int, int]]:
    """The spans of ``skip`` the causal base (no mask) should leave out: the rows before the first
    skipped span run on the causal kernel, every kept row after it on the masked one. Skipping
    from span j on saves its entries and costs the extra of the masked rows after it; the best
    j wins, or nothing is skipped."""
    cost = MASKED_ENTRY_COST["merged" if merged else "mask"]
    best, best_gain = len(skip), 0.0
    for j in range(len(skip)):
        later = skip[j:]
        saved = sum(_causal_entries(a, c, offset) for a, c in later)
        masked = sum(_causal_entries(a, c, offset) for a, c in complement(later, q)
                     if c > later[0][0] or offset > 0)
        gain = saved - (cost - 1.0) * masked
        if gain > best_gain:
            best, best_gain = j, gain
    return list(skip[best:])


def rows_to_skip(base: Callable, module, query, key, value, attention_mask, skip, *, offset: int,
                  base_kwargs: dict) -> tuple[list[tuple[int, int]], bool]:
    """The spans of ``skip`` the base leaves out (CPU sdpa only), and whether the kept rows run
    through the call's own mask."""
    q = query.shape[2]
    if not skip or base is not ALL_ATTENTION_FUNCTIONS["sdpa"] or query.device.type != "cpu" \
            or base_kwargs.get("position_bias") is not None:
        return [], False
    if attention_mask is None:
        if base_kwargs.get("is_causal", getattr(module, "is_causal", True)) is not True:
            return [], False
        return worth_skipping(skip, q, offset, merged=merges(query, value)), False
    # A mask with a row per query row (padded batches, sliding windows), (batch or 1, heads or 1,
    # q, keys): stock runs every row through the masked kernel, so the kept rows cost the same
    # per entry in fewer, shorter calls with their rows of the mask, and every skipped row is saved.
    if attention_mask.dim() == 4 and attention_mask.shape[-2:] == (q, key.shape[2]):
        return list(skip), True
    return [], False


def base_rows(base: Callable, module, query, key, value, attention_mask, skip, *, offset: int,
               scaling: float, softcap, dropout: float, budget: Budget, base_kwargs: dict) -> torch.Tensor:
    """The base attention's output on every query row, except the rows in ``skip`` where that is
    cheaper: they are left unset (the caller recomputes them). (batch, q, heads, dv)."""
    batch, heads, q, _ = query.shape                                     # (batch, heads, q, d)
    skip, masked = rows_to_skip(base, module, query, key, value, attention_mask, skip, offset=offset,
                                 base_kwargs=base_kwargs)
    if not skip:
        return base(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                    softcap=softcap, **base_kwargs)[0]
    out = query.new_empty(batch, q, heads, value.shape[-1])               # (batch, q, heads, dv)
    for a, c in complement(skip, q):
        keys = slice(0, offset + c)                   # the later keys are masked for these rows
        if masked:
            out[:, a:c] = base(module, query[:, :, a:c], key[:, :, keys], value[:, :, keys],
                               attention_mask[:, :, a:c, keys], dropout=0.0, scaling=scaling,
                               softcap=softcap, **base_kwargs)[0]      # (batch, r, heads, dv)
        elif a == 0 and offset == 0:                                   # square: the causal kernel
            out[:, :c] = base(module, query[:, :, :c], key[:, :, :c], value[:, :, :c], None,
                              dropout=0.0, scaling=scaling, softcap=softcap, **base_kwargs)[0]
        else:
            causal_rows(out, query, key, value, a, c, offset=offset, scaling=scaling, budget=budget)
    return out


