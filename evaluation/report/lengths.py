"""Length buckets: the same summary per group of documents, by the ``generate --buckets``
value each document was selected for, else by prompt tokens or document words."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from ..judge.scores import ScoreTable
from .paired import ReportOptions, crossfit_best, mean_entry, num, paired_entry

__all__ = ["LENGTH_FIELDS", "LENGTH_WHAT", "length_variable", "length_buckets"]

LENGTH_FIELDS = ("prompt_tokens", "n_prompt_tokens", "input_tokens")
LENGTH_WHAT = {"selection_bucket": "selection bucket: the generate --buckets value each document was chosen for",
               "prompt_tokens": "prompt length in tokens", "document_words": "document length in words"}


def length_variable(records: Optional[Sequence[dict]], prompt_tokens: Optional[Sequence[float]] = None
                    ) -> tuple[Optional[str], Optional[np.ndarray]]:
    """Prompt tokens (from the generation metadata, or a field every record carries), else
    document words; (None, None) without records."""
    if prompt_tokens is not None:
        return "prompt_tokens", np.asarray(prompt_tokens, dtype=float)
    if not records:
        return None, None
    for name in LENGTH_FIELDS:
        if all(isinstance(r.get(name), (int, float)) and not isinstance(r.get(name), bool) for r in records):
            return "prompt_tokens", np.array([float(r[name]) for r in records])
    return "document_words", np.array([float(len(str(r["document"]).split())) for r in records])


def _bucket_edges(lengths: np.ndarray, o: ReportOptions) -> list[float]:
    """[-inf, inner edges..., inf]; without explicit edges, quantiles give equal-count buckets."""
    if o.length_edges is not None:
        inner = list(o.length_edges)
    else:
        inner = [float(np.quantile(lengths, q)) for q in np.linspace(0, 1, o.length_buckets + 1)[1:-1]]
    return [-math.inf, *sorted(set(inner)), math.inf]


def _bucket_stats(entry: dict, plain: np.ndarray, configs: np.ndarray, o: ReportOptions) -> dict:
    """Fill one bucket's statistics from its documents' plain and config scores."""
    if entry["n"]:
        entry["plain"] = mean_entry(plain, o)
        entry["mean_over_configs"] = paired_entry(plain, configs.mean(axis=1), o)
        if entry["n"] >= o.folds:
            picked, _ = crossfit_best(configs, o.folds, o.seed)
            entry["best_fixed_crossfit"] = paired_entry(plain, picked, o)
        else:
            entry["best_fixed_crossfit"] = None
        entry["oracle_best_of_n"] = paired_entry(plain, configs.max(axis=1), o)
    return entry


def length_buckets(table: ScoreTable, plain: np.ndarray, configs: np.ndarray, o: ReportOptions,
                   notes: list[str]) -> Optional[dict]:
    """The ``length_buckets`` block of the report (complete documents), or None with a note."""
    if table.selection_buckets is not None and o.length_edges is None:
        # one bucket per recorded value, including values none of whose documents are complete
        chosen = np.asarray(table.selection_buckets, dtype=float)
        complete = chosen[table.complete]
        buckets = [_bucket_stats({"label": f"{v:g}", "low": float(v), "high": float(v),
                                  "n": int((complete == v).sum())}, plain[complete == v], configs[complete == v], o)
                   for v in sorted(set(chosen.tolist()))]
        notes.append("length buckets: the generate --buckets value each document was selected for (from the "
                     "generation metadata); pass --length-edges to bucket by prompt length instead")
        return {"variable": "selection_bucket", "edges": [b["low"] for b in buckets], "buckets": buckets}
    variable, lengths_all = length_variable(table.records, table.prompt_tokens)
    if variable is None:
        notes.append("no length buckets: the generation records are not available")
        return None
    lengths = lengths_all[table.complete]
    edges = _bucket_edges(lengths, o)
    buckets = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (lengths >= lo) & (lengths < hi)
        # Lengths are whole numbers: x >= lo iff x >= ceil(lo), x < hi iff x < ceil(hi).
        a, b = (None if math.isinf(e) else math.ceil(e) for e in (lo, hi))
        label = f"< {b}" if a is None else f">= {a}" if b is None else f"{a} - {b}"
        entry: dict[str, Any] = {"label": label, "low": num(lo) if not math.isinf(lo) else None,
                                 "high": num(hi) if not math.isinf(hi) else None, "n": int(mask.sum())}
        buckets.append(_bucket_stats(entry, plain[mask], configs[mask], o))
    return {"variable": variable, "edges": [num(e) if not math.isinf(e) else None for e in edges[1:-1]],
            "buckets": buckets}
