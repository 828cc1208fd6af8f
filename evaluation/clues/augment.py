"""Token-dropout augmentation (pure: numpy's seeded generator, no model).

A text is cut into *units* (tokens or words, each a character span). Units that are
special tokens, or that hold nothing but whitespace and punctuation, are *protected*:
never dropped, and not ranked. The other units are ranked by a score, highest first
(rank 0 = most attended); units without a score (NaN) come after all scored ones, ties
go by position. Unit of rank r is dropped with probability

    p(r) = alpha * (1 - exp(-beta * r))

so the top-ranked units (the clues) are almost always kept and low-ranked ones are
dropped with a probability approaching alpha. A dropped unit's characters become
spaces, except punctuation characters inside it, which stay (so no punctuation mark is
ever removed, also where a token glues a mark to a word).

Modes: ``random`` (every droppable unit with the same probability: ``alpha``, or with
``match_rate`` the per-text mean of p(r), so it removes as many units on average as the
ranked modes), ``attention`` (rank by one model's profile) and ``contrast`` (rank by the
large-minus-small difference). Copy k of text i uses the generator seeded with
``(seed, i, k)``: the output does not depend on processing order, and the modes share
their uniform draws (common random numbers).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np

from attn_transition.errors import UsageError, did_you_mean

__all__ = ["MODES", "AugmentConfig", "drop_probability", "is_protected", "droppable_ranks", "probabilities",
           "apply_drops", "augment_text", "ScoredText", "scored_texts_from_records", "augment_rows"]

MODES = ("random", "attention", "contrast")
ATTENTION_OF = ("large", "small")


@dataclass(frozen=True)
class AugmentConfig:
    """``mode``: random / attention / contrast; ``alpha`` in [0, 1]; ``beta`` >= 0; ``copies``:
    augmented copies per text (the original is kept as well); ``attention_of``: which model's
    profile ranks units in ``attention`` mode (with a contrast file); ``match_rate``: in
    ``random`` mode, drop with the per-text mean of p(r) instead of the flat ``alpha``."""

    mode: str = "contrast"
    alpha: float = 0.7
    beta: float = 0.1
    copies: int = 10
    seed: int = 0
    attention_of: str = "large"
    match_rate: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            extra = did_you_mean(self.mode, MODES)
            raise UsageError(f"augmentation mode {self.mode!r} is unknown{extra}; modes: {', '.join(MODES)}")
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise UsageError(f"alpha must be in [0, 1] (it is the largest drop probability), got {self.alpha}")
        if not (isinstance(self.beta, (int, float)) and self.beta >= 0.0 and math.isfinite(self.beta)):
            raise UsageError(f"beta must be a finite number >= 0 (how fast p(r) approaches alpha), got {self.beta}")
        if not (isinstance(self.copies, int) and self.copies >= 0):
            raise UsageError(f"copies must be an integer >= 0 (augmented copies per text), got {self.copies}")
        if self.attention_of not in ATTENTION_OF:
            raise UsageError(f"attention_of must be one of {', '.join(ATTENTION_OF)}, got {self.attention_of!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def drop_probability(rank: int, alpha: float, beta: float) -> float:
    """p(r) = alpha * (1 - exp(-beta * r))."""
    assert rank >= 0, f"rank must be >= 0, got {rank}"
    return alpha * (1.0 - math.exp(-beta * rank))


def is_protected(unit: str, special: bool = False) -> bool:
    """Special tokens and units made only of whitespace and punctuation are never dropped."""
    return special or all(ch.isspace() or unicodedata.category(ch).startswith("P") for ch in unit)


def droppable_ranks(scores: Sequence[Optional[float]], protected: Sequence[bool]) -> list[Optional[int]]:
    """Rank of each droppable unit by descending score (NaN last, ties by position); None if protected."""
    assert len(scores) == len(protected), (len(scores), len(protected))

    def key(i: int) -> tuple[int, float, int]:
        s = scores[i]
        finite = s is not None and math.isfinite(float(s))
        return (0, -float(s), i) if finite else (1, 0.0, i)

    order = sorted((i for i in range(len(scores)) if not protected[i]), key=key)
    ranks: list[Optional[int]] = [None] * len(scores)
    for r, i in enumerate(order):
        ranks[i] = r
    return ranks


def probabilities(ranks: Sequence[Optional[int]], config: AugmentConfig) -> list[float]:
    """Per-unit drop probability under ``config`` (0 for protected units)."""
    ranked = [drop_probability(r, config.alpha, config.beta) if r is not None else 0.0 for r in ranks]
    if config.mode != "random":
        return ranked
    droppable = [r is not None for r in ranks]
    if config.match_rate:
        rate = sum(ranked) / max(1, sum(droppable))
    else:
        rate = config.alpha
    return [rate if d else 0.0 for d in droppable]


def apply_drops(text: str, spans: Sequence[Sequence[int]], drop: Sequence[bool]) -> str:
    """``text`` with the non-punctuation characters of each dropped span turned into spaces."""
    chars = list(text)
    for (start, end), gone in zip(spans, drop):
        if gone:
            for k in range(int(start), int(end)):
                if not unicodedata.category(chars[k]).startswith("P"):
                    chars[k] = " "
    return "".join(chars)


@dataclass(frozen=True)
class ScoredText:
    """A text cut into units (spans), with special flags and one score per unit (None: no score)."""

    text: str
    spans: list[tuple[int, int]]
    special: list[bool]
    scores: list[Optional[float]]

    def __post_init__(self) -> None:
        assert len(self.spans) == len(self.special) == len(self.scores), \
            (len(self.spans), len(self.special), len(self.scores))


def augment_text(item: ScoredText, config: AugmentConfig, index: int) -> list[tuple[str, int]]:
    """``config.copies`` augmented versions of one text, each with its number of dropped units."""
    units = [item.text[a:b] for a, b in item.spans]
    protected = [is_protected(u, s) for u, s in zip(units, item.special)]
    scores = item.scores if config.mode != "random" else [None] * len(units)
    ranks = droppable_ranks(scores, protected)
    p = np.array(probabilities(ranks, config))
    out = []
    for copy in range(1, config.copies + 1):
        rng = np.random.default_rng([config.seed, index, copy])
        drop = rng.random(len(units)) < p
        out.append((apply_drops(item.text, item.spans, drop.tolist()), int(drop.sum())))
    return out


def _score_column(record: dict[str, Any], config: AugmentConfig) -> list[Optional[float]]:
    if config.mode == "random":
        return [None] * len(record.get("spans") or record.get("offsets"))
    if record.get("kind") == "profile":
        if config.mode == "contrast":
            raise UsageError("mode 'contrast' needs a contrast file (attn-transition clues contrast), "
                             "not a single model's profile file")
        return list(record["profile"])
    if record.get("kind") == "contrast":
        return list(record["diff"] if config.mode == "contrast" else record[config.attention_of])
    raise UsageError(f"a scores record has kind {record.get('kind')!r}; pass a file written by "
                     f"'attn-transition clues profile' or 'clues contrast'")


def scored_texts_from_records(texts: Sequence[str], records: Sequence[dict[str, Any]], config: AugmentConfig,
                              where: str = "scores file") -> list[ScoredText]:
    """Pair input texts with the records of a profile/contrast file; UsageError if they do not match."""
    if len(texts) != len(records):
        raise UsageError(f"mismatched {where}: {len(records)} records for {len(texts)} input texts; compute it "
                         f"from the same input file")
    items = []
    for i, (text, record) in enumerate(zip(texts, records)):
        if record.get("text") != text:
            raise UsageError(f"mismatched {where}: record {i} is about a different text than input row {i}; "
                             f"compute it from the same input file")
        spans = record.get("spans") if record.get("kind") == "contrast" else record.get("offsets")
        if spans is None:
            raise UsageError(f"{where} record {i} has no spans/offsets; recompute the file")
        items.append(ScoredText(text, [(int(a), int(b)) for a, b in spans], list(record["special"]),
                                _score_column(record, config)))
    return items


def augment_rows(rows: Sequence[dict[str, Any]], items: Sequence[ScoredText], config: AugmentConfig
                 ) -> list[dict[str, Any]]:
    """For each input row: the original (``copy`` 0) then ``copies`` augmented rows. Other columns are kept."""
    assert len(rows) == len(items), (len(rows), len(items))
    out = []
    for index, (row, item) in enumerate(zip(rows, items)):
        extra = {k: v for k, v in row.items() if k != "text"}
        out.append({"text": item.text, **extra, "source": index, "copy": 0, "mode": config.mode, "dropped": 0})
        for copy, (text, dropped) in enumerate(augment_text(item, config, index), 1):
            out.append({"text": text, **extra, "source": index, "copy": copy, "mode": config.mode,
                        "dropped": dropped})
    return out
