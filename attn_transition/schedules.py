"""The pure math of attention transition: which rows each layer edits, and how.

Nothing here knows about transformers. A *plan* is the list of edits one layer makes
on one sequence of ``n`` real tokens (:func:`layer_plan`, from any registered schedule's
``config.plan``, checked here in one place); every edit covers a span of query rows, the
spans of one plan never overlap, and rows outside them are never touched. Positions
are counted from the sequence's first real token.

The two built-in schedules' edits (:class:`ClassicBlock`, :class:`SpanRedistribution`) and plans
(:func:`classic_plan`, :func:`sra_plan`) follow the project's specification of the two reference
schedules (``classic``, 2023; ``sra``, 2025); the README lists where we deliberately differ. Every
consumer goes through the protocol (:class:`~attn_transition.protocol.Edit`'s ``apply_``), never
through these types.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import torch

from .errors import ConfigError, InputError
from .protocol import Edit, TransitionConfig

if TYPE_CHECKING:
    from .config import ClassicConfig, SRAConfig

__all__ = [
    "ClassicBlock", "SpanRedistribution", "Edit", "Plan", "layer_plan", "classic_plan", "sra_plan", "plan_rows",
    "apply_plan", "apply_edit_", "classic_block_", "redistribute_", "token_spans", "real_spans", "reweight",
]


@dataclass(frozen=True)
class ClassicBlock(Edit):
    """Classic edit of query rows ``[start, end)`` over columns ``[0, end)`` (:func:`classic_block_`)."""

    start: int
    end: int
    threshold: float  # alpha / end
    beta: float
    strategy: str

    def apply_(self, rows: torch.Tensor, *, first_row: int, total: Optional[torch.Tensor] = None) -> torch.Tensor:
        return classic_block_(rows, self.start, self.end, self.threshold, self.beta, self.strategy,
                              first_row=first_row, total=total)


@dataclass(frozen=True)
class SpanRedistribution(Edit):
    """SRA edit: rows ``[start, end)`` move removed mass onto columns ``[target_start, target_end)``
    (:func:`redistribute_`)."""

    start: int
    end: int
    target_start: int
    target_end: int
    threshold: float
    strength: float

    def apply_(self, rows: torch.Tensor, *, first_row: int, total: Optional[torch.Tensor] = None) -> torch.Tensor:
        return redistribute_(rows, self.target_start, self.target_end, self.threshold, self.strength, total=total)


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


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def classic_plan(cfg: "ClassicConfig", layer: int, num_layers: int, n: int) -> tuple[Edit, ...]:
    """``ClassicConfig.plan``: ``intervals_per_layer`` consecutive blocks of query rows on layers
    ``1 .. L-3``, none on prompts shorter than ``min_length`` or where the block rounds to 0."""
    if n < cfg.min_length or not 1 <= layer <= num_layers - 3:
        return ()
    k = cfg.intervals_per_layer
    interval = n // (num_layers - 1 + k)
    interval -= interval % 5
    if interval == 0:
        return ()
    blocks = []
    for j in range(k):
        s = (layer + 1 + j) * interval
        e = s + interval
        blocks.append(ClassicBlock(s, e, cfg.alpha / e, cfg.beta, cfg.strategy))
    return tuple(blocks)


def sra_plan(cfg: "SRAConfig", layer: int, num_layers: int, n: int) -> tuple[Edit, ...]:
    """``SRAConfig.plan``: the inter span (layers ``0 .. L-2``) and the outer span on the last
    ``threshold_for(n)`` rows (layers ``1 .. L-2``)."""
    if not 0 <= layer <= num_layers - 2:
        return ()
    thr = cfg.threshold_for(n)
    begin = cfg.begin_length
    edits: list[Edit] = []
    if cfg.inter and n > begin + thr + 3:
        c = _ceil_div(n - begin - thr - 3, num_layers + 3)
        s = (layer + 3) * c + begin + 3
        e = min(s + c, n - thr)
        width = e - s
        if width > 0:
            edits.append(SpanRedistribution(s, e, s - 3 * width, s - 2 * width,
                                            cfg.elimi_factor_inter / (s - begin), cfg.strengthen_factor_inter))
    if cfg.outer and layer >= 1 and n > thr + 3:
        cur = n - thr
        c = _ceil_div(n - thr - 3, num_layers + 3)
        s = (layer + 2) * c + 3
        e = min(s + c, n - thr)
        if e > s and cur < n:
            edits.append(SpanRedistribution(cur, n, s, e, cfg.elimi_factor_outer / cur, cfg.strengthen_factor_outer))
    return tuple(edits)


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


@functools.lru_cache(maxsize=256)
def _below(threshold: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` value under ``threshold`` as ``dtype`` rounds it: ``x > _below(t)``
    holds exactly when ``x < t`` does not, as torch compares a ``dtype`` tensor with ``t``."""
    t = torch.tensor(threshold, dtype=dtype)
    return torch.nextafter(t, torch.tensor(float("-inf"), dtype=dtype)).item()


def _eliminate_(rows: torch.Tensor, threshold: float) -> torch.Tensor:
    """Zero, in place, the entries below ``threshold`` (``masked_fill_(rows < threshold, 0)``
    in one pass over memory instead of two)."""
    return torch.nn.functional.threshold_(rows, _below(threshold, rows.dtype), 0.0)


def _weights(like: torch.Tensor, strong: float, weak: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The two region weights as 0-d tensors of ``like``'s dtype (python scalars would make
    ``torch.where`` compute in the default float32 even on float64 rows)."""
    return like.new_tensor(strong), like.new_tensor(weak)


def classic_block_(rows: torch.Tensor, start: int, end: int, threshold: float, beta: float,
                   strategy: str = "adding", *, first_row: Optional[int] = None,
                   total: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Edit, in place, rows of one classic block ``[start, end)``.

    ``rows`` holds the contiguous query rows ``[first_row, first_row + r)`` of the block
    (all of them by default: ``first_row = start``), shape ``(..., r, C)`` float32, with at
    least ``first_row + r`` columns: a causal row sees no further, and columns it cannot
    see may be omitted. Every step is row-wise, so editing the rows in chunks gives the
    same result as editing them at once. ``total`` (``(..., r, 1)``, default 1) is each
    row's mass before the edit (less than 1 when a model's attention sink takes a share).
    """
    width = end - start
    first_row = start if first_row is None else first_row
    r = rows.shape[-2]
    assert start <= first_row and first_row + r <= end, \
        f"rows [{first_row}, {first_row + r}) are not inside the block [{start}, {end})"
    assert rows.shape[-1] >= first_row + r, f"rows {tuple(rows.shape)} need >= {first_row + r} columns"
    assert start == width or start >= 2 * width, f"classic block [{start}, {end}) needs start == I or start >= 2I"
    block = rows[..., :end]                                   # (..., r, <= e) view
    _eliminate_(block, threshold)                             # 1. elimination
    block[..., 0].mul_(0.5)                                   # 2. halve attention to the first token
    removed = (1.0 if total is None else total) - block.sum(-1, keepdim=True)   # 3. (..., r, 1)
    if strategy == "adding":
        if start != width:
            region = block[..., start - 2 * width:end - width]                     # (..., r, 2I)
            m = torch.where(region >= threshold, *_weights(region, 1.0, 0.01))
            a = beta * removed / m.sum(-1, keepdim=True)
            block[..., start - width:end - width] += 7 * a * m[..., width:]        # previous block: 7 shares
            block[..., start - 2 * width:end - 2 * width] += 3 * a * m[..., :width]  # the one before: 3 shares
        else:
            region = block[..., 0:end - width]                                     # (..., r, I)
            m = torch.where(region >= threshold, *_weights(region, 1.0, 0.001))
            a = beta * removed / m.sum(-1, keepdim=True)
            block[..., start - width:end - width] += 10 * a * m[..., -width:]
    else:
        assert strategy == "multi", f"strategy {strategy!r} (ClassicConfig validates it)"
        kept = block.sum(-1, keepdim=True)
        # A row whose every weight was eliminated stays zero instead of becoming NaN.
        block.mul_(torch.where(kept > 0, removed / kept.clamp_min(1e-30), 0.0))
    return rows


def redistribute_(rows: torch.Tensor, target_start: int, target_end: int, threshold: float,
                  strength: float, *, total: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SRA's ``redistribute``, in place, on rows of shape ``(..., r, C)`` (float32).

    Only (head, row) pairs with some weight in the target strictly above ``threshold``
    are edited: entries below the threshold are zeroed and the removed mass, times
    ``strength``, is added onto the target with weight 100 on strong entries and 5 on
    the others. Rows that are not selected come back bitwise unchanged. Row-wise, so
    any subset of rows can be edited on its own. ``total`` as in :func:`classic_block_`.
    """
    target = slice(target_start, target_end)
    # The target's weights before the edit, dense (the strided slice is read twice below). The
    # elimination leaves every weight >= threshold as it is, so "strong after" = "strong before".
    region = rows[..., target].contiguous()                            # (..., r, T)
    selected = (region > threshold).any(-1, keepdim=True)              # (..., r, 1)
    m = torch.where(region >= threshold, *_weights(rows, 100.0, 5.0))  # (..., r, T)
    # Eliminate below the threshold in selected rows; unselected rows are put back as they were
    # (a one-pass scalar threshold and a copy of the few unselected rows beat a per-row mask).
    unselected = (~selected[..., 0]).nonzero(as_tuple=True)            # indices of (..., r)
    kept = rows[unselected]                                            # (m, C) copy
    _eliminate_(rows, threshold)
    rows[unselected] = kept
    removed = (1.0 if total is None else total) - rows.sum(-1, keepdim=True)   # (..., r, 1)
    rows[..., target] += torch.where(selected, strength * removed / m.sum(-1, keepdim=True) * m, 0.0)
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
