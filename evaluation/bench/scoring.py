"""Normalised exact match on the first generated line (pure).

``normalise``: lowercase, punctuation removed (a character that is neither a letter,
a digit nor whitespace becomes a space, except apostrophes, which are dropped), the
articles ``a``/``an``/``the`` removed, whitespace collapsed.

A prediction is correct when the normalised gold answer's words are the first words of
the normalised first non-empty line of the output: ``"47."`` and ``"47, I think"``
match ``"47"``; ``"147"``, ``"4 7"`` and ``"the code is 47"`` do not.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalise", "first_line", "exact_match", "score"]

_ARTICLES = {"a", "an", "the"}
_APOSTROPHES = re.compile(r"['\u2019`]")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = _APOSTROPHES.sub("", text)
    text = "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in text)
    return " ".join(w for w in text.split() if w not in _ARTICLES)


def first_line(output: str) -> str:
    """The first line of ``output`` that has any non-space character ('' if none)."""
    for line in output.splitlines():
        if line.strip():
            return line.strip()
    return ""


def exact_match(prediction: str, gold: str) -> bool:
    """Whether the normalised ``gold`` is the leading word(s) of the normalised ``prediction``."""
    g = normalise(gold).split()
    p = normalise(prediction).split()
    return bool(g) and p[:len(g)] == g


def score(output: str, gold: str) -> tuple[str, bool]:
    """``(first line, correct)`` for a raw generated continuation."""
    line = first_line(output)
    return line, exact_match(line, gold)
