"""The judge's own noise (SD of a candidate's scores across repeats) and position bias (score
residual by presented position, with a document-bootstrap interval of its slope); needs a
judge run with ``--repeats`` >= 2."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from ..judge.scores import ScoreTable
from .paired import ReportOptions, num

__all__ = ["judge_noise"]


def judge_noise(table: ScoreTable, o: ReportOptions, notes: list[str]) -> Optional[dict]:
    """The ``judge_noise`` block of the report (complete documents only), or None with a note
    why (not our judge file, or a single repeat)."""
    if table.source != "judge" or not table.repeat_scores:
        return None
    repeats = int((table.meta.get("judge") or {}).get("repeats") or 1)
    if repeats < 2:
        notes.append("judge noise and position bias need --repeats >= 2 in the judge run")
        return None
    sds, equal = [], []
    resid_doc: list[list[tuple[float, float, int, int]]] = []     # per doc: (residual, rel. position, pos, K)
    for d, per_key in enumerate(table.repeat_scores):
        if not table.complete[d]:
            continue
        orders = table.orders[d] if table.orders else None
        rows = []
        for key, vals in per_key.items():
            got = [(r, float(v)) for r, v in enumerate(vals) if v is not None]
            if len(got) < 2:
                continue
            arr = np.array([v for _, v in got])
            sds.append(float(arr.std(ddof=1)))
            equal.append(bool((arr == arr[0]).all()))
            if orders:
                mean = arr.mean()
                for r, v in got:
                    order = orders[r]
                    pos = order.index(key)
                    k = len(order)
                    rows.append((v - mean, pos / (k - 1) if k > 1 else 0.0, pos, k))
        resid_doc.append(rows)
    out: dict[str, Any] = {"repeats": repeats, "pairs": len(sds), "mean_sd": num(float(np.mean(sds))) if sds else None,
                           "all_equal_fraction": num(float(np.mean(equal))) if equal else None, "position": None}
    flat = [row for rows in resid_doc for row in rows]
    if flat:
        k_max = max(row[3] for row in flat)
        res = np.array([row[0] for row in flat])
        pos = np.array([row[2] for row in flat])
        by_pos = [num(float(res[pos == p].mean())) if (pos == p).any() else None for p in range(k_max)]
        n_by_pos = [int((pos == p).sum()) for p in range(k_max)]

        def slope(rows: list) -> float:
            x = np.array([r[1] for r in rows])
            y = np.array([r[0] for r in rows])
            return float(np.polyfit(x, y, 1)[0]) if x.std() > 0 else float("nan")

        s = slope(flat)
        rng = np.random.default_rng(o.seed)
        n_docs = len(resid_doc)
        boots = []
        for _ in range(min(o.n_boot, 2000)):
            pick = rng.integers(0, n_docs, n_docs)
            boots.append(slope([row for i in pick for row in resid_doc[i]]))
        tail = (1 - o.confidence) / 2
        boots_arr = np.array([b for b in boots if not math.isnan(b)])
        ci = [num(float(np.quantile(boots_arr, tail))), num(float(np.quantile(boots_arr, 1 - tail)))] \
            if boots_arr.size else [None, None]
        out["position"] = {"residual_by_position": by_pos, "n_by_position": n_by_pos, "slope": num(s),
                           "slope_ci": ci,
                           "about": "residual = score - that candidate's mean over repeats; slope = change of "
                                    "the residual from first (0) to last (1) position"}
    return out
