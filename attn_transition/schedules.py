"""The pure math of attention transition: which rows each layer edits, and how.

Nothing here knows about transformers. A *plan* is the list of edits one layer makes
on one sequence of ``n`` real tokens (:func:`layer_plan`, from any registered schedule's
``config.plan``, checked here in one place); every edit covers a span of query rows, the
spans of one plan never overlap, and rows outside them are never touched. Positions
are counted from the sequence's first real token.

Each schedule is one module: :mod:`.classic` (2023) and :mod:`.sra` (2025) hold their config, their
plan, their edit and its math (the README lists where we deliberately differ from the reference);
a schedule of one's own is one module too (docs/design.md, "Writing a schedule"). Every consumer
goes through the protocol (:class:`~attn_transition.protocol.Edit`'s ``apply_``, the config's
``plan``), never through these types; :class:`ClassicBlock`, :class:`SpanRedistribution` and their
in-place functions are re-exported here for the tests that check them against the specification.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .classic import ClassicBlock, classic_block_
from .errors import ConfigError, InputError
from .protocol import Edit, TransitionConfig
from .sra import SpanRedistribution, redistribute_

__all__ = [
    "ClassicBlock", "SpanRedistribution", "Edit", "Plan", "layer_plan", "plan_rows",
    "apply_plan", "apply_edit_", "classic_block_", "redistribute_", "token_spans", "real_spans", "reweight",
]


class Plan(tuple):
    """One layer's edits on one prompt: a tuple of :class:`Edit` that also carries the prompt
    length ``n`` it was planned for (what :func:`layer_plan` returns), so that a consumer such as
    :func:`attn_transition.kernel.transition_rows` can check the plan is for its sequence, and
    whether its schedule is ``continuous`` (its edits may be applied to their rows in chunks;
    False: each edit needs all its rows at once). It compares, hashes and iterates as the plain
    tuple of its edits."""

    n: int
    continuous: bool

    def __new__(cls, edits: Sequence[Edit] = (), n: int = 0, continuous: bool = True) -> "Plan":
        plan = super().__new__(cls, edits)
        plan.n = n
        plan.continuous = continuous
        return plan

    def __reduce__(self):
        return (Plan, (tuple(self), self.n, self.continuous))


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_plan(config: TransitionConfig, edits: object, layer: int, num_layers: int, n: int) -> tuple[Edit, ...]:
    """``edits`` as a tuple, or a ConfigError naming the schedule: a sequence of :class:`Edit` with
    int bounds inside ``[0, n)``, sorted by ``start``, not overlapping."""
    where = (f"schedule {config.schedule!r} ({type(config).__qualname__}.plan(layer={layer}, "
             f"num_layers={num_layers}, n={n}))")
    if not isinstance(edits, (tuple, list)):
        raise ConfigError(f"{where} returned {type(edits).__name__}; it must return a tuple or list of "
                          f"attn_transition.Edit", field="config")
    end = 0
    for edit in edits:
        if not isinstance(edit, Edit):
            raise ConfigError(f"{where} returned {edit!r:.80}, not an attn_transition.Edit", field="config")
        start, stop = getattr(edit, "start", None), getattr(edit, "end", None)
        if not (_is_int(start) and _is_int(stop) and 0 <= start < stop <= n):
            raise ConfigError(f"{where}: the edit {edit!r:.80} covers rows [{start!r}, {stop!r}), which must be "
                              f"ints with 0 <= start < end <= n", field="config")
        if start < end:
            raise ConfigError(f"{where}: the edit on rows [{start}, {stop}) starts before the previous edit ends "
                              f"({end}); the edits must be sorted and must not overlap", field="config")
        end = stop
    return tuple(edits)


@functools.lru_cache(maxsize=4096)
def _cached_plan(config: TransitionConfig, layer: int, num_layers: int, n: int) -> Plan:
    edits = _check_plan(config, config.plan(layer, num_layers, n), layer, num_layers, n)
    return Plan(edits, n, type(config).continuous)


def layer_plan(config: TransitionConfig, layer_idx: int, num_layers: int, n: int) -> Plan:
    """The edits layer ``layer_idx`` of ``num_layers`` makes on a prompt of ``n`` real tokens.

    ``config.plan(...)``, checked (edits inside ``[0, n)``, sorted, not overlapping) and cached,
    as a :class:`Plan` (a tuple of edits carrying ``n`` and the schedule's ``continuous``); an
    empty one means the layer is left exactly as it is (short prompt, layer outside the schedule,
    or a block that rounds to zero width).

    Raises:
        ConfigError: ``config`` is not a schedule config, or its ``plan`` returned a bad plan
            (naming the schedule).
        InputError: ``layer_idx``, ``num_layers`` or ``n`` is not an int (``n >= 0``, ``num_layers >= 1``).
    """
    if not isinstance(config, TransitionConfig):
        raise ConfigError(f"config must be a schedule config (attn_transition.TransitionConfig), got "
                          f"{type(config).__name__}", field="config")
    for name, value, low in (("layer_idx", layer_idx, 0), ("num_layers", num_layers, 1), ("n", n, 0)):
        if not _is_int(value) or value < low:
            raise InputError(f"layer_plan: {name} must be an int >= {low}, got {value!r}", field=name)
    return _cached_plan(config, layer_idx, num_layers, n)


def plan_rows(plan: Sequence[Edit]) -> list[int]:
    """Query rows a plan touches, in plan order (the order ``apply_plan`` expects)."""
    rows: list[int] = []
    for edit in plan:
        rows.extend(range(edit.start, edit.end))
    return rows


def apply_edit_(rows: torch.Tensor, edit: Edit, *, first_row: Optional[int] = None,
                total: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Apply one edit in place to some of its rows.

    ``rows``: ``(..., r, C)`` float32 holding the contiguous rows ``[first_row, first_row + r)``
    of the edit (default: all of them, ``first_row = edit.start``), columns counted from the
    first real token; at least ``first_row + r`` columns (a causal row sees no further; no
    edit reads or writes a column beyond its own row). ``total``: see :func:`classic_block_`.
    """
    first_row = edit.start if first_row is None else first_row
    assert edit.start <= first_row and first_row + rows.shape[-2] <= edit.end, \
        (tuple(rows.shape), first_row, edit)
    return edit.apply_(rows, first_row=first_row, total=total)


def apply_plan(rows: torch.Tensor, plan: Sequence[Edit]) -> torch.Tensor:
    """Apply a layer plan in place to the gathered rows ``plan_rows(plan)``.

    ``rows``: ``(..., len(plan_rows(plan)), n)`` float32, columns counted from the first
    real token.
    """
    offset = 0
    for edit in plan:
        width = edit.end - edit.start
        apply_edit_(rows[..., offset:offset + width, :], edit)         # (..., width, n) view
        offset += width
    assert offset == rows.shape[-2], f"plan covers {offset} rows but {rows.shape[-2]} were given"
    return rows


def token_spans(real: torch.Tensor) -> list[tuple[int, int, bool]]:
    """For each batch row of a ``(batch, n)`` real-token mask (bool or 0/1), ``(first, count,
    contiguous)``: the position of its first real token (0 for a row without one), how many real
    tokens it has, and whether they are one run (packed or interleaved padding is not). One
    device sync for the whole batch; the one padding-span computation of the core and the
    transformers integration."""
    real = real.to(torch.bool)                                                 # (batch, n)
    n = real.shape[1]
    count = real.sum(-1)                                                       # (batch,)
    first = torch.where(count > 0, real.int().argmax(-1), 0)                   # (batch,)
    last = n - 1 - real.flip(-1).int().argmax(-1)                              # (batch,)
    contiguous = (count == 0) | (last - first + 1 == count)                    # (batch,)
    rows = torch.stack([first, count, contiguous.long()]).tolist()            # (3, batch) -> lists
    return [(f, c, bool(k)) for f, c, k in zip(*rows)]


def real_spans(real: torch.Tensor) -> list[Optional[tuple[int, int]]]:
    """For each batch row of a boolean ``(batch, n)`` real-token mask, ``(first, count)``
    (:func:`token_spans`; ``(0, 0)`` for a row without real tokens).

    ``None`` marks a row whose real tokens are not one contiguous run (packed or
    interleaved padding); such rows are left unedited.
    """
    return [(first, count) if contiguous else None for first, count, contiguous in token_spans(real)]


def _check_reweight(weights, layer_idx, num_layers, config, padding_mask, allowed) -> None:
    """InputError / ConfigError naming the argument of :func:`reweight` that is wrong."""
    if not isinstance(weights, torch.Tensor) or weights.dim() != 4 or weights.shape[-1] != weights.shape[-2]:
        shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise InputError(f"reweight: weights must be a (batch, heads, n, n) tensor, got {shape}", field="weights")
    if not weights.is_floating_point():
        raise InputError(f"reweight: weights must be floating point (post-softmax probabilities), got "
                         f"{weights.dtype}", field="weights")
    if not _is_int(num_layers) or num_layers < 1:
        raise InputError(f"reweight: num_layers must be an int >= 1, got {num_layers!r}", field="num_layers")
    if not _is_int(layer_idx) or not 0 <= layer_idx < num_layers:
        raise InputError(f"reweight: layer_idx must be an int in [0, {num_layers - 1}] (num_layers={num_layers}), "
                         f"got {layer_idx!r}", field="layer_idx")
    if not isinstance(config, TransitionConfig):
        raise ConfigError(f"reweight: config must be a schedule config (attn_transition.TransitionConfig), got "
                          f"{type(config).__name__}", field="config")
    batch, _, n, _ = weights.shape
    if padding_mask is not None and (not isinstance(padding_mask, torch.Tensor)
                                     or tuple(padding_mask.shape) != (batch, n)):
        shape = tuple(padding_mask.shape) if isinstance(padding_mask, torch.Tensor) else type(padding_mask).__name__
        raise InputError(f"reweight: padding_mask must be (batch, n) = {(batch, n)}, got {shape}",
                         field="padding_mask")
    if padding_mask is not None and not bool(((padding_mask == 0) | (padding_mask == 1)).all()):
        raise InputError("reweight: padding_mask must hold 1/True on real tokens and 0/False on padding "
                         "(an additive mask of 0 / -inf is not a padding mask)", field="padding_mask")
    if allowed is not None:
        try:
            ok = torch.broadcast_shapes(tuple(allowed.shape), tuple(weights.shape)) == tuple(weights.shape)
        except (RuntimeError, AttributeError):
            ok = False
        if not ok:
            shape = tuple(allowed.shape) if isinstance(allowed, torch.Tensor) else type(allowed).__name__
            raise InputError(f"reweight: allowed must broadcast to weights {tuple(weights.shape)}, got {shape}",
                             field="allowed")
        if allowed.dtype != torch.bool:
            raise InputError(f"reweight: allowed must be a bool mask (True where a row may look), got {allowed.dtype}; "
                             f"an additive mask (0 where allowed, -inf or the dtype's minimum elsewhere, transformers' "
                             f"format) converts with allowed=(mask == 0)", field="allowed")


# How far from 1 a row's mass over its allowed keys may be: rounding, not a different object (a
# bfloat16 row's sum is within 2**-8 of its exact value; pre-softmax scores are nowhere near).
_MASS_TOLERANCE = 2e-2


def _check_distributions(weights: torch.Tensor, spans: Sequence[Optional[tuple[int, int]]],
                         allowed: Optional[torch.Tensor]) -> None:
    """InputError unless every real row is a distribution over its allowed real keys: no negative
    entry, mass within :data:`_MASS_TOLERANCE` of 1 (the edit moves mass assuming it sums to 1)."""
    for b, span in enumerate(spans):
        if span is None or span[1] == 0:
            continue
        first, count = span
        real = slice(first, first + count)
        w = weights[b, :, real, real].detach()                          # (heads, count, count)
        if allowed is not None:
            w = w * allowed[b, :, real, real]
        worst = (w.sum(-1, dtype=torch.float64) - 1.0).abs().max().item()
        if bool((w < 0).any()) or not worst <= _MASS_TOLERANCE:
            raise InputError(f"reweight: weights must be post-softmax probabilities, each real row summing to 1 over "
                             f"its allowed keys with no negative entry (batch row {b}: a sum is {worst:.3g} from 1"
                             f"{', negative entries' if bool((w < 0).any()) else ''}); pre-softmax scores are not "
                             f"edited", field="weights")


def reweight(weights: torch.Tensor, layer_idx: int, num_layers: int, config: TransitionConfig,
             *, padding_mask: Optional[torch.Tensor] = None,
             allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Edited copy of one layer's post-softmax prefill attention.

    Args:
        weights: ``(batch, heads, n, n)`` causal attention probabilities: every real row sums to 1
            over its allowed keys (within rounding) and no entry is negative.
        layer_idx: The layer, ``0 .. num_layers - 1``.
        num_layers: Number of decoder layers of the model.
        config: A schedule's config (:class:`~attn_transition.protocol.TransitionConfig`: ``ClassicConfig``,
            ``SRAConfig`` or a registered one).
        padding_mask: Optional ``(batch, n)``, 1/True on real tokens, 0/False on padding. Each row
            then uses its own length, counted from its first real token.
        allowed: Optional bool mask broadcastable to ``weights`` (e.g. a sliding window), True
            where a row may look; edited rows are multiplied by it so no weight lands where the
            layer may not look.

    Returns:
        A new tensor of the same shape and dtype; edits are computed in float32 (float64 weights
        in float64). Differentiable: with ``requires_grad`` weights (and autograd on) the result
        carries their graph, the eliminations and region weights acting as fixed masks (the edit
        is piecewise linear in the kept weights).

    Raises:
        InputError: a tensor of the wrong shape or type, a layer outside ``[0, num_layers)``, an
            ``allowed`` that is not bool (an additive mask), or rows that are not distributions.
        ConfigError: ``config`` is not a schedule config.
    """
    _check_reweight(weights, layer_idx, num_layers, config, padding_mask, allowed)
    batch, _, n, _ = weights.shape
    spans = [(0, n)] * batch if padding_mask is None else real_spans(padding_mask)
    if allowed is not None:
        allowed = allowed.expand_as(weights)                           # (batch, heads, n, n) view
    _check_distributions(weights, spans, allowed)
    dtype = torch.float64 if weights.dtype == torch.float64 else torch.float32
    out = weights.to(dtype, copy=True)                                 # (batch, heads, n, n), keeps the graph
    for b, span in enumerate(spans):
        if span is None:
            continue
        first, count = span
        plan = layer_plan(config, layer_idx, num_layers, count)
        if not plan:
            continue
        rows = torch.tensor(plan_rows(plan), device=out.device) + first
        cols = slice(first, first + count)
        sub = out[b][:, rows, cols]                                   # (heads, r, count) copy
        apply_plan(sub, plan)
        if allowed is not None:
            sub = sub * allowed[b][:, rows, cols]
        out[b][:, rows, cols] = sub
    return out.to(weights.dtype)
