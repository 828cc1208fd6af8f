"""Moving per-token scores between tokenisations of the same text through character spans (pure).

Rule (documented in docs/clues.md): every span is first *trimmed* to the non-whitespace
characters it covers (SentencePiece / byte-level BPE tokens carry their leading space;
a token that is only whitespace, or a special token with an empty span, trims to
nothing). A target unit's score is the mean of the scores of the source tokens whose
trimmed span overlaps the unit's trimmed span, weighted by the number of overlapping
characters. Source tokens without a score (NaN: the last token, truncated tokens) take
no part. A unit that no scored source token overlaps gets NaN.
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

__all__ = ["Span", "trim_span", "word_spans", "align_scores"]

Span = tuple[int, int]
_WORD = re.compile(r"\w+|[^\w\s]")


def trim_span(text: str, span: Sequence[int]) -> Optional[Span]:
    """``span`` without leading/trailing whitespace, or None if nothing is left."""
    start, end = int(span[0]), int(span[1])
    assert 0 <= start <= end <= len(text), f"span {span} outside a text of {len(text)} characters"
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def word_spans(text: str) -> list[Span]:
    """Words (runs of letters/digits/underscore) and single punctuation marks, in order."""
    return [(m.start(), m.end()) for m in _WORD.finditer(text)]


def align_scores(text: str, source_spans: Sequence[Sequence[int]], source_scores: Sequence[Optional[float]],
                 target_spans: Sequence[Sequence[int]]) -> list[float]:
    """Scores of ``target_spans`` from ``source_spans``/``source_scores``, by overlap-weighted mean."""
    assert len(source_spans) == len(source_scores), (len(source_spans), len(source_scores))
    sources = []
    for span, score in zip(source_spans, source_scores):
        trimmed = trim_span(text, span)
        if trimmed is None or score is None or not math.isfinite(float(score)):
            continue
        sources.append((trimmed[0], trimmed[1], float(score)))
    sources.sort()
    out = []
    for span in target_spans:
        trimmed = trim_span(text, span)
        if trimmed is None:
            out.append(math.nan)
            continue
        t0, t1 = trimmed
        weight = total = 0.0
        for s0, s1, score in sources:          # texts are short; a linear scan is clear and fast enough
            if s0 >= t1:
                break
            overlap = min(s1, t1) - max(s0, t0)
            if overlap > 0:
                weight += overlap
                total += overlap * score
        out.append(total / weight if weight > 0 else math.nan)
    return out
