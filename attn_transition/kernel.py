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
- ``edits``: the layer's plan, ``attn_transition.schedules.layer_plan(config, layer, num_layers, n)``
  (a :class:`~attn_transition.schedules.Plan`, which carries its ``n``).

Every argument is checked once per call, before anything is written, with an ``InputError``
naming it (:func:`_check_inputs`: Python comparisons on shapes, dtypes and numbers; the one tensor
read, the finiteness of ``sinks``, is done on the CPU only, where it is no device sync).

The rows are computed in chunks sized by a :class:`Budget`; every step of both schedules is
per (head, query row), so the result does not depend on the chunking. Every chunk of a call
can reuse one :class:`Scratch` buffer.

Module contents, top to bottom: the memory model (:class:`Budget`), the reused buffer
(:class:`Scratch`), float32 inside autocast (:func:`explicit_precision`), explicit attention
(:func:`attention_weights`, :func:`weighted_values`), the rows a plan touches
(:func:`edited_spans`), the argument checks, and the driver (:func:`transition_rows`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .errors import ConfigError, InputError
from .protocol import Edit
from .schedules import apply_edit_

__all__ = ["BYTES_PER_ENTRY", "Budget", "Scratch", "explicit_precision", "attention_weights", "weighted_values",
           "bool_mask", "edited_spans", "needs_grad", "transition_rows"]

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


def explicit_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which the explicit rows are computed in float32 as documented: inside
    ``torch.autocast`` on ``device`` a matmul would run in the autocast dtype, so autocast is
    switched off there; outside autocast, a no-op (one flag read)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """float32 at least (float64 stays float64, e.g. for finite-difference checks)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def bool_mask(mask: torch.Tensor) -> torch.Tensor:
    """Boolean view of an attention mask (bool, or additive float with the dtype's minimum)."""
    return mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2


def attention_weights(q_rows: torch.Tensor, k: torch.Tensor, start: int, mask_rows: Optional[torch.Tensor],
                      scaling: float, softcap: Optional[float] = None, *, sinks: Optional[torch.Tensor] = None,
                      inplace: bool = True, budget: Budget = Budget(), scratch: Optional[Scratch] = None):
    """Post-softmax float32 weights of contiguous query rows over their keys (float64 inputs in
    float64; inside ``torch.autocast`` too).

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
    if torch.is_autocast_enabled(q_rows.device.type):                     # float32 as documented
        with explicit_precision(q_rows.device):
            return attention_weights(q_rows, k, start, mask_rows, scaling, softcap, sinks=sinks, inplace=inplace,
                                     budget=budget, scratch=scratch)
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
    """(heads, r, n) @ (kv_heads, n, dv) -> (heads, r, dv) in float32 (inside ``torch.autocast``
    too), without repeating v."""
    if torch.is_autocast_enabled(weights.device.type):
        with explicit_precision(weights.device):
            return weighted_values(weights, v, budget=budget)
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


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd records through ``tensors`` here: then nothing computed from them may be
    edited in place (one rule for the kernel and both integrations)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _fail(message: str, field: str) -> None:
    raise InputError(f"transition_rows: {message}", field=field)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _describe(x: object) -> str:
    return f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__


def _check_tensor(t: object, field: str, dims: int, what: str) -> torch.Tensor:
    """``t`` as a floating-point tensor of ``dims`` dimensions, or an InputError naming ``field``."""
    if not isinstance(t, torch.Tensor) or t.dim() != dims or not t.is_floating_point():
        _fail(f"{field} must be a floating-point {what} tensor, got {_describe(t)}", field)
    return t


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype the kernel computes in for ``t``: float64 stays float64, the rest is float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _check_edits(edits: object, prompt_length: Optional[int], real_end: int) -> None:
    """The plan is a sequence of edits inside the prompt it was planned for, and that prompt is
    this call's: a plan from :func:`~attn_transition.schedules.layer_plan` carries its ``n``."""
    if not isinstance(edits, (tuple, list)) or not all(isinstance(e, Edit) for e in edits):
        _fail(f"edits must be the layer's plan, attn_transition.schedules.layer_plan(config, layer, num_layers, n) "
              f"(a sequence of attn_transition.Edit), got {edits!r:.80}", "edits")
    planned = getattr(edits, "n", None)
    if prompt_length is not None:
        if not _is_int(prompt_length) or prompt_length < 0:
            _fail(f"prompt_length must be an int >= 0 (the sequence's prompt length), got {prompt_length!r}",
                  "prompt_length")
        if planned is not None and planned != prompt_length:
            _fail(f"edits were planned for a prompt of n={planned} tokens, this sequence's prompt_length is "
                  f"{prompt_length}: plan with layer_plan(config, layer, num_layers, {prompt_length})", "edits")
    elif planned is not None and real_end > planned:
        _fail(f"edits were planned for a prompt of n={planned} tokens, but the rows reach position {real_end}: "
              f"plan for this prompt's length, or pass prompt_length= where rows go past the prompt", "edits")
    n = planned if prompt_length is None else prompt_length
    for e in edits:
        if not (0 <= e.start < e.end) or (n is not None and e.end > n):
            _fail(f"edits: rows [{e.start}, {e.end}) are not inside the prompt [0, {n})", "edits")


def _check_whole_edits(edits: Sequence[Edit], row_start: int, real_end: int) -> None:
    """A plan that is not continuous (``Plan.continuous`` False: its schedule's edits need all
    their rows at once) must hold every row of each edit it touches in this call."""
    if getattr(edits, "continuous", True):
        return
    for e in edits:
        if max(e.start, row_start) < min(e.end, real_end) and not (row_start <= e.start and e.end <= real_end):
            _fail(f"edits: the schedule is not continuous (each edit needs all its rows at once) and this call "
                  f"holds rows [{max(row_start, 0)}, {real_end}) of the edit on [{e.start}, {e.end}); give the "
                  f"prompt in one piece", "edits")


def _check_inputs(query: object, key: object, value: object, edits: object, out: object, *, row_start: object,
                  key_start: object, real_end: object, scaling: object, softcap: object, sinks: object,
                  mask: object, window: object, budget: object, scratch: object, dropout: object,
                  weights_out: object, prompt_length: object) -> None:
    """InputError naming the argument of :func:`transition_rows` that is wrong. Python comparisons
    on shapes, dtypes and numbers only (no tensor is read: no device sync), once per call."""
    q = _check_tensor(query, "query", 3, "(heads, R, d)")
    k = _check_tensor(key, "key", 3, "(kv_heads, C, d)")
    v = _check_tensor(value, "value", 3, "(kv_heads, C, dv)")
    heads, rows, d = q.shape
    kv_heads, keys, _ = k.shape
    dv = v.shape[-1]
    if kv_heads == 0 or heads % kv_heads:
        _fail(f"query heads {heads} are not a multiple of key heads {kv_heads}", "key")
    if k.shape[-1] != d:
        _fail(f"key {tuple(k.shape)} must have the query's head dim d={d}: (kv_heads, C, {d})", "key")
    if tuple(v.shape[:2]) != (kv_heads, keys):
        _fail(f"value {tuple(v.shape)} must be (kv_heads={kv_heads}, C={keys}, dv)", "value")
    for name, t in (("key", k), ("value", v)):
        if t.device != q.device:
            _fail(f"{name} is on {t.device}, query on {q.device}: give them on one device", name)
        if _compute_dtype(t) != _compute_dtype(q):
            _fail(f"{name} is {t.dtype} and query {q.dtype}: float64 inputs must all be float64", name)
    for name, x in (("row_start", row_start), ("key_start", key_start)):
        if not _is_int(x):
            _fail(f"{name} must be an int (a prompt position), got {x!r}", name)
    if real_end is not None and not _is_int(real_end):
        _fail(f"real_end must be an int (a prompt position) or None, got {real_end!r}", "real_end")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (rows, heads, dv) or not out.is_floating_point():
        _fail(f"out must be a floating-point (R={rows}, heads={heads}, dv={dv}) tensor, got {_describe(out)}", "out")
    if out.device != q.device:
        _fail(f"out is on {out.device}, query on {q.device}", "out")
    if weights_out is not None and (not isinstance(weights_out, torch.Tensor) or not weights_out.is_floating_point()
                                    or tuple(weights_out.shape) != (heads, rows, keys)):
        _fail(f"weights_out must be a floating-point (heads={heads}, R={rows}, C={keys}) tensor or None, got "
              f"{_describe(weights_out)}", "weights_out")
    if not _is_number(scaling) or scaling <= 0:
        _fail(f"scaling must be a finite number > 0 (the layer's softmax scale), got {scaling!r}", "scaling")
    if softcap is not None and (not _is_number(softcap) or softcap <= 0):
        _fail(f"softcap must be a finite number > 0 or None, got {softcap!r}", "softcap")
    if window is not None and (not _is_int(window) or window < 1):
        _fail(f"window must be an int >= 1 (keys a row sees, itself included) or None, got {window!r}", "window")
    if mask is not None:
        if window is not None:
            _fail("give mask or window, not both (a mask already says which keys each row sees)", "mask")
        if not isinstance(mask, torch.Tensor) or not (mask.dtype == torch.bool or mask.is_floating_point()) \
                or mask.dim() not in (2, 3) or tuple(mask.shape[-2:]) != (rows, keys) \
                or (mask.dim() == 3 and mask.shape[0] not in (1, heads)):
            _fail(f"mask must be a bool or additive float (R={rows}, C={keys}) or (heads={heads} or 1, R, C) "
                  f"tensor, got {_describe(mask)}", "mask")
        if mask.device != q.device:
            _fail(f"mask is on {mask.device}, query on {q.device}", "mask")
    if sinks is not None:
        if not isinstance(sinks, torch.Tensor) or not sinks.is_floating_point() or tuple(sinks.shape) != (heads,):
            _fail(f"sinks must be a floating-point (heads={heads},) tensor of logits or None, got "
                  f"{_describe(sinks)}", "sinks")
        # A (heads,) reduction; read only on the CPU, where it is no device sync.
        if sinks.device.type == "cpu" and not bool(torch.isfinite(sinks).all()):
            _fail("sinks must be finite logits", "sinks")
    if not isinstance(budget, Budget):
        _fail(f"budget must be a Budget, got {type(budget).__name__}", "budget")
    if scratch is not None and not isinstance(scratch, Scratch):
        _fail(f"scratch must be a Scratch or None, got {type(scratch).__name__}", "scratch")
    if not _is_number(dropout) or not 0 <= dropout < 1:
        _fail(f"dropout must be a number in [0, 1), got {dropout!r}", "dropout")
    end = row_start + rows if real_end is None else min(real_end, row_start + rows)
    _check_edits(edits, prompt_length, end)
    _check_whole_edits(edits, row_start, end)
    if key_start + keys < end:
        _fail(f"rows up to position {end} need keys up to it; keys cover [{key_start}, {key_start + keys})", "key")


def _check_keys_reach(spans: list[tuple[int, int]], key_start: int, window: Optional[int], masked: bool) -> None:
    """Without a mask a row sees every key before it (or the last ``window``): they must be given."""
    if masked or not spans:
        return
    need = 0 if window is None else max(0, spans[0][0] - window + 1)
    if key_start > need:
        _fail(f"key_start {key_start}: the row at position {spans[0][0]} sees keys from position {need}; give "
              f"them, or a mask", "key_start")


def transition_rows(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, edits: Sequence[Edit], *,
                    row_start: int, scaling: float, out: torch.Tensor, key_start: int = 0,
                    real_end: Optional[int] = None, every_row: bool = False,
                    softcap: Optional[float] = None, sinks: Optional[torch.Tensor] = None,
                    mask: Optional[torch.Tensor] = None, window: Optional[int] = None,
                    budget: Budget = Budget(), scratch: Optional[Scratch] = None, dropout: float = 0.0,
                    weights_out: Optional[torch.Tensor] = None,
                    prompt_length: Optional[int] = None) -> list[tuple[int, int]]:
    """Recompute, edit and write one sequence's edited rows of one layer.

    Args:
        query: (heads, R, d), rows at prompt positions ``[row_start, row_start + R)``.
        key / value: (kv_heads, C, d) / (kv_heads, C, dv), at prompt positions
            ``[key_start, key_start + C)``; they reach at least the last row computed (and,
            without a mask, start where the first row computed starts to look).
        edits: the layer's plan for this sequence's prompt length,
            ``layer_plan(config, layer, num_layers, n)`` (it carries its ``n``); each edit is applied
            through its ``apply_`` (:class:`~attn_transition.protocol.Edit`). A plan whose schedule is
            not ``continuous`` has each edit's rows computed in one piece (beyond the budget if need
            be), and every edit it touches must lie wholly inside this call's rows.
        row_start / key_start: prompt positions of ``query[:, 0]`` and ``key[:, 0]``.
        scaling / softcap / sinks: the layer's own (scaling and softcap finite numbers > 0;
            sinks: (heads,) logits).
        out: (R, heads, dv); the rows computed are written into it, nothing else is touched.
        real_end: end (prompt position) of the sequence's real rows; default ``row_start + R``.
        every_row: compute every real row explicitly, edited or not (full-matrix mode, or
            when the weights are returned).
        mask: (R, C), or per head (heads or 1, R, C), bool or additive mask of these rows over
            these keys (padding, windows, a family's per-head dynamic mask), or None: causal,
            limited to ``window`` keys (an int >= 1: row p sees keys ``(p - window, p]``) if given.
        budget / scratch: chunk size and the reused buffer (see :class:`Budget`, :class:`Scratch`).
        dropout: attention dropout on the final weights (train mode).
        weights_out: (heads, R, C) float, receives the weights of the rows computed.
        prompt_length: the sequence's prompt length ``n``, checked against the one ``edits`` was
            planned for. Without it, rows past the plan's ``n`` are refused (a plan for a shorter
            prompt); give it where the rows go past the prompt (generated rows that are not edited).

    The explicit rows are computed in float32 (float64 inputs in float64), inside
    ``torch.autocast`` too; ``out`` receives them in its own dtype.

    Returns:
        The prompt-position spans that were written, sorted.

    Raises:
        InputError: an argument of the wrong type, shape, dtype, device or range, naming it; checked
            once per call from shapes and numbers (no tensor is read except CPU ``sinks``); a plan
            that is not continuous on a call that holds only part of an edit's rows.
    """
    _check_inputs(query, key, value, edits, out, row_start=row_start, key_start=key_start, real_end=real_end,
                  scaling=scaling, softcap=softcap, sinks=sinks, mask=mask, window=window, budget=budget,
                  scratch=scratch, dropout=dropout, weights_out=weights_out, prompt_length=prompt_length)
    rows = query.shape[1]
    real_end = row_start + rows if real_end is None else min(real_end, row_start + rows)
    first = max(row_start, 0)
    if every_row:
        spans = [(first, real_end)] if real_end > first else []
    else:
        spans = edited_spans(edits, first, real_end)
    _check_keys_reach(spans, key_start, window, mask is not None)
    with explicit_precision(query.device):
        _write_rows(query, key, value, edits, spans, row_start=row_start, key_start=key_start, scaling=scaling,
                    softcap=softcap, sinks=sinks, mask=mask, window=window, budget=budget, scratch=scratch,
                    dropout=dropout, out=out, weights_out=weights_out)
    return spans


def _write_rows(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, edits: Sequence[Edit],
                spans: list[tuple[int, int]], *, row_start: int, key_start: int, scaling: float,
                softcap: Optional[float], sinks: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                window: Optional[int], budget: Budget, scratch: Optional[Scratch], dropout: float,
                out: torch.Tensor, weights_out: Optional[torch.Tensor]) -> None:
    """The rows of ``spans`` of :func:`transition_rows` (its arguments, checked), chunk by chunk."""
    heads = query.shape[0]
    grad = needs_grad(query, key, value)
    pad = max(key_start, 0)                      # prompt columns [0, pad) were dropped by a window
    whole = not getattr(edits, "continuous", True)   # each edit's rows in one piece, whatever the budget
    for span_start, span_end in spans:
        # Chunks of equal size within the budget (65 rows in chunks of 32 would leave a chunk of one).
        pieces = 1 if whole else -(-(span_end - span_start) // budget.rows(heads, span_end - pad))
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
