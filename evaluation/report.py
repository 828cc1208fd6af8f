"""``attn-transition report SCORES``: an honest report over judged scores.

SCORES is our scores file (``attn-transition judge`` output) or a seed judged file (a JSON
list of records with ``gpt4_eva`` and ``eval_scores``); the kind is detected. The seed's
free-text scores are parsed strictly: only documents where every candidate gets exactly
one score are used, the others are listed as excluded with the reason.

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

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from attn_transition.commands import register_command
from attn_transition.errors import UsageError

from .judge_client import import_optional
from .judge_scores import ScoreTable, load_scores
from .stats import compare_paired, mean_ci

__all__ = ["ReportOptions", "build_report", "render_markdown", "write_plots", "length_variable",
           "crossfit_best", "rouge_scores", "REPORT_FORMAT", "add_arguments", "run"]

REPORT_FORMAT = "attn_transition.judge_report"
LENGTH_FIELDS = ("prompt_tokens", "n_prompt_tokens", "input_tokens")
LENGTH_WHAT = {"selection_bucket": "selection bucket: the generate --buckets value each document was chosen for",
               "prompt_tokens": "prompt length in tokens", "document_words": "document length in words"}
ROUGE_HINT = "or pass --no-rouge"
PLOTS_HINT = "or leave out --plots"
ORACLE_LABEL = ("ORACLE upper bound: per document the best score over all configs, chosen after seeing the "
                "scores; no fixed setting can reach it")

EPILOG = """examples:
  attn-transition report out.scores.json --markdown report.md --json report.json --plots plots/
  attn-transition report token_1200_evaluation.json       # a seed judged file (gpt4_eva parsed strictly)

""" + __doc__[__doc__.index("``--json PATH``"):].replace("``", "")


@dataclass(frozen=True)
class ReportOptions:
    n_boot: int = 10000
    confidence: float = 0.95
    seed: int = 0
    folds: int = 5
    length_buckets: int = 3                          # equal-count buckets ...
    length_edges: Optional[tuple[float, ...]] = None  # ... unless inner edges are given
    rouge: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.n_boot, int) or self.n_boot < 100:
            raise UsageError(f"--n-boot must be an integer >= 100, got {self.n_boot!r}")
        if not 0.5 <= self.confidence < 1.0:
            raise UsageError(f"--confidence must be in [0.5, 1), got {self.confidence!r}")
        if not isinstance(self.folds, int) or self.folds < 2:
            raise UsageError(f"--folds must be an integer >= 2, got {self.folds!r}")
        if not isinstance(self.length_buckets, int) or self.length_buckets < 1:
            raise UsageError(f"--length-buckets must be an integer >= 1, got {self.length_buckets!r}")
        if self.length_edges is not None and not all(math.isfinite(e) for e in self.length_edges):
            raise UsageError(f"--length-edges must be finite numbers, got {self.length_edges!r}")


def parse_edges(spec: Optional[str]) -> Optional[tuple[float, ...]]:
    """'800,1200' -> (800.0, 1200.0): inner bucket edges."""
    if spec is None:
        return None
    try:
        edges = tuple(sorted(float(x) for x in spec.split(",") if x.strip()))
    except ValueError:
        edges = ()
    if not edges:
        raise UsageError(f"--length-edges must be comma-separated numbers such as 800,1200, got {spec!r}")
    return edges


# -- statistics (pure) --------------------------------------------------------------------------
def _f(x: float) -> Optional[float]:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _mean(values: np.ndarray, o: ReportOptions) -> dict:
    m, lo, hi = mean_ci(values, n_boot=o.n_boot, confidence=o.confidence, seed=o.seed)
    return {"n": int(values.size), "mean": _f(m), "ci": [_f(lo), _f(hi)]}


def _cmp(plain: np.ndarray, values: np.ndarray, o: ReportOptions) -> dict:
    c = compare_paired(plain, values, n_boot=o.n_boot, confidence=o.confidence, seed=o.seed)
    out = _mean(values, o)
    out.update({"diff": _f(c.diff), "diff_ci": [_f(c.ci_low), _f(c.ci_high)], "wins": c.wins, "ties": c.ties,
                "losses": c.losses})
    return out


def crossfit_best(configs: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Per document the score of a config chosen without that document: documents are split
    into ``folds`` random folds; for each fold, the config with the best mean on the other
    folds is used (ties -> first column). ``configs`` is (n_docs, n_configs)."""
    n = configs.shape[0]
    assert configs.ndim == 2 and n >= folds, f"need (docs >= folds, configs), got {configs.shape} and folds={folds}"
    fold_of = np.random.default_rng(seed).permutation(n) % folds        # (n_docs,)
    picked = np.empty(n)
    chosen: list[int] = []
    for f in range(folds):
        test = fold_of == f
        best = int(np.argmax(configs[~test].mean(axis=0)))
        chosen.append(best)
        picked[test] = configs[test, best]
    return picked, chosen


def _summaries(plain: np.ndarray, configs: np.ndarray, keys: Sequence[str], o: ReportOptions) -> dict:
    """Mean over configs, best fixed (in-sample and cross-fitted) and the oracle, vs plain."""
    means = configs.mean(axis=0)
    best = int(np.argmax(means))
    out = {"mean_over_configs": _cmp(plain, configs.mean(axis=1), o)}
    out["best_fixed_in_sample"] = {"key": keys[best], **_cmp(plain, configs[:, best], o),
                                   "note": "chosen on these same documents: optimistic"}
    if configs.shape[0] >= o.folds:
        picked, chosen = crossfit_best(configs, o.folds, o.seed)
        out["best_fixed_crossfit"] = {**_cmp(plain, picked, o), "keys_chosen": [keys[c] for c in chosen],
                                      "note": f"{o.folds}-fold cross-fitted choice of one config"}
    else:
        out["best_fixed_crossfit"] = None
    out["oracle_best_of_n"] = {**_cmp(plain, configs.max(axis=1), o), "n_configs": int(configs.shape[1]),
                               "label": ORACLE_LABEL}
    return out


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
        entry["plain"] = _mean(plain, o)
        entry["mean_over_configs"] = _cmp(plain, configs.mean(axis=1), o)
        if entry["n"] >= o.folds:
            picked, _ = crossfit_best(configs, o.folds, o.seed)
            entry["best_fixed_crossfit"] = _cmp(plain, picked, o)
        else:
            entry["best_fixed_crossfit"] = None
        entry["oracle_best_of_n"] = _cmp(plain, configs.max(axis=1), o)
    return entry


def _length_buckets(table: ScoreTable, plain: np.ndarray, configs: np.ndarray, o: ReportOptions,
                    notes: list[str]) -> Optional[dict]:
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
        label = (f"< {hi:g}" if math.isinf(lo) else f">= {lo:g}" if math.isinf(hi) else f"{lo:g} - {hi:g}")
        entry: dict[str, Any] = {"label": label, "low": _f(lo) if not math.isinf(lo) else None,
                                 "high": _f(hi) if not math.isinf(hi) else None, "n": int(mask.sum())}
        buckets.append(_bucket_stats(entry, plain[mask], configs[mask], o))
    return {"variable": variable, "edges": [_f(e) if not math.isinf(e) else None for e in edges[1:-1]],
            "buckets": buckets}


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


def _rouge(table: ScoreTable, o: ReportOptions, notes: list[str]) -> Optional[dict]:
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
        row = {"key": k, "rouge1": _f(r[:, c, 0].mean()), "rouge2": _f(r[:, c, 1].mean()),
               "rougeL": _f(r[:, c, 2].mean())}
        if c != p:
            cmp = compare_paired(r[:, p, 2], r[:, c, 2], n_boot=o.n_boot, confidence=o.confidence, seed=o.seed)
            row.update({"rougeL_diff": _f(cmp.diff), "rougeL_diff_ci": [_f(cmp.ci_low), _f(cmp.ci_high)]})
        rows.append(row)
    if len(docs) < len(table.records):
        notes.append(f"ROUGE uses the {len(docs)} completely judged documents, like the judge statistics "
                     f"({len(table.records) - len(docs)} excluded; listed under the excluded documents)")
    return {"n": int(r.shape[0]), "scorer": "rouge_score F1 x100, Porter stemmer, the completely judged documents",
            "configs": rows}


def _judge_noise(table: ScoreTable, o: ReportOptions, notes: list[str]) -> Optional[dict]:
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
    out: dict[str, Any] = {"repeats": repeats, "pairs": len(sds), "mean_sd": _f(float(np.mean(sds))) if sds else None,
                           "all_equal_fraction": _f(float(np.mean(equal))) if equal else None, "position": None}
    flat = [row for rows in resid_doc for row in rows]
    if flat:
        k_max = max(row[3] for row in flat)
        res = np.array([row[0] for row in flat])
        pos = np.array([row[2] for row in flat])
        by_pos = [_f(float(res[pos == p].mean())) if (pos == p).any() else None for p in range(k_max)]
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
        ci = [_f(float(np.quantile(boots_arr, tail))), _f(float(np.quantile(boots_arr, 1 - tail)))] \
            if boots_arr.size else [None, None]
        out["position"] = {"residual_by_position": by_pos, "n_by_position": n_by_pos, "slope": _f(s),
                           "slope_ci": ci,
                           "about": "residual = score - that candidate's mean over repeats; slope = change of "
                                    "the residual from first (0) to last (1) position"}
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
    mismatches = [{"index": int(i), "id": table.ids[i], "stored": [_f(stored[i, 0]), _f(stored[i, 1])],
                   "parsed": [_f(a), _f(b)]}
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
        cmp = _cmp(plain, s[:, c], options)
        rows.append({"key": k, "n": cmp["n"], "mean": cmp["mean"], "mean_ci": cmp["ci"], "diff": cmp["diff"],
                     "diff_ci": cmp["diff_ci"], "wins": cmp["wins"], "ties": cmp["ties"], "losses": cmp["losses"]})
    report = {
        "format": REPORT_FORMAT, "format_version": 1,
        "source": {"path": table.path, "kind": table.source, "judge": table.meta.get("judge")},
        "settings": {"n_boot": options.n_boot, "confidence": options.confidence, "seed": options.seed,
                     "folds": options.folds, "length_buckets": options.length_buckets,
                     "length_edges": list(options.length_edges) if options.length_edges else None},
        "documents": {"total": n_total, "complete": n_complete, "excluded": table.exclusions},
        "plain_key": table.keys[p],
        "plain": _mean(plain, options),
        "configs": rows,
        "summary": _summaries(plain, configs, config_keys, options),
        "seed_stored": _seed_stored(table),
    }
    report["length_buckets"] = _length_buckets(table, plain, configs, options, notes)
    report["rouge"] = _rouge(table, options, notes)
    report["judge_noise"] = _judge_noise(table, options, notes)
    if table.source == "judge":
        usage = table.meta.get("usage") or {}
        report["source"]["usage"] = usage
    report["notes"] = notes
    return report


# -- rendering --------------------------------------------------------------------------------
def _n(x: Optional[float], digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(ci: Sequence[Optional[float]], digits: int = 2) -> str:
    return f"[{_n(ci[0], digits)}, {_n(ci[1], digits)}]"


def _sd(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def render_markdown(report: dict) -> str:
    pk = report["plain_key"]
    docs = report["documents"]
    conf = int(round(100 * report["settings"]["confidence"]))
    src = report["source"]
    judge = src.get("judge") or {}
    lines = [f"# Judge report: {Path(src['path']).name}", ""]
    lines.append(f"Source: {src['kind']} file `{src['path']}`; judge {judge.get('model', '?')}, protocol "
                 f"{judge.get('protocol', '?')}" + (f", {judge.get('repeats')} repeat(s)" if judge.get('repeats') else ""))
    lines.append(f"Documents: {docs['complete']} of {docs['total']} completely scored and used; "
                 f"{len(docs['excluded'])} excluded.")
    lines.append(f"Intervals: {conf}% percentile bootstrap over documents ({report['settings']['n_boot']} "
                 f"resamples, seed {report['settings']['seed']}). diff = config - {pk}, paired by document.")
    if src.get("usage"):
        u = src["usage"]
        cost = "unknown" if u.get("cost_usd") is None else f"${u['cost_usd']:.4f}"
        lines.append(f"Judge usage: {u.get('requests')} answers, {u.get('prompt_tokens')} input + "
                     f"{u.get('completion_tokens')} output tokens, cost {cost}.")
    lines.append("")

    seed = report.get("seed_stored")
    if seed:
        a = seed["agreement"]
        lines += ["## The seed's own numbers (stored `eval_scores`, all records that have them)", "",
                  f"- plain ({pk}) mean: **{seed['plain_mean_2dp']}** (exact {seed['plain_mean']:.4f}, n={seed['n']})",
                  f"- best-of-N mean: **{seed['oracle_mean_2dp']}** (exact {seed['oracle_mean']:.4f}, n={seed['n']}) "
                  f"-- an ORACLE (chosen per document after seeing the scores)",
                  f"- parsed free text agrees with the stored pair on {a['plain_equal']}/{a['n']} plain and "
                  f"{a['oracle_equal']}/{a['n']} best-of-N values"
                  + (f" (differs on ids {', '.join(m['id'] for m in a['mismatches'][:5])})" if a["mismatches"] else ""),
                  ""]

    summ = report["summary"]
    plain = report["plain"]
    lines += ["## Headline (complete documents)", "",
              f"| quantity | mean | {conf}% CI | diff vs {pk} | {conf}% CI | win/tie/loss |", "|---|---|---|---|---|---|",
              f"| plain `{pk}` | {_n(plain['mean'])} | {_ci(plain['ci'])} | | | |"]

    def row(name: str, d: Optional[dict]) -> str:
        if not d:
            return f"| {name} | n/a | | | | |"
        return (f"| {name} | {_n(d['mean'])} | {_ci(d['ci'])} | {_sd(d['diff'])} | {_ci(d['diff_ci'])} | "
                f"{d['wins']}/{d['ties']}/{d['losses']} |")

    lines.append(row("mean over configs", summ["mean_over_configs"]))
    bc = summ.get("best_fixed_crossfit")
    if bc:
        lines.append(row(f"best fixed config, cross-fitted ({len(bc['keys_chosen'])} folds)", bc))
    bi = summ["best_fixed_in_sample"]
    lines.append(row(f"best fixed config in-sample `{bi['key']}` (optimistic)", bi))
    lines.append(row(f"**ORACLE** best of {summ['oracle_best_of_n']['n_configs']} per document (upper bound)",
                     summ["oracle_best_of_n"]))
    lines += ["", f"{ORACLE_LABEL}.", ""]
    if bc:
        lines += [f"Cross-fitted choices per fold: {', '.join(f'`{k}`' for k in bc['keys_chosen'])}.", ""]

    lines += ["## Per config", "", f"| config | n | mean | {conf}% CI | diff vs {pk} | {conf}% CI | win/tie/loss |",
              "|---|---|---|---|---|---|---|"]
    for r in report["configs"]:
        lines.append(f"| `{r['key']}` | {r['n']} | {_n(r['mean'])} | {_ci(r['mean_ci'])} | {_sd(r['diff'])} | "
                     f"{_ci(r['diff_ci'])} | {r['wins']}/{r['ties']}/{r['losses']} |")
    lines.append("")

    lb = report.get("length_buckets")
    if lb:
        what = LENGTH_WHAT.get(lb["variable"], lb["variable"])
        lines += [f"## By length ({what})", "",
                  f"| bucket | n | plain mean | mean over configs: diff {conf}% CI | best fixed (cross-fitted): diff | "
                  f"ORACLE: diff |", "|---|---|---|---|---|---|"]
        for b in lb["buckets"]:
            if not b["n"]:
                lines.append(f"| {b['label']} | 0 | | | | |")
                continue

            def cell(d: Optional[dict]) -> str:
                return "n/a" if not d else f"{_sd(d['diff'])} {_ci(d['diff_ci'])}"

            lines.append(f"| {b['label']} | {b['n']} | {_n(b['plain']['mean'])} | {cell(b['mean_over_configs'])} | "
                         f"{cell(b['best_fixed_crossfit'])} | {cell(b['oracle_best_of_n'])} |")
        lines.append("")

    rg = report.get("rouge")
    if rg:
        lines += [f"## ROUGE against the reference summary ({rg['scorer']}; n={rg['n']})", "",
                  f"| candidate | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-L diff vs {pk} | {conf}% CI |",
                  "|---|---|---|---|---|---|"]
        for r in rg["configs"]:
            lines.append(f"| `{r['key']}` | {_n(r['rouge1'])} | {_n(r['rouge2'])} | {_n(r['rougeL'])} | "
                         f"{_sd(r.get('rougeL_diff'))} | {_ci(r['rougeL_diff_ci']) if 'rougeL_diff_ci' in r else ''} |")
        lines.append("")

    jn = report.get("judge_noise")
    if jn:
        lines += ["## Judge noise", "",
                  f"- {jn['repeats']} repeats; over {jn['pairs']} document x candidate pairs the mean SD of a "
                  f"candidate's score across repeats is {_n(jn['mean_sd'])}; all repeats equal for "
                  f"{_n(100 * jn['all_equal_fraction'] if jn['all_equal_fraction'] is not None else None, 1)}% of pairs"]
        pos = jn.get("position")
        if pos:
            lines.append(f"- position bias: residual slope first->last position {_sd(pos['slope'])} points "
                         f"{_ci(pos['slope_ci'])}; residual by position: "
                         + ", ".join(_sd(x) for x in pos["residual_by_position"]))
        lines.append("")

    if docs["excluded"]:
        lines += ["## Excluded documents", ""]
        lines += [f"- #{e['index']} (id {e['id']}): {e['reason']}" for e in docs["excluded"]]
        lines.append("")
    if report["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


def write_plots(report: dict, directory: str | os.PathLike) -> list[Path]:
    """PNG plots (matplotlib, Agg): paired differences, length buckets, position bias."""
    matplotlib = import_optional("matplotlib", "--plots", alternative=PLOTS_HINT)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    pk = report["plain_key"]
    summ = report["summary"]

    items = [(r["key"].replace("decode_", ""), r["diff"], r["diff_ci"], "tab:blue") for r in report["configs"]]
    items.append(("mean over configs", summ["mean_over_configs"]["diff"], summ["mean_over_configs"]["diff_ci"], "black"))
    if summ.get("best_fixed_crossfit"):
        bc = summ["best_fixed_crossfit"]
        items.append(("best fixed (cross-fitted)", bc["diff"], bc["diff_ci"], "tab:green"))
    orc = summ["oracle_best_of_n"]
    items.append(("ORACLE best-of-N (upper bound)", orc["diff"], orc["diff_ci"], "tab:red"))
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(items) + 1.5))
    for y, (name, d, ci, colour) in enumerate(items):
        ax.errorbar(d, y, xerr=[[d - ci[0]], [ci[1] - d]], fmt="o", color=colour, capsize=2)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(items)), [i[0] for i in items], fontsize=7)
    ax.invert_yaxis()
    conf = int(round(100 * report["settings"]["confidence"]))
    ax.set_xlabel(f"judge score difference vs {pk} (paired, {conf}% bootstrap CI)")
    fig.tight_layout()
    path = out_dir / "paired_differences.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)

    lb = report.get("length_buckets")
    if lb and any(b["n"] for b in lb["buckets"]):
        buckets = [b for b in lb["buckets"] if b["n"]]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = np.arange(len(buckets))
        series = [("plain", [b["plain"]["mean"] for b in buckets], "black"),
                  ("mean over configs", [b["mean_over_configs"]["mean"] for b in buckets], "tab:blue"),
                  ("best fixed (cross-fitted)", [b["best_fixed_crossfit"]["mean"] if b["best_fixed_crossfit"] else np.nan
                                                 for b in buckets], "tab:green"),
                  ("ORACLE best-of-N", [b["oracle_best_of_n"]["mean"] for b in buckets], "tab:red")]
        for name, ys, colour in series:
            ax.plot(x, ys, marker="o", label=name, color=colour)
        ax.set_xticks(x, [f"{b['label']}\n(n={b['n']})" for b in buckets], fontsize=7)
        ax.set_xlabel({"selection_bucket": "selection bucket (generate --buckets)", "prompt_tokens": "prompt tokens"}
                      .get(lb["variable"], "document words"))
        ax.set_ylabel("mean judge score")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / "length_buckets.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    jn = report.get("judge_noise")
    if jn and jn.get("position"):
        res = jn["position"]["residual_by_position"]
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(np.arange(1, len(res) + 1), [np.nan if r is None else r for r in res], color="tab:purple")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("presented position")
        ax.set_ylabel("score residual")
        fig.tight_layout()
        path = out_dir / "position_bias.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


# -- command line -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scores", metavar="SCORES", help="our scores file (OUTPUTS.scores.json) or a seed judged file")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON (schema: see --help above)")
    parser.add_argument("--markdown", metavar="PATH", help="write the report as Markdown")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots into DIR")
    parser.add_argument("--outputs", metavar="PATH", help="the generation file that was judged (default: the one "
                                                           "named in the scores file)")
    parser.add_argument("--length-buckets", type=int, default=3, metavar="N",
                        help="number of equal-count length buckets (default 3)")
    parser.add_argument("--length-edges", metavar="E1,E2", help="explicit inner bucket edges instead, e.g. 800,1200")
    parser.add_argument("--folds", type=int, default=5, help="folds of the cross-fitted best fixed config")
    parser.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0, help="bootstrap and fold seed")
    parser.add_argument("--no-rouge", action="store_true", help="skip ROUGE")


def run(args: argparse.Namespace) -> int:
    options = ReportOptions(n_boot=args.n_boot, confidence=args.confidence, seed=args.seed, folds=args.folds,
                            length_buckets=args.length_buckets, length_edges=parse_edges(args.length_edges),
                            rouge=not args.no_rouge)
    if options.rouge:           # missing optional packages: say so before any work
        import_optional("rouge_score.rouge_scorer", "ROUGE", "rouge_score", ROUGE_HINT)
    if args.plots:
        import_optional("matplotlib", "--plots", alternative=PLOTS_HINT)
    table = load_scores(args.scores, args.outputs)
    report = build_report(table, options)
    text = render_markdown(report)
    print(text)
    from .seedformat import write_json_atomic

    if args.json:
        write_json_atomic(args.json, report)
        print(f"wrote {args.json}")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.markdown}")
    if args.plots:
        for p in write_plots(report, args.plots):
            print(f"wrote {p}")
    return 0

register_command('report', help='honest report over judged scores (CIs, oracle labelled)',
                 add_arguments=add_arguments, run=run, epilog=EPILOG)
