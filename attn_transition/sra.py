"""The 2025 schedule, ``sra``: span redistribution on a band of middle rows (inter) and on the
last rows (outer), both strengthening an earlier span.

One module holds the whole schedule: its config (:class:`SRAConfig`, registered under ``sra``),
which rows of which layer it edits (:meth:`SRAConfig.plan`), the edit
(:class:`SpanRedistribution`) and the in-place math on its rows (:func:`redistribute_`).
The formulas follow the project's specification of the reference schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from .protocol import Edit, TransitionConfig, check_bool, check_number, register_schedule
from .rowops import eliminate_, region_weights

__all__ = ["SRAConfig", "SpanRedistribution", "redistribute_"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@register_schedule
@dataclass(frozen=True)
class SRAConfig(TransitionConfig):
    """The 2025 schedule ("sra"): an inter step on a band of middle rows and an outer
    step on the last ``threshold_len`` rows, both strengthening an earlier span.

    Args:
        begin_length: Tokens at the start that the inter step never targets. An int >= 0.
        threshold_len: Number of final rows edited by the outer step (the tail that is
            usually the question). An int >= 0.
        elimi_factor_inter: Elimination factor of the inter step; threshold is
            ``elimi_factor_inter / (s - begin_length)``. A number >= 0.
        elimi_factor_outer: Elimination factor of the outer step; threshold is
            ``elimi_factor_outer / (n - threshold_len)``. A number >= 0.
        strengthen_factor_inter: Multiplier of the mass moved by the inter step. A number >= 0.
        strengthen_factor_outer: Multiplier of the mass moved by the outer step. A number >= 0.
        inter: Run the inter step.
        outer: Run the outer step (layers >= 1).
        dynamic_threshold: Use ``threshold_len = n // dyna_div`` for each input instead
            of the fixed ``threshold_len``.
        dyna_div: Divisor of the dynamic threshold. An int >= 1.
    """

    begin_length: int = 100
    threshold_len: int = 200
    elimi_factor_inter: float = 0.5
    elimi_factor_outer: float = 0.3
    strengthen_factor_inter: float = 4.0
    strengthen_factor_outer: float = 4.0
    inter: bool = True
    outer: bool = True
    dynamic_threshold: bool = False
    dyna_div: int = 20

    schedule: ClassVar[str] = "sra"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_number(owner, "begin_length", self.begin_length, low=0, integer=True)
        check_number(owner, "threshold_len", self.threshold_len, low=0, integer=True)
        for name in ("elimi_factor_inter", "elimi_factor_outer",
                     "strengthen_factor_inter", "strengthen_factor_outer"):
            check_number(owner, name, getattr(self, name), low=0.0)
        for name in ("inter", "outer", "dynamic_threshold"):
            check_bool(owner, name, getattr(self, name))
        check_number(owner, "dyna_div", self.dyna_div, low=1, integer=True)

    def threshold_for(self, n: int) -> int:
        """The tail length used for an input of ``n`` real tokens."""
        return n // self.dyna_div if self.dynamic_threshold else self.threshold_len

    def plan(self, layer: int, num_layers: int, n: int) -> tuple[Edit, ...]:
        """The inter span (layers ``0 .. L-2``) and the outer span on the last ``threshold_for(n)``
        rows (layers ``1 .. L-2``)."""
        if not 0 <= layer <= num_layers - 2:
            return ()
        thr = self.threshold_for(n)
        begin = self.begin_length
        edits: list[Edit] = []
        if self.inter and n > begin + thr + 3:
            c = _ceil_div(n - begin - thr - 3, num_layers + 3)
            s = (layer + 3) * c + begin + 3
            e = min(s + c, n - thr)
            width = e - s
            if width > 0:
                edits.append(SpanRedistribution(s, e, s - 3 * width, s - 2 * width,
                                                self.elimi_factor_inter / (s - begin), self.strengthen_factor_inter))
        if self.outer and layer >= 1 and n > thr + 3:
            cur = n - thr
            c = _ceil_div(n - thr - 3, num_layers + 3)
            s = (layer + 2) * c + 3
            e = min(s + c, n - thr)
            if e > s and cur < n:
                edits.append(SpanRedistribution(cur, n, s, e, self.elimi_factor_outer / cur,
                                                self.strengthen_factor_outer))
        return tuple(edits)


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
    m = torch.where(region >= threshold, *region_weights(rows, 100.0, 5.0))  # (..., r, T)
    # Eliminate below the threshold in selected rows; unselected rows are put back as they were
    # (a one-pass scalar threshold and a copy of the few unselected rows beat a per-row mask).
    unselected = (~selected[..., 0]).nonzero(as_tuple=True)            # indices of (..., r)
    kept = rows[unselected]                                            # (m, C) copy
    eliminate_(rows, threshold)
    rows[unselected] = kept
    removed = (1.0 if total is None else total) - rows.sum(-1, keepdim=True)   # (..., r, 1)
    rows[..., target] += torch.where(selected, strength * removed / m.sum(-1, keepdim=True) * m, 0.0)
    return rows
