"""A schedule written outside the package, registered through the public API only
(``attn_transition.register_schedule``, ``TransitionConfig``, ``Edit``): docs/design.md's
"Writing a schedule" example.

``shift``: on layers >= 1, each of the last ``rows`` query rows moves ``fraction`` of its mass,
spread evenly, onto the first ``first`` columns (the prompt's first tokens). No threshold: the
edit is linear in the weights, so two computational paths agree to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

import attn_transition as at


@dataclass(frozen=True)
class ShiftToStart(at.Edit):
    """Rows ``[start, end)`` move ``fraction`` of their mass onto columns ``[0, first)``."""

    start: int
    end: int
    fraction: float
    first: int

    def apply_(self, rows: torch.Tensor, *, first_row: int, total: Optional[torch.Tensor] = None) -> torch.Tensor:
        mass = rows.sum(-1, keepdim=True)                        # (..., r, 1)
        rows.mul_(1.0 - self.fraction)
        rows[..., :self.first] += self.fraction * mass / self.first   # (..., r, first)
        return rows


@at.register_schedule
@dataclass(frozen=True)
class ShiftConfig(at.TransitionConfig):
    """Move ``fraction`` of each of the last ``rows`` rows' mass onto the first ``first`` columns.

    Args:
        fraction: Share of each edited row's mass that moves, in [0, 1].
        first: Columns that receive it (the prompt's first tokens), an int >= 1.
        rows: How many final rows are edited, an int >= 1.
    """

    fraction: float = 0.25
    first: int = 4
    rows: int = 32

    schedule: ClassVar[str] = "shift"

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) \
                or not 0.0 <= self.fraction <= 1.0:
            raise at.ConfigError(f"ShiftConfig.fraction must be a number in [0, 1], got {self.fraction!r}",
                                 field="fraction")
        for name in ("first", "rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise at.ConfigError(f"ShiftConfig.{name} must be an int >= 1, got {value!r}", field=name)

    def plan(self, layer: int, num_layers: int, n: int) -> tuple[ShiftToStart, ...]:
        start = max(n - self.rows, self.first)            # every edited row sees the first columns
        if layer < 1 or start >= n:
            return ()
        return (ShiftToStart(start, n, float(self.fraction), self.first),)


@at.register_schedule
@dataclass(frozen=True)
class WholeShiftConfig(ShiftConfig):
    """The same edit, declared not continuous: an integration must hand it whole prompts."""

    schedule: ClassVar[str] = "wholeshift"
    continuous: ClassVar[bool] = False
