"""Paired statistics shared by the benchmark and the judge report (pure Python + numpy).

Everything compares a treatment with a baseline *on the same items*: the mean paired
difference with a percentile bootstrap interval, win/tie/loss counts, and the exact
McNemar test for binary outcomes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = ["PairedComparison", "paired_bootstrap", "win_tie_loss", "mcnemar_exact", "compare_paired",
           "mean_ci", "wilson_interval"]


@dataclass(frozen=True)
class PairedComparison:
    n: int
    mean_baseline: float
    mean_treatment: float
    diff: float            # mean(treatment - baseline)
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int
    mcnemar_p: float | None  # only for binary outcomes

    def as_dict(self) -> dict:
        return asdict(self)


def _pairs(baseline: Sequence[float], treatment: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(baseline, dtype=float)
    b = np.asarray(treatment, dtype=float)
    assert a.shape == b.shape and a.ndim == 1, f"paired samples must be 1-D and equal length: {a.shape} vs {b.shape}"
    return a, b


def paired_bootstrap(baseline: Sequence[float], treatment: Sequence[float], *, n_boot: int = 10000,
                     confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``treatment - baseline`` and its percentile bootstrap interval (items resampled)."""
    a, b = _pairs(baseline, treatment)
    d = b - a
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return float(d.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def win_tie_loss(baseline: Sequence[float], treatment: Sequence[float]) -> tuple[int, int, int]:
    a, b = _pairs(baseline, treatment)
    return int((b > a).sum()), int((b == a).sum()), int((b < a).sum())


def mcnemar_exact(only_baseline_right: int, only_treatment_right: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (binomial, p = 1/2)."""
    n = only_baseline_right + only_treatment_right
    if n == 0:
        return 1.0
    k = min(only_baseline_right, only_treatment_right)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def compare_paired(baseline: Sequence[float], treatment: Sequence[float], *, n_boot: int = 10000,
                   confidence: float = 0.95, seed: int = 0) -> PairedComparison:
    a, b = _pairs(baseline, treatment)
    diff, lo, hi = paired_bootstrap(a, b, n_boot=n_boot, confidence=confidence, seed=seed)
    wins, ties, losses = win_tie_loss(a, b)
    binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    p = mcnemar_exact(losses, wins) if binary else None
    return PairedComparison(n=int(a.size), mean_baseline=float(a.mean()) if a.size else float("nan"),
                            mean_treatment=float(b.mean()) if b.size else float("nan"), diff=diff,
                            ci_low=lo, ci_high=hi, wins=wins, ties=ties, losses=losses, mcnemar_p=p)


def mean_ci(values: Sequence[float], *, n_boot: int = 10000, confidence: float = 0.95,
            seed: int = 0) -> tuple[float, float, float]:
    """Mean of one sample and its percentile bootstrap interval."""
    v = np.asarray(values, dtype=float)
    return paired_bootstrap(np.zeros_like(v), v, n_boot=n_boot, confidence=confidence, seed=seed)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (good for accuracies near 0 or 1)."""
    if n == 0:
        return float("nan"), float("nan")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
