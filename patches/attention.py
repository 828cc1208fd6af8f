"""The attention function registered in transformers' ``AttentionInterface``.

One function per *base* implementation (``sdpa`` or ``eager``). When a call edits
(see :mod:`.calls`), the base implementation computes the rows the schedule leaves alone
(fused SDPA for the stock model), and the rows it edits are recomputed explicitly in
float32, edited with :mod:`attn_transition.schedules` and written in. The edited rows are
computed in chunks of rows sized from a memory budget (``max_chunk_mib``, per layer), so the
extra memory stays bounded whatever the prompt length; every step of both schedules is
row-wise, so chunking changes nothing in the result. Every chunk of every layer of one
forward call is computed in one reused buffer (:class:`Scratch`, on the model's state, let go
when the decoder returns). Calls that edit nothing (decoding steps, stock calls) go straight
to the base implementation.

On the CPU the sdpa base skips the rows the schedule recomputes wherever that saves work.
Without a mask, rows before the first skipped span are one causal kernel call; rows after it
are not a causal square any more, and are merged from two kernel calls (the keys every row
sees, then the causal square) by their log-sum-exp, or given an explicit lower-right mask
where that kernel is not available. With a mask of one row per query row (padded batches,
sliding windows) the kept rows run on the masked kernel with their rows of the mask, as stock
does on every row. Elsewhere (accelerators, eager) the base runs on every row and the edited
rows are overwritten.

The function is excluded from ``torch.compile`` graphs (it reads Python state and sizes
its loops from the prompt): a compiled model runs it eagerly, once per layer, and the
rest of the model compiled.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Callable, Optional

import torch
from torch.nn.attention.bias import causal_lower_right
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from attn_transition.schedules import apply_edit_, layer_plan

from .calls import CallPlan, bool_mask, plan_from_mask

__all__ = ["BASE_IMPLEMENTATIONS", "STATE_ATTR", "DEFAULT_MAX_CHUNK_MIB", "AUTO_CHUNK_MIB", "AUTO_CPU_ROWS",
           "chunk_budget",
           "Scratch", "register_attention",
           "implementation_name", "register",
           "row_weights", "weighted_values", "rows_per_chunk"]

STATE_ATTR = "_attn_transition"
BASE_IMPLEMENTATIONS = ("sdpa", "eager")
_PREFIX = "attn_transition_"
# The default budget ``max_chunk_mib="auto"``. On the CPU: chunks of AUTO_CPU_ROWS query rows,
# within AUTO_CHUNK_MIB["cpu"]. The stock model's own activations grow with the prompt like one
# row over all keys does, so a fixed row count keeps the extra memory a fixed small share of
# stock's (about 4% on SmolLM2 at every length), and 32 rows keep the per-chunk cost of the
# Python loop negligible (chunks of 6 rows at 16k tokens were measured slower). On an
# accelerator: a larger fixed budget, where one chunk of a few rows would be launch-bound.
DEFAULT_MAX_CHUNK_MIB = "auto"
AUTO_CHUNK_MIB = {"cpu": 64.0, "accelerator": 512.0}
AUTO_CPU_ROWS = 32
# Bytes held per (head, row, key) entry of a chunk, at most: float32 scores and weights (the
# softmax is out of place where autograd needs both; in place otherwise, in the reused buffer of
# :class:`Scratch`) and a transient bool mask.
_BYTES_PER_ENTRY = 9


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
    return eager if eager is not None else _plain_attention


def chunk_budget(setting, device: torch.device, heads: int, keys: int) -> Optional[float]:
    """The MiB budget in effect for rows over at most ``keys`` keys: the number given, None
    (unbounded), or "auto" by device (see ``AUTO_CHUNK_MIB``)."""
    if setting != "auto":
        return setting
    if device.type != "cpu":
        return AUTO_CHUNK_MIB["accelerator"]
    mib = AUTO_CPU_ROWS * _BYTES_PER_ENTRY * heads * max(keys, 1) / 2**20   # AUTO_CPU_ROWS rows' worth
    return min(AUTO_CHUNK_MIB["cpu"], mib)


def rows_per_chunk(heads: int, keys: int, max_chunk_mib: Optional[float]) -> int:
    """How many query rows over ``keys`` keys fit in ``max_chunk_mib`` (at least one; all if None)."""
    if max_chunk_mib is None:
        return 1 << 62
    return max(1, int(max_chunk_mib * 2**20) // (_BYTES_PER_ENTRY * heads * max(keys, 1)))


class Scratch:
    """One buffer that the edited chunks of a forward call reuse, layer after layer.

    On the CPU a fresh tensor of tens of MiB is fresh memory from the system (the allocator
    maps large blocks and unmaps them when freed), and every 4 KiB page of it is faulted in
    and zeroed on first touch: measured at 2048 tokens (SmolLM2 shape, sra), about 200k page
    faults per prefill and a third of the edit's time. Reused, the pages stay mapped. The
    buffer grows to the largest chunk asked for (so it stays within the chunk budget) and is
    dropped when the decoder's forward returns (:meth:`release`).
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


def _key_blocks(keys: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                max_chunk_mib: Optional[float]) -> int:
    """Keys per float32 up-cast block: whole when already float32, else a quarter of the budget."""
    if dtype in (torch.float32, torch.float64) or max_chunk_mib is None:
        return keys
    return max(1, int(max_chunk_mib * 2**18) // (4 * kv_heads * head_dim))


def row_weights(q_rows: torch.Tensor, k: torch.Tensor, start: int, mask_rows: Optional[torch.Tensor],
                scaling: float, softcap: Optional[float] = None, *, sinks: Optional[torch.Tensor] = None,
                inplace: bool = True, max_chunk_mib: Optional[float] = None,
                scratch: Optional[Scratch] = None):
    """Post-softmax float32 weights of contiguous query rows over their keys.

    The rows are ``[start, start + r)`` counted in the key columns of ``k`` (a causal row
    sees no column past its own); ``c >= start + r``.

    Args:
        q_rows: (heads, r, d) queries. k: (kv_heads, c, d) keys.
        mask_rows: (r, c) bool or additive float mask, or None for plain causal.
        scaling / softcap: the layer's own.
        sinks: (heads,) attention-sink logits (gpt-oss) that join each row's softmax.
        inplace: compute in place (no autograd through the result).
        max_chunk_mib: bounds the float32 up-cast of non-float32 keys.
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
    block = _key_blocks(c, kv_heads, d, k.dtype, max_chunk_mib)
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
        scores = scores.add_(mask_rows.float()) if inplace else scores + mask_rows.float()
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


def weighted_values(weights: torch.Tensor, v: torch.Tensor, *, max_chunk_mib: Optional[float] = None) -> torch.Tensor:
    """(heads, r, n) @ (kv_heads, n, dv) -> (heads, r, dv) in float32, without repeating v."""
    heads, r, n = weights.shape
    kv_heads, _, dv = v.shape
    w = weights.reshape(kv_heads, (heads // kv_heads) * r, n)            # (kv_heads, g*r, n)
    block = _key_blocks(n, kv_heads, dv, v.dtype, max_chunk_mib)
    if block >= n:
        return torch.matmul(w, _upcast(v).to(w.dtype)).view(heads, r, dv)             # (heads, r, dv)
    out = torch.zeros(kv_heads, w.shape[1], dv, dtype=w.dtype, device=w.device)
    for j in range(0, n, block):
        out += torch.matmul(w[..., j:j + block], _upcast(v[:, j:j + block]).to(w.dtype))
    return out.view(heads, r, dv)                                        # (heads, r, dv)


def _plain_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                     scaling: Optional[float] = None, softcap: Optional[float] = None,
                     **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention with its weights, explicit in float32 (for ``output_attentions`` on sdpa,
    and the eager base of a family whose modeling file has none)."""
    batch, heads, q, d = query.shape                                     # (batch, heads, q, d)
    k_len = key.shape[2]
    scaling = d ** -0.5 if scaling is None else scaling
    sinks = _sinks(module, kwargs)
    out = query.new_zeros(batch, q, heads, value.shape[-1])             # (batch, q, heads, dv)
    weights = query.new_zeros(batch, heads, q, k_len)                    # (batch, heads, q, k)
    for b in range(batch):
        if attention_mask is None:                                       # causal, queries are the last keys
            mask_rows = torch.ones(q, k_len, dtype=torch.bool, device=query.device).tril_(k_len - q)
        else:
            mask_rows = attention_mask[b if attention_mask.shape[0] > 1 else 0, 0, :, :k_len]   # (q, k)
        w, _ = row_weights(query[b], key[b], 0, mask_rows, scaling, softcap, sinks=sinks,
                           inplace=not _needs_grad(query, key, value))
        if dropout > 0:
            w = torch.nn.functional.dropout(w, p=dropout, training=True)
        out[b] = weighted_values(w, value[b]).transpose(0, 1).to(out.dtype)   # (q, heads, dv)
        weights[b] = w.to(weights.dtype)
    return out, weights


def _sinks(module: torch.nn.Module, kwargs: dict) -> Optional[torch.Tensor]:
    # gpt-oss passes its per-head sink logits as ``s_aux`` (its eager function reads module.sinks).
    sinks = kwargs.get("s_aux")
    return sinks if sinks is not None else getattr(module, "sinks", None)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


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


def _flash_lse() -> Optional[Callable]:
    global _FLASH_LSE, _FLASH_LSE_PROBED
    if not _FLASH_LSE_PROBED:
        _FLASH_LSE, _FLASH_LSE_PROBED = _probe_flash_lse(), True
    return _FLASH_LSE


# Rows of a causal call that do not start at row 0 cost, per (row, key) entry, about this much
# relative to the causal kernel (CPU float32, 8k tokens): merged from two kernel calls by their
# log-sum-exp, or with an explicit lower-right mask where that kernel is not available. The base
# skips recomputed rows only where that saves work at this price.
_MASKED_ENTRY_COST = {"merged": 1.05, "mask": 1.75}


def _causal_rows(out, query, key, value, a: int, c: int, *, offset: int, scaling: float,
                 budget: Optional[float]) -> None:
    """Write the causal attention of query rows [a, c) into ``out`` (batch, q, heads, dv); row i
    sees keys [0, offset + i]. In chunks of rows whose temporaries stay within the budget."""
    heads, dv = query.shape[1], value.shape[-1]
    if _merges(query, value):
        op = _flash_lse()
        # Chunk [i, j): keys [0, offset + i) seen by every row, and the square [offset + i, offset + j)
        # (causal, upper-left is right); about six (r, heads, dv) float32 temporaries.
        step = c - a if budget is None else max(1, int(budget * 2**20) // (24 * heads * dv))
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
    step = c - a if budget is None else max(1, int(budget * 2**20) // (5 * (offset + c)))
    for i in range(a, c, step):
        j = min(c, i + step)
        o = torch.nn.functional.scaled_dot_product_attention(
            query[:, :, i:j], key[:, :, :offset + j], value[:, :, :offset + j],
            attn_mask=causal_lower_right(j - i, offset + j), scale=scaling, enable_gqa=groups > 1)
        out[:, i:j] = o.transpose(1, 2)                                  # (batch, r, heads, dv)


def _rows_all_edit(call: CallPlan, plans) -> list[tuple[int, int]]:
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


def _causal_entries(a: int, c: int, offset: int) -> int:
    """(row, key) entries of causal rows [a, c) whose row i sees keys [0, offset + i]."""
    return (c - a) * (2 * offset + a + c + 1) // 2


def _complement(spans, q: int) -> list[tuple[int, int]]:
    """The rows of [0, q) outside the sorted disjoint ``spans``."""
    kept, at = [], 0
    for a, c in spans:
        if a > at:
            kept.append((at, a))
        at = c
    if at < q:
        kept.append((at, q))
    return kept


def _merges(query: torch.Tensor, value: torch.Tensor) -> bool:
    """Whether rows after a skipped span are merged from two kernel calls: float32 / float64 only
    (in half precision each call's output is rounded before the merge, a rounding stock makes
    once), and one head size for queries, keys and values (the kernel's requirement; MLA-style
    attention has wider queries and keys than values)."""
    return (query.dtype in (torch.float32, torch.float64) and query.shape[-1] == value.shape[-1]
            and _flash_lse() is not None)


def _worth_skipping(skip, q: int, offset: int, *, merged: bool) -> list[tuple[int, int]]:
    """The spans of ``skip`` the causal base (no mask) should leave out: the rows before the first
    skipped span run on the causal kernel, every kept row after it on the masked one. Skipping
    from span j on saves its entries and costs the extra of the masked rows after it; the best
    j wins, or nothing is skipped."""
    cost = _MASKED_ENTRY_COST["merged" if merged else "mask"]
    best, best_gain = len(skip), 0.0
    for j in range(len(skip)):
        later = skip[j:]
        saved = sum(_causal_entries(a, c, offset) for a, c in later)
        masked = sum(_causal_entries(a, c, offset) for a, c in _complement(later, q)
                     if c > later[0][0] or offset > 0)
        gain = saved - (cost - 1.0) * masked
        if gain > best_gain:
            best, best_gain = j, gain
    return list(skip[best:])


def _rows_to_skip(base: Callable, module, query, key, value, attention_mask, skip, *, offset: int,
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
        return _worth_skipping(skip, q, offset, merged=_merges(query, value)), False
    # A mask with a row per query row (padded batches, sliding windows), (batch or 1, heads or 1,
    # q, keys): stock runs every row through the masked kernel, so the kept rows cost the same
    # per entry in fewer, shorter calls with their rows of the mask, and every skipped row is saved.
    if attention_mask.dim() == 4 and attention_mask.shape[-2:] == (q, key.shape[2]):
        return list(skip), True
    return [], False


def _base_rows(base: Callable, module, query, key, value, attention_mask, skip, *, offset: int,
               scaling: float, softcap, dropout: float, budget: Optional[float], base_kwargs: dict) -> torch.Tensor:
    """The base attention's output on every query row, except the rows in ``skip`` where that is
    cheaper: they are left unset (the caller recomputes them). (batch, q, heads, dv)."""
    batch, heads, q, _ = query.shape                                     # (batch, heads, q, d)
    skip, masked = _rows_to_skip(base, module, query, key, value, attention_mask, skip, offset=offset,
                                 base_kwargs=base_kwargs)
    if not skip:
        return base(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                    softcap=softcap, **base_kwargs)[0]
    out = query.new_empty(batch, q, heads, value.shape[-1])               # (batch, q, heads, dv)
    for a, c in _complement(skip, q):
        keys = slice(0, offset + c)                   # the later keys are masked for these rows
        if masked:
            out[:, a:c] = base(module, query[:, :, a:c], key[:, :, keys], value[:, :, keys],
                               attention_mask[:, :, a:c, keys], dropout=0.0, scaling=scaling,
                               softcap=softcap, **base_kwargs)[0]      # (batch, r, heads, dv)
        elif a == 0 and offset == 0:                                   # square: the causal kernel
            out[:, :c] = base(module, query[:, :, :c], key[:, :, :c], value[:, :, :c], None,
                              dropout=0.0, scaling=scaling, softcap=softcap, **base_kwargs)[0]
        else:
            _causal_rows(out, query, key, value, a, c, offset=offset, scaling=scaling, budget=budget)
    return out


def _transition(module, query, key, value, attention_mask, call: CallPlan, state, *, scaling, softcap,
                dropout: float, base: Optional[Callable], want_weights: bool, **base_kwargs):
    """The base attention, then the edited rows of this call recomputed, edited and written back."""
    batch, heads, q, head_dim = query.shape                              # (batch, heads, q, d)
    k_len = key.shape[2]
    scaling = head_dim ** -0.5 if scaling is None else scaling
    sinks = _sinks(module, base_kwargs)
    grad = _needs_grad(query, key, value)
    every_row = base is None or want_weights
    # Absolute position of key index 0: caches that keep a window hold only the last keys.
    shift = call.offset + q - k_len if k_len <= call.offset + q else 0
    layer = state.schedule_index.get(module.layer_idx, module.layer_idx)
    budget = chunk_budget(state.max_chunk_mib, query.device, heads, k_len)
    plans = [layer_plan(call.config, layer, state.num_layers, row.length) if row.length > 0 else ()
             for row in call.rows]
    if base is not None:
        skip = (() if every_row or grad or dropout > 0 or shift else _rows_all_edit(call, plans))
        out = _base_rows(base, module, query, key, value, attention_mask, skip, offset=call.offset,
                         scaling=scaling, softcap=softcap, dropout=dropout, budget=budget,
                         base_kwargs=base_kwargs)                        # (batch, q, heads, dv)
        if grad:
            out = out.clone()                                            # written to below
    else:
        out = query.new_zeros(batch, q, heads, value.shape[-1])          # (batch, q, heads, dv)
    weights_out = query.new_zeros(batch, heads, q, k_len) if want_weights else None
    for b, (row, plan) in enumerate(zip(call.rows, plans)):
        if not plan and not every_row:
            continue
        # This call's real query rows, counted from the row's first real token.
        lo = max(call.offset, row.first) - row.first
        hi = min(call.offset + q, row.real_end) - row.first
        if every_row:
            segments = [(lo, hi)] if hi > lo else []
        else:
            segments = [(max(e.start, lo), min(e.end, hi)) for e in plan if max(e.start, lo) < min(e.end, hi)]
        mb = b if attention_mask is not None and attention_mask.shape[0] > 1 else 0
        for seg_start, seg_end in segments:
            step = rows_per_chunk(heads, seg_end, budget)
            for a in range(seg_start, seg_end, step):
                c = min(seg_end, a + step)                               # rows [a, c) see keys [0, c)
                qi = slice(row.first + a - call.offset, row.first + c - call.offset)
                k0 = max(row.first - shift, 0)                           # key index of the first column
                pad = k0 + shift - row.first                             # columns a windowed cache dropped
                ki = slice(k0, row.first + c - shift)
                mask_rows = None if attention_mask is None else attention_mask[mb, 0, qi, ki]   # (r, c - pad)
                w, total = row_weights(query[b, :, qi], key[b, :, ki], a - pad, mask_rows, scaling, softcap,
                                       sinks=sinks, inplace=not grad, max_chunk_mib=budget,
                                       scratch=state.scratch)                # (heads, r, c - pad)
                if grad:
                    w = w.clone()
                edits = [(e, max(e.start, a), min(e.end, c)) for e in plan if max(e.start, a) < min(e.end, c)]
                if edits:
                    full = w if pad == 0 else torch.cat([w.new_zeros(heads, c - a, pad), w], -1)   # (heads, r, c)
                    for edit, i0, i1 in edits:
                        apply_edit_(full[:, i0 - a:i1 - a], edit, first_row=i0,
                                    total=None if total is None else total[:, i0 - a:i1 - a])
                    w = full[..., pad:]
                    if mask_rows is not None:                            # keep windows / padding
                        hidden = ~bool_mask(mask_rows)
                        w = w.masked_fill_(hidden, 0.0) if not grad else w.masked_fill(hidden, 0.0)
                if dropout > 0:
                    w = torch.nn.functional.dropout(w, p=dropout, training=True)
                o = weighted_values(w, value[b, :, ki], max_chunk_mib=budget)          # (heads, r, dv)
                out[b, qi] = o.transpose(0, 1).to(out.dtype)                           # (r, heads, dv)
                if weights_out is not None:
                    weights_out[b, :, qi, ki] = w.to(weights_out.dtype)
    return out, weights_out


def _current_call(state, query: torch.Tensor, key: torch.Tensor,
                  attention_mask: Optional[torch.Tensor]) -> Optional[CallPlan]:
    """The plan of the call this layer runs in, or None when it edits nothing."""
    call = state.call
    batch, q = query.shape[0], query.shape[2]
    if call is not None and call.batch == batch and call.q_len == q:
        return call if call.config is not None else None
    # No plan from the decoder (a layer called on its own): a one-shot prefill is read from its mask.
    if state.active and q == key.shape[2] and q > 1:
        return plan_from_mask(state.config, attention_mask, batch, q)
    return None


def _make_attention(base_name: str) -> Callable:
    @torch.compiler.disable
    def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: Optional[torch.Tensor], dropout: float = 0.0,
                  scaling: Optional[float] = None, **kwargs) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        state = getattr(module, STATE_ATTR, None)
        base = _base_function(base_name, module)
        call = None if state is None else _current_call(state, query, key, attention_mask)
        want_weights = bool(kwargs.get("output_attentions", False))
        if call is None:
            if want_weights and base_name == "sdpa":
                # sdpa returns no weights; compute them plainly so output_attentions still works.
                return _plain_attention(module, query, key, value, attention_mask, dropout=dropout,
                                        scaling=scaling, **kwargs)
            return base(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        softcap = kwargs.pop("softcap", None)
        return _transition(module, query, key, value, attention_mask, call, state, scaling=scaling,
                           softcap=softcap, dropout=dropout, want_weights=want_weights,
                           base=None if state.full_matrix else base, **kwargs)

    attention.__name__ = f"attn_transition_{base_name}_attention"
    attention.__qualname__ = attention.__name__
    return attention


_REGISTERED = False


def register_attention(name: str, function: Callable[..., tuple], *, mask: str = "sdpa") -> None:
    """Register ``function`` as the attention implementation ``name`` in transformers, with the
    mask function of the stock implementation ``mask`` ("sdpa": boolean masks, "eager": additive)
    under the same name: without one, transformers would pass ``attention_mask=None``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, {"sdpa": sdpa_mask, "eager": eager_mask}[mask])


def register() -> None:
    """Register ``attn_transition_sdpa`` / ``attn_transition_eager`` (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    for base in BASE_IMPLEMENTATIONS:
        register_attention(implementation_name(base), _make_attention(base), mask=base)
    _REGISTERED = True

