"""The report as a JSON-able dict (:func:`build_report`), from a judged-scores table
(:class:`~attn_transition.evaluation.judge.scores.ScoreTable`).

What it reports (all on the completely scored documents, paired by document):
  * per config: mean judge score, n, the paired difference to ``decode_or`` with a 95%
    percentile bootstrap interval (documents resampled), win/tie/loss;
  * mean over configs (per document, the mean of all non-plain configs);
  * best fixed config, twice: in-sample (the config with the best mean, chosen on these
    same documents -- optimistic) and cross-fitted (for each of K folds, the config chosen
    on the other folds; an honest estimate of picking one setting and using it);
  * ORACLE best-of-N: per document the best score over all non-plain configs -- the
    seed's headline number. It selects after seeing the scores, so it is an upper bound
    that no deployable setting reaches, not an improvement;
  * for a seed file, the seed's own averages recomputed from the stored ``eval_scores``
    (every record that has them), and how often the parsed scores agree with them;
  * the same summary per length bucket. When the generation metadata
    ``<generation file>.meta.json`` (written by ``attn-transition generate``) records for
    every document the ``--buckets`` value it was selected for (``documents[].bucket``),
    and no ``--length-edges`` are given, one bucket per recorded value ("selection
    bucket"). Otherwise prompt length in tokens when known for every document -- the
    sidecar's ``documents[].prompt_tokens`` or a ``prompt_tokens`` field in every record
    -- else document length in words (the report says which), in equal-count buckets
    (``--length-buckets N``) or following ``--length-edges``;
  * ROUGE-1/2/L F1 (x100, ``rouge_score`` with Porter stemming, offline) of every
    candidate against ``summary``, on the same complete documents as the judge
    statistics, with paired differences to ``decode_or``;
  * with ``--repeats`` >= 2 in the judge run: the judge's noise (SD of a candidate's
    scores across repeats) and position bias (score residual by presented position).

``--json PATH`` writes the report as JSON; schema (format version 1)::

    {"format": "attn_transition.judge_report", "format_version": 1,
     "source": {"path": str, "kind": "judge" | "seed", "judge": {...} | null,
                "stand_in": bool (the offline stand-in made the scores: not a judgement),
                "usage": {...} (judge files: the scores file's usage block)},
     "settings": {"n_boot": int, "confidence": float, "seed": int, "folds": int, "length_buckets": int,
                  "length_edges": [float] | null},
     "documents": {"total": int, "complete": int, "excluded": [{"index", "id", "reason"}]},
     "plain_key": "decode_or",
     "plain": Mean,
     "configs": [{"key": str, "n": int, "mean": float, "mean_ci": [lo, hi],
                  "diff": float, "diff_ci": [lo, hi], "wins": int, "ties": int, "losses": int}],
     "summary": {"mean_over_configs": Cmp, "best_fixed_in_sample": Cmp + {"key"},
                 "best_fixed_crossfit": Cmp + {"keys_chosen": [str per fold]},
                 "oracle_best_of_n": Cmp + {"n_configs": int, "label": str}},
     "seed_stored": null | {"n", "plain_mean", "oracle_mean", "plain_mean_2dp", "oracle_mean_2dp",
                            "agreement": {"n", "plain_equal", "oracle_equal", "mismatches": [...]}},
     "length_buckets": null | {"variable": "selection_bucket" | "prompt_tokens" | "document_words",
                               "edges": [...] (inner edges; selection_bucket: the recorded values),
                               "buckets": [{"label", "low", "high" (selection_bucket: both the value), "n",
                                            "plain": Mean,
                                            "mean_over_configs": Cmp, "best_fixed_crossfit": Cmp,
                                            "oracle_best_of_n": Cmp}]},
     "rouge": null | {"n": int, "scorer": str,
                      "configs": [{"key", "rouge1", "rouge2", "rougeL",
                                   "rougeL_diff": float, "rougeL_diff_ci": [lo, hi]}]},
     "judge_noise": null | {"repeats": int, "pairs": int, "mean_sd": float, "all_equal_fraction": float,
                            "position": null | {"residual_by_position": [float per position],
                                               "n_by_position": [int], "slope": float, "slope_ci": [lo, hi]}},
     "notes": [str]}

    Mean = {"n": int, "mean": float, "ci": [lo, hi]}
    Cmp  = Mean + {"diff": float, "diff_ci": [lo, hi], "wins": int, "ties": int, "losses": int}
           (diff = mean of (this - decode_or) over the same documents)

``--markdown PATH`` writes the same tables as Markdown; ``--plots DIR`` writes PNGs
(matplotlib, Agg backend).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from attn_transition.errors import UsageError

from ..judge.scores import ScoreTable
from .lengths import length_buckets
from .noise import judge_noise
from .paired import ReportOptions, crossfit_best, mean_entry, num, paired_entry
from .rouge import rouge_section

__all__ = ["REPORT_FORMAT", "ORACLE_LABEL", "build_report"]

REPORT_FORMAT = "attn_transition.judge_report"
ORACLE_LABEL = ("ORACLE upper bound: per document the best score over all configs, chosen after seeing the "
                "scores; no fixed setting can reach it")


def _summaries(plain: np.ndarray, configs: np.ndarray, keys: Sequence[str], o: ReportOptions) -> dict:
    """Mean over configs, best fixed (in-sample and cross-fitted) and the oracle, vs plain."""
    means = configs.mean(axis=0)
    best = int(np.argmax(means))
    out = {"mean_over_configs": paired_entry(plain, configs.mean(axis=1), o)}
    out["best_fixed_in_sample"] = {"key": keys[best], **paired_entry(plain, configs[:, best], o),
                                   "note": "chosen on these same documents: optimistic"}
    if configs.shape[0] >= o.folds:
        picked, chosen = crossfit_best(configs, o.folds, o.seed)
        out["best_fixed_crossfit"] = {**paired_entry(plain, picked, o), "keys_chosen": [keys[c] for c in chosen],
                                      "note": f"{o.folds}-fold cross-fitted choice of one config"}
    else:
        out["best_fixed_crossfit"] = None
    out["oracle_best_of_n"] = {**paired_entry(plain, configs.max(axis=1), o), "n_configs": int(configs.shape[1]),
                               "label": ORACLE_LABEL}
    return out


def _seed_stored(table: ScoreTable) -> Optional[dict]:
    if table.stored_eval_scores is None:
        return None
    stored = table.stored_eval_scores
    have = ~np.isnan(stored).any(axis=1)
    if not have.any():
        return None
    plain_mean = float(stored[have, 0].sum() / have.sum())
    oracle_mean = float(stored[have, 1].sum() / have.sum())
    p = table.plain_index
    c = table.complete & have
    parsed = table.scores[c]
    parsed_plain = parsed[:, p]
    parsed_best = np.delete(parsed, p, axis=1).max(axis=1)
    idx = np.flatnonzero(c)
    mismatches = [{"index": int(i), "id": table.ids[i], "stored": [num(stored[i, 0]), num(stored[i, 1])],
                   "parsed": [num(a), num(b)]}
                  for i, a, b in zip(idx, parsed_plain, parsed_best) if a != stored[i, 0] or b != stored[i, 1]]
    return {"n": int(have.sum()), "plain_mean": plain_mean, "oracle_mean": oracle_mean,
            "plain_mean_2dp": f"{plain_mean:.2f}", "oracle_mean_2dp": f"{oracle_mean:.2f}",
            "agreement": {"n": int(c.sum()), "plain_equal": int((parsed_plain == stored[c, 0]).sum()),
                          "oracle_equal": int((parsed_best == stored[c, 1]).sum()), "mismatches": mismatches}}


def build_report(table: ScoreTable, options: ReportOptions = ReportOptions()) -> dict:
    """The whole report as a JSON-able dict (schema in the module docstring)."""
    p = table.plain_index
    notes: list[str] = list(table.notes)
    complete = table.complete
    n_total, n_complete = len(table.ids), int(complete.sum())
    if n_complete == 0:
        raise UsageError(f"{table.path}: no document has a score for every candidate "
                         f"({len(table.exclusions)} excluded; first reason: "
                         f"{table.exclusions[0]['reason'] if table.exclusions else '?'})")
    if table.exclusions:
        notes.append(f"{len(table.exclusions)} of {n_total} documents excluded (not every candidate scored); "
                     f"all statistics use the {n_complete} complete documents")
    s = table.scores[complete]                                    # (n_complete, n_keys)
    plain = s[:, p]
    config_idx = [c for c in range(len(table.keys)) if c != p]
    configs = s[:, config_idx]                                    # (n_complete, n_configs)
    config_keys = [table.keys[c] for c in config_idx]
    if not config_keys:
        raise UsageError(f"{table.path}: only {table.keys[p]!r} is scored; nothing to compare with")
    rows = []
    for c, k in zip(config_idx, config_keys):
        cmp = paired_entry(plain, s[:, c], options)
        rows.append({"key": k, "n": cmp["n"], "mean": cmp["mean"], "mean_ci": cmp["ci"], "diff": cmp["diff"],
                     "diff_ci": cmp["diff_ci"], "wins": cmp["wins"], "ties": cmp["ties"], "losses": cmp["losses"]})
    report = {
        "format": REPORT_FORMAT, "format_version": 1,
        "source": {"path": table.path, "kind": table.source, "judge": table.meta.get("judge"),
                   "stand_in": is_stand_in(table)},
        "settings": {"n_boot": options.n_boot, "confidence": options.confidence, "seed": options.seed,
                     "folds": options.folds, "length_buckets": options.length_buckets,
                     "length_edges": list(options.length_edges) if options.length_edges else None},
        "documents": {"total": n_total, "complete": n_complete, "excluded": table.exclusions},
        "plain_key": table.keys[p],
        "plain": mean_entry(plain, options),
        "configs": rows,
        "summary": _summaries(plain, configs, config_keys, options),
        "seed_stored": _seed_stored(table),
    }
    report["length_buckets"] = length_buckets(table, plain, configs, options, notes)
    report["rouge"] = rouge_section(table, options, notes)
    report["judge_noise"] = judge_noise(table, options, notes)
    if table.source == "judge":
        usage = table.meta.get("usage") or {}
        report["source"]["usage"] = usage
    if report["source"]["stand_in"]:
        notes.insert(0, STAND_IN_NOTE)
    report["notes"] = notes
    return report


STAND_IN_NOTE = ("not a judgement: stand-in scores. The offline stand-in server scored each candidate by a hash "
                 "of its text; every number here says nothing about quality.")


def is_stand_in(table: ScoreTable) -> bool:
    """Whether the offline stand-in (not a judge) made the scores: the scores file's judge block
    says so (``stand_in``, set from the stand-in's marked replies)."""
    return bool((table.meta.get("judge") or {}).get("stand_in"))
