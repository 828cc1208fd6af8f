"""Contrast of two models' attention profiles on the same texts: large minus small (pure).

Both profiles are moved onto one set of *units* of the text (see :mod:`.align`):

* ``small`` (default): the small model's own tokens. The small model's scores are used
  as they are; the large model's are aligned. With the default models the small model
  is also the model fine-tuned, so the units are the training tokenizer's tokens.
* ``large``: the large model's tokens (the mirror image).
* ``words``: words and punctuation marks (``\\w+`` runs and single marks); both aligned.

The two models' numbers are not on one scale (different depths, head counts and
attention entropy), so each profile is normalised *per text* before subtracting
(``normalise``), both over the *same* units: those with a finite score in both profiles
that are not special tokens (the BOS attention sink, the last token, truncated tokens and
units one tokenizer does not cover are left out on both sides and get a NaN diff):

* ``rank`` (default): percentile rank in [0, 1] (ties share their mean rank). Scale-free
  and robust to the attention sink (the first token takes a large share of attention in
  both models, which would dominate a z-score);
* ``log-zscore``: z-score of log(profile); ``zscore``: z-score of the raw profile;
* ``none``: raw difference (only meaningful for models of the same family and size).

``diff = norm(large) - norm(small)``; ``rank`` orders the units by ``diff``, 0 = the unit
the large model attends to most *relative to* the small one; units without a finite
diff have rank None.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from attn_transition.errors import UsageError

from .align import align_scores, word_spans
from .profile import check_profile_record

__all__ = ["NORMALISERS", "UNITS", "normalise", "descending_rank", "contrast_record", "contrast_records"]

NORMALISERS = ("rank", "log-zscore", "zscore", "none")
UNITS = ("small", "large", "words")
RECORD_VERSION = 1


def _finite(values: Sequence[Optional[float]]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def normalise(values: Sequence[Optional[float]], method: str) -> list[float]:
    """Per-text normalisation over the finite entries; NaN (or None) stays NaN."""
    if method not in NORMALISERS:
        raise UsageError(f"--normalise must be one of {', '.join(NORMALISERS)}, got {method!r}")
    x = _finite(values)
    ok = np.isfinite(x)
    out = np.full_like(x, np.nan)
    m = int(ok.sum())
    if m == 0:
        return out.tolist()
    v = x[ok]
    if method == "none":
        out[ok] = v
    elif method == "rank":
        order = np.argsort(v, kind="stable")
        ranks = np.empty(m)
        ranks[order] = np.arange(m, dtype=float)
        for value in np.unique(v):                         # ties share their mean rank
            same = v == value
            ranks[same] = ranks[same].mean()
        out[ok] = ranks / (m - 1) if m > 1 else 0.5
    else:
        if method == "log-zscore":
            v = np.log(np.maximum(v, 1e-12))
        std = v.std()
        out[ok] = (v - v.mean()) / std if std > 0 else 0.0
    return out.tolist()


def descending_rank(scores: Sequence[Optional[float]]) -> list[Optional[int]]:
    """0 for the largest finite score, 1 for the next...; ties by position; None for NaN."""
    x = _finite(scores)
    finite = [i for i in range(len(x)) if math.isfinite(x[i])]
    finite.sort(key=lambda i: (-x[i], i))
    rank: list[Optional[int]] = [None] * len(x)
    for r, i in enumerate(finite):
        rank[i] = r
    return rank


def _unit_texts(text: str, spans: Sequence[Sequence[int]]) -> list[str]:
    return [text[int(a):int(b)] for a, b in spans]


def contrast_record(small: dict[str, Any], large: dict[str, Any], *, units: str = "small",
                    method: str = "rank") -> dict[str, Any]:
    """One text's contrast from its two profile records (as written by ``clues profile``)."""
    if units not in UNITS:
        raise UsageError(f"--units must be one of {', '.join(UNITS)}, got {units!r}")
    text = small["text"]
    if large["text"] != text:
        raise UsageError(f"mismatched profile files: record {small.get('index')} holds different texts in the "
                         f"two files; profile the same input file with both models")
    if units == "words":
        spans = [list(s) for s in word_spans(text)]
        special = [False] * len(spans)
        small_scores = align_scores(text, small["offsets"], small["profile"], spans)
        large_scores = align_scores(text, large["offsets"], large["profile"], spans)
        tokens = _unit_texts(text, spans)
    else:
        own, other = (small, large) if units == "small" else (large, small)
        spans = [list(s) for s in own["offsets"]]
        special = list(own["special"])
        tokens = list(own["tokens"])
        own_scores = [math.nan if v is None else float(v) for v in own["profile"]]
        other_scores = align_scores(text, other["offsets"], other["profile"], spans)
        small_scores, large_scores = (own_scores, other_scores) if units == "small" else (other_scores, own_scores)
    shared = [not sp and math.isfinite(a) and math.isfinite(b)       # one unit set for both normalisations
              for sp, a, b in zip(special, small_scores, large_scores)]
    small_norm = normalise([a if ok else math.nan for a, ok in zip(small_scores, shared)], method)
    large_norm = normalise([b if ok else math.nan for b, ok in zip(large_scores, shared)], method)
    diff = [b - a for a, b in zip(small_norm, large_norm)]          # NaN propagates
    return {"kind": "contrast", "version": RECORD_VERSION, "index": small.get("index"),
            "text_sha": small.get("text_sha"), "text": text, "models": {"small": small.get("model"),
                                                                      "large": large.get("model")},
            "units": units, "normalise": method, "tokens": tokens, "spans": spans, "special": special,
            "small": small_scores, "large": large_scores, "small_norm": small_norm, "large_norm": large_norm,
            "diff": diff, "rank": descending_rank(diff)}


def contrast_records(small_records: Sequence[dict[str, Any]], large_records: Sequence[dict[str, Any]], *,
                     units: str = "small", method: str = "rank", where: tuple[str, str] = ("small", "large")
                     ) -> list[dict[str, Any]]:
    """Contrast two profile files record by record; UsageError if they do not cover the same texts."""
    if len(small_records) != len(large_records):
        raise UsageError(f"mismatched profile files: {where[0]} has {len(small_records)} texts, {where[1]} has "
                         f"{len(large_records)}; profile the same input file with both models")
    out = []
    for position, (a, b) in enumerate(zip(small_records, large_records)):
        check_profile_record(a, where[0])
        check_profile_record(b, where[1])
        if a.get("text_sha") != b.get("text_sha") or a["text"] != b["text"]:
            raise UsageError(f"mismatched profile files: text {position} differs between {where[0]} and "
                             f"{where[1]}; profile the same input file with both models")
        out.append(contrast_record(a, b, units=units, method=method))
    return out
