"""The 2023 schedule, ``classic``: block-by-block elimination and transition.

One module holds the whole schedule: its config (:class:`ClassicConfig`, registered under
``classic``), which rows of which layer it edits (:meth:`ClassicConfig.plan`), the edit
(:class:`ClassicBlock`) and the in-place math on a block of rows (:func:`classic_block_`).
The formulas follow the project's specification of the reference schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from .errors import ConfigError, did_you_mean
from .protocol import Edit, TransitionConfig, check_number, register_schedule
from .rowops import eliminate_, region_weights

__all__ = ["ClassicConfig", "ClassicBlock", "classic_block_"]


@register_schedule
@dataclass(frozen=True)
class ClassicConfig(TransitionConfig):
    """The 2023 schedule ("classic"): block-by-block elimination and transition.

    Layer ``l`` (``1 <= l <= L-3``) edits ``intervals_per_layer`` blocks of query rows;
    inside a block, weights below ``alpha / e`` are zeroed and the removed mass moves onto
    the two previous blocks of context (``strategy="adding"``) or rescales the row
    (``strategy="multi"``). See ``docs`` in the README for the exact formulas.

    Args:
        alpha: Elimination strength; the threshold of a block ending at row ``e`` is
            ``alpha / e``. A number > 0. The paper's grid used 0.5, 1, 1.5.
        beta: Fraction of the removed mass moved onto earlier context. A number >= 0.
            The paper's grid used 0.1 ... 1.5.
        intervals_per_layer: Number of consecutive blocks edited per layer (the
            reference's ``one_layer_inter_use``). An int >= 1.
        strategy: ``"adding"`` (move mass onto the two previous blocks) or ``"multi"``
            (rescale the surviving weights of each row).
        min_length: Prompts shorter than this many real tokens are left unchanged.
            An int >= 0.
    """

    alpha: float = 0.5
    beta: float = 0.1
    intervals_per_layer: int = 2
    strategy: str = "adding"
    min_length: int = 400

    schedule: ClassVar[str] = "classic"
    STRATEGIES: ClassVar[tuple[str, ...]] = ("adding", "multi")

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_number(owner, "alpha", self.alpha, low=0.0, low_open=True)
        check_number(owner, "beta", self.beta, low=0.0)
        check_number(owner, "intervals_per_layer", self.intervals_per_layer, low=1, high=64, integer=True)
        check_number(owner, "min_length", self.min_length, low=0, integer=True)
        if self.strategy not in self.STRATEGIES:
            extra = did_you_mean(str(self.strategy), self.STRATEGIES)
            raise ConfigError(
                f"{owner}.strategy must be one of {list(self.STRATEGIES)}, got {self.strategy!r}{extra}")

    def plan(self, layer: int, num_layers: int, n: int) -> tuple[Edit, ...]:
        """``intervals_per_layer`` consecutive blocks of query rows on layers ``1 .. L-3``, none on
        prompts shorter than ``min_length`` or where the block rounds to 0."""
        if n < self.min_length or not 1 <= layer <= num_layers - 3:
            return ()
        k = self.intervals_per_layer
        interval = n // (num_layers - 1 + k)
        interval -= interval % 5
        if interval == 0:
            return ()
        blocks = []
        for j in range(k):
            s = (layer + 1 + j) * interval
            e = s + interval
            blocks.append(ClassicBlock(s, e, self.alpha / e, self.beta, self.strategy))
        return tuple(blocks)


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
    eliminate_(block, threshold)                              # 1. elimination
    block[..., 0].mul_(0.5)                                   # 2. halve attention to the first token
    removed = (1.0 if total is None else total) - block.sum(-1, keepdim=True)   # 3. (..., r, 1)
    if strategy == "adding":
        if start != width:
            region = block[..., start - 2 * width:end - width]                     # (..., r, 2I)
            m = torch.where(region >= threshold, *region_weights(region, 1.0, 0.01))
            a = beta * removed / m.sum(-1, keepdim=True)
            block[..., start - width:end - width] += 7 * a * m[..., width:]        # previous block: 7 shares
            block[..., start - 2 * width:end - 2 * width] += 3 * a * m[..., :width]  # the one before: 3 shares
        else:
            region = block[..., 0:end - width]                                     # (..., r, I)
            m = torch.where(region >= threshold, *region_weights(region, 1.0, 0.001))
            a = beta * removed / m.sum(-1, keepdim=True)
            block[..., start - width:end - width] += 10 * a * m[..., -width:]
    else:
        assert strategy == "multi", f"strategy {strategy!r} (ClassicConfig validates it)"
        kept = block.sum(-1, keepdim=True)
        # A row whose every weight was eliminated stays zero instead of becoming NaN.
        block.mul_(torch.where(kept > 0, removed / kept.clamp_min(1e-30), 0.0))
    return rows
