"""ROUGE-1/2/L F1 of every candidate against the reference summary (``rouge_score``, Porter
stemming, offline), on the completely judged documents, with paired differences to the plain
generation."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..judge.client import import_optional
from ..judge.scores import ScoreTable
from ..stats import compare_paired
from .paired import ReportOptions, num

__all__ = ["ROUGE_HINT", "rouge_scores", "rouge_section"]

ROUGE_HINT = "or pass --no-rouge"


def rouge_scores(records: Sequence[dict], keys: Sequence[str]) -> np.ndarray:
    """ROUGE-1/2/L F1 x 100 of every candidate against ``summary``: (n_docs, n_keys, 3)."""
    rouge_scorer = import_optional("rouge_score.rouge_scorer", "ROUGE", "rouge_score", ROUGE_HINT)

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    out = np.zeros((len(records), len(keys), 3))
    for i, rec in enumerate(records):
        for c, k in enumerate(keys):
            s = scorer.score(str(rec["summary"]), str(rec[k]))     # (target, prediction)
            out[i, c] = [100 * s["rouge1"].fmeasure, 100 * s["rouge2"].fmeasure, 100 * s["rougeL"].fmeasure]
    return out


def rouge_section(table: ScoreTable, o: ReportOptions, notes: list[str]) -> Optional[dict]:
    """The ``rouge`` block of the report, or None (``rouge`` off, or no generation records)."""
    if not o.rouge:
        return None
    if not table.records:
        notes.append("no ROUGE: the generation records are not available")
        return None
    # the same complete documents as the judge statistics (the excluded ones are listed in the
    # report; a seed record with other candidate keys could not be scored here anyway)
    docs = np.flatnonzero(table.complete)
    r = rouge_scores([table.records[i] for i in docs], table.keys)    # (n_complete, keys, 3)
    p = table.plain_index
    rows = []
    for c, k in enumerate(table.keys):
        row = {"key": k, "rouge1": num(r[:, c, 0].mean()), "rouge2": num(r[:, c, 1].mean()),
               "rougeL": num(r[:, c, 2].mean())}
        if c != p:
            cmp = compare_paired(r[:, p, 2], r[:, c, 2], n_boot=o.n_boot, confidence=o.confidence, seed=o.seed)
            row.update({"rougeL_diff": num(cmp.diff), "rougeL_diff_ci": [num(cmp.ci_low), num(cmp.ci_high)]})
        rows.append(row)
    if len(docs) < len(table.records):
        notes.append(f"ROUGE uses the {len(docs)} completely judged documents, like the judge statistics "
                     f"({len(table.records) - len(docs)} excluded; listed under the excluded documents)")
    return {"n": int(r.shape[0]), "scorer": "rouge_score F1 x100, Porter stemmer, the completely judged documents",
            "configs": rows}
