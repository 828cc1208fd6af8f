"""What every line plot of the evaluation shares, so that no series hides under another: a marker
and a line style per series (distinct for up to eight series), a small x offset per series, a
legend font that reads at the saved size, and a note naming the series that coincide.

Pure functions of the data (no matplotlib import): the plots of :mod:`.bench.report` and
:mod:`.report.plots` call them."""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["MARKERS", "LINESTYLES", "LEGEND_FONT", "NOTE_FONT", "series_style", "offsets", "coinciding",
           "coincidence_note"]

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
LEGEND_FONT = 9
NOTE_FONT = 8


def series_style(index: int) -> dict[str, Any]:
    """``marker`` and ``linestyle`` keywords of series ``index``: the markers of the first eight
    series differ, and so do the line styles of the first four; open markers, so a marker drawn
    over another of the same place leaves both visible."""
    return {"marker": MARKERS[index % len(MARKERS)], "linestyle": LINESTYLES[index % len(LINESTYLES)],
            "markerfacecolor": "none", "markeredgewidth": 1.3}


def offsets(count: int, step: float) -> list[float]:
    """Offsets of ``count`` series, ``step`` apart and centred on 0 (``[-step, 0, step]`` for 3)."""
    return [step * (k - (count - 1) / 2) for k in range(count)]


def _finite(y: Any) -> bool:
    return y is not None and not (isinstance(y, float) and math.isnan(y))


def _same(a: Sequence[Any], b: Sequence[Any], tol: float) -> bool:
    """Whether two series are equal at every x (a missing value only matches a missing value) and
    have at least one value."""
    if len(a) != len(b) or not any(_finite(y) for y in a):
        return False
    return all((not _finite(x) and not _finite(y)) or (_finite(x) and _finite(y) and abs(x - y) <= tol)
               for x, y in zip(a, b))


def coinciding(series: Sequence[tuple[str, Sequence[Any]]], tol: float = 1e-9) -> list[list[str]]:
    """The groups (two or more names, in order) of series whose values are equal at every x.

    ``series`` is ``[(name, ys), ...]``; ``None`` and NaN are missing values."""
    groups: list[list[str]] = []
    placed: set[int] = set()
    for i, (name, ys) in enumerate(series):
        if i in placed:
            continue
        group = [name]
        for j in range(i + 1, len(series)):
            if j not in placed and _same(ys, series[j][1], tol):
                group.append(series[j][0])
                placed.add(j)
        if len(group) > 1:
            groups.append(group)
    return groups


def coincidence_note(groups: Sequence[Sequence[str]]) -> str:
    """``"lines coincide: a = b; c = d"`` for the groups of :func:`coinciding` ("" for none)."""
    return "lines coincide: " + "; ".join(" = ".join(g) for g in groups) if groups else ""
