"""Which documents to generate for: by prompt length (the seed's buckets) or the first N.

The seed kept documents whose prompts are about 800, 1200, 1600 and 1900 tokens long.
:func:`select_by_buckets` takes, in input order, up to ``per_bucket`` documents whose prompt
length lies within ``+-tolerance`` of a bucket (each in its nearest bucket), and stops reading
once every bucket is full; :func:`select_first` takes the first ``limit``. Both return a
:class:`Selection` of positions into the candidate list. The messages name the command's
options (``--buckets``, ``--per-bucket``, ``--bucket-tolerance``, ``--limit``): they suggest
what to pass next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from attn_transition.errors import UsageError

from .templates import PromptTemplate, lazy_prompt_lengths

__all__ = ["Selection", "check_buckets", "check_limit", "bucket_of", "select_by_buckets", "select_first",
           "select_documents", "empty_selection_message"]


@dataclass
class Selection:
    """Chosen positions (into the candidate list, in candidate order) and their buckets."""

    indices: list[int]
    buckets: list[Optional[int]]
    counts: dict[int, int] = field(default_factory=dict)
    scanned: int = 0
    observed: Optional[tuple[int, int]] = None   # shortest and longest prompt scanned


def check_buckets(buckets: Sequence[int], per_bucket: int, tolerance: float) -> None:
    """UsageError unless the buckets are distinct positive ints, ``per_bucket`` >= 1 and ``0 <= tolerance < 1``."""
    if not buckets:
        raise UsageError("--buckets needs at least one length, e.g. --buckets 800,1200")
    for b in buckets:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise UsageError(f"--buckets: every bucket must be a positive int (prompt tokens), got {b!r}")
    if len(set(buckets)) != len(buckets):
        raise UsageError(f"--buckets repeats a length: {list(buckets)}")
    if isinstance(per_bucket, bool) or not isinstance(per_bucket, int) or per_bucket < 1:
        raise UsageError(f"--per-bucket must be an int >= 1, got {per_bucket!r}")
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise UsageError(f"--bucket-tolerance must be a fraction in [0, 1), e.g. 0.1 for +-10%, got {tolerance!r}")


def bucket_of(length: int, buckets: Sequence[int], tolerance: float) -> Optional[int]:
    """The nearest bucket whose window ``[b (1 - tol), b (1 + tol)]`` holds ``length``."""
    inside = [b for b in buckets if b * (1 - tolerance) <= length <= b * (1 + tolerance)]
    return min(inside, key=lambda b: (abs(length - b), b)) if inside else None


def select_by_buckets(lengths: Iterable[int], buckets: Sequence[int], per_bucket: int,
                      tolerance: float) -> Selection:
    """Take, in input order, up to ``per_bucket`` documents per bucket; each document goes
    to its nearest bucket. ``lengths`` is consumed lazily and only until every bucket is full."""
    check_buckets(buckets, per_bucket, tolerance)
    counts = {b: 0 for b in buckets}
    sel = Selection([], [], counts)
    lo, hi = math.inf, -math.inf
    for i, n in enumerate(lengths):
        sel.scanned += 1
        lo, hi = min(lo, n), max(hi, n)
        b = bucket_of(n, buckets, tolerance)
        if b is not None and counts[b] < per_bucket:
            counts[b] += 1
            sel.indices.append(i)
            sel.buckets.append(b)
            if all(c >= per_bucket for c in counts.values()):
                break
    sel.observed = (int(lo), int(hi)) if sel.scanned else None
    return sel


def empty_selection_message(sel: Selection, buckets: Sequence[int], tolerance: float) -> str:
    """Why no document was selected, with the prompt lengths seen and what to change."""
    wanted = ", ".join(f"{b}" for b in buckets)
    if sel.observed is None:
        return "no documents to select from: the data is empty"
    lo, hi = sel.observed
    return (f"no document has a prompt length within +-{tolerance:.0%} of the buckets {wanted} tokens: the "
            f"{sel.scanned} prompts scanned are {lo}..{hi} tokens long; widen the window with "
            f"--bucket-tolerance, pick --buckets inside {lo}..{hi}, or select by count with --limit")


def check_limit(limit: Optional[int]) -> None:
    """UsageError unless ``limit`` is None or an int >= 1."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(f"--limit must be an int >= 1, got {limit!r}")


def select_first(n: int, limit: Optional[int]) -> Selection:
    """The first ``limit`` of ``n`` documents (all of them without a limit)."""
    check_limit(limit)
    k = n if limit is None else min(n, limit)
    return Selection(list(range(k)), [None] * k, {}, scanned=n)


def select_documents(docs: Sequence[dict], tokenizer: Any, template: PromptTemplate, *,
                     buckets: Optional[Sequence[int]], per_bucket: int, tolerance: float,
                     limit: Optional[int]) -> Selection:
    """By ``buckets`` (then the first ``limit`` of those) or, without buckets, the first ``limit``
    of ``docs``; UsageError when no document falls in any bucket."""
    if buckets is None:
        return select_first(len(docs), limit)
    selection = select_by_buckets(lazy_prompt_lengths(tokenizer, template, docs), buckets, per_bucket, tolerance)
    if not selection.indices:
        raise UsageError(empty_selection_message(selection, buckets, tolerance))
    if limit is not None:
        selection.indices = selection.indices[:limit]
        selection.buckets = selection.buckets[:limit]
    return selection
