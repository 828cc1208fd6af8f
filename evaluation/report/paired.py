"""The report's settings (:class:`ReportOptions`) and the statistics every section shares:
JSON-ready means and paired comparisons with bootstrap intervals (:func:`mean_entry`,
:func:`paired_entry`; NaN written as ``null``) and the cross-fitted choice of one config
(:func:`crossfit_best`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from attn_transition.errors import UsageError

from ..stats import compare_paired, mean_ci

__all__ = ["ReportOptions", "num", "mean_entry", "paired_entry", "crossfit_best"]


@dataclass(frozen=True)
class ReportOptions:
    n_boot: int = 10000
    confidence: float = 0.95
    seed: int = 0
    folds: int = 5
    length_buckets: int = 3                          # equal-count buckets ...
    length_edges: Optional[tuple[float, ...]] = None  # ... unless inner edges are given
    rouge: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.n_boot, int) or self.n_boot < 100:
            raise UsageError(f"--n-boot must be an integer >= 100, got {self.n_boot!r}")
        if not 0.5 <= self.confidence < 1.0:
            raise UsageError(f"--confidence must be in [0.5, 1), got {self.confidence!r}")
        if not isinstance(self.folds, int) or self.folds < 2:
            raise UsageError(f"--folds must be an integer >= 2, got {self.folds!r}")
        if not isinstance(self.length_buckets, int) or self.length_buckets < 1:
            raise UsageError(f"--length-buckets must be an integer >= 1, got {self.length_buckets!r}")
        if self.length_edges is not None and not all(math.isfinite(e) for e in self.length_edges):
            raise UsageError(f"--length-edges must be finite numbers, got {self.length_edges!r}")


def num(x: float) -> Optional[float]:
    """``x`` as a float for JSON; NaN (and None) as None."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def mean_entry(values: np.ndarray, o: ReportOptions) -> dict:
    """``Mean`` of the report schema: n, mean and its bootstrap interval."""
    m, lo, hi = mean_ci(values, n_boot=o.n_boot, confidence=o.confidence, seed=o.seed)
    return {"n": int(values.size), "mean": num(m), "ci": [num(lo), num(hi)]}


def paired_entry(plain: np.ndarray, values: np.ndarray, o: ReportOptions) -> dict:
    """``Cmp`` of the report schema: :func:`mean_entry` of ``values`` plus the paired difference
    to ``plain`` (same documents) with its interval and win/tie/loss."""
    c = compare_paired(plain, values, n_boot=o.n_boot, confidence=o.confidence, seed=o.seed)
    out = mean_entry(values, o)
    out.update({"diff": num(c.diff), "diff_ci": [num(c.ci_low), num(c.ci_high)], "wins": c.wins, "ties": c.ties,
                "losses": c.losses})
    return out


def crossfit_best(configs: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Per document the score of a config chosen without that document: documents are split
    into ``folds`` random folds; for each fold, the config with the best mean on the other
    folds is used (ties -> first column). ``configs`` is (n_docs, n_configs)."""
    n = configs.shape[0]
    assert configs.ndim == 2 and n >= folds, f"need (docs >= folds, configs), got {configs.shape} and folds={folds}"
    fold_of = np.random.default_rng(seed).permutation(n) % folds        # (n_docs,)
    picked = np.empty(n)
    chosen: list[int] = []
    for f in range(folds):
        test = fold_of == f
        best = int(np.argmax(configs[~test].mean(axis=0)))
        chosen.append(best)
        picked[test] = configs[test, best]
    return picked, chosen
