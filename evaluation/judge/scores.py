"""Reading judged scores into one table, from either of two files.

* our scores file (written by ``attn-transition judge``; schema in :mod:`.plan`): per
  document, per candidate key, a list of scores over repeats;
* a seed judged file: the generation records with ``gpt4_eva`` (the judge's free text,
  one entry per candidate) and ``eval_scores`` (``[score of decode_or, best score of
  the rest]``).

The seed's free text is parsed strictly (:func:`parse_seed_eva`): a document counts only
if every candidate key gets exactly one score in 0-100; every other document is excluded
and listed with the reason. Accepted entry shapes (irregular spacing and quoting allowed)::

    'decode_or': '45': , 'reason': ...        'decode_or':  \\n90: It included ...
    'decode_or': 70                            'decode_or': Score: 50, Reason: ...
    decode_or: 60: , Reason: ...               'decode_or'$:  0
    'decode_or': <echoed summary text> Score: 60, Reason: ...   (exactly one 'Score N')

Rejected: a key missing or given twice, a key not in the record, enumerations
(``1: 10, ... 2: 10`` -- several scores for one key), scores outside 0-100, entries
without a recognisable score.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from attn_transition.errors import UsageError

from ..seedformat import PLAIN_KEY, candidate_keys, read_json, read_records, validate_records
from .cache import file_sha256

__all__ = ["SeedParse", "parse_seed_eva", "ScoreTable", "load_scores", "detect_format", "table_from_seed",
           "table_from_judge", "read_prompt_tokens", "read_selection_buckets"]

# An entry header: a candidate key at the start of a line (or of the text), optionally
# quoted, optionally followed by '$', then ':'.
_HEADER = re.compile(r"(?m)^[ \t]*[*#>-]*[ \t]*['\"`]?(decode_[A-Za-z0-9_]+?)['\"`\u2019]?[ \t]*\$?[ \t]*:")
# A score at the start of an entry: optional quote/'Score' label, the number, optional quote,
# optional '/100', then ':' ',' ';' a newline, or the end of the entry (a final '.' allowed).
_LEADING = re.compile(r"""^[\s'"`]*(?:\$*score\$*[ \t]*:?[\s'"`]*)?(\d{1,3}(?:\.\d+)?)['"`]?[ \t]*(?:/[ \t]*100)?"""
                      r"""[ \t]*(?=[:,;\n]|\.\s*$|$)""", re.I)
_ENUMERATION = re.compile(r"^[ \t]*:[\s'\"`]*(?:\d|\$*score)", re.I)   # '1: 10' or '1: Score: 85'
_LABELLED = re.compile(r"\$*score\$*[ \t]*:?[ \t]*['\"`]?(\d{1,3}(?:\.\d+)?)(?![\d.]*[ \t]*-[ \t]*\d)", re.I)


@dataclass(frozen=True)
class SeedParse:
    scores: Optional[dict[str, float]]   # None unless every candidate got exactly one score
    reason: str                          # why the document was excluded ('' when parsed)


def _entry_score(segment: str) -> tuple[Optional[float], str]:
    lead = _LEADING.match(segment)
    if lead is not None and not _ENUMERATION.match(segment[lead.end():]):
        return float(lead.group(1)), ""
    if lead is not None:
        return None, "enumerated several scores"
    labelled = _LABELLED.findall(segment)
    if len(labelled) == 1:
        return float(labelled[0]), ""
    if len(labelled) > 1:
        return None, f"{len(labelled)} 'Score' values"
    return None, "no score found"


def parse_seed_eva(text: Any, keys: Sequence[str]) -> SeedParse:
    """Scores of ``keys`` from one document's ``gpt4_eva`` text, or the reason it fails."""
    if not isinstance(text, str):
        return SeedParse(None, f"gpt4_eva is a {type(text).__name__}, not text")
    headers = list(_HEADER.finditer(text))
    found: dict[str, list[float]] = {}
    problems: list[str] = []
    for j, m in enumerate(headers):
        key = m.group(1)
        end = headers[j + 1].start() if j + 1 < len(headers) else len(text)
        if key not in keys:
            problems.append(f"unknown candidate {key!r}")
            continue
        score, why = _entry_score(text[m.end():end])
        if score is None:
            problems.append(f"{key}: {why}")
            continue
        if not 0 <= score <= 100:
            problems.append(f"{key}: score {score:g} outside 0-100")
            continue
        found.setdefault(key, []).append(score)
    missing = [k for k in keys if k not in found and not any(p.startswith(f"{k}:") for p in problems)]
    twice = [k for k, v in found.items() if len(v) > 1]
    if missing:
        problems.append(f"{len(missing)} candidate(s) without an entry (first: {missing[0]})")
    problems.extend(f"{k}: scored {len(found[k])} times" for k in twice)
    if problems:
        return SeedParse(None, "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))
    return SeedParse({k: found[k][0] for k in keys}, "")


@dataclass
class ScoreTable:
    """Judge scores of every document x candidate, plus what the report needs besides.

    ``scores[d, c]`` is the mean over repeats of candidate ``keys[c]`` on document ``d``
    (NaN where no score); ``complete[d]`` says every candidate has one. ``keys[0]`` is
    the plain generation when the file has one.
    """

    source: str                              # "seed" or "judge"
    path: str
    keys: list[str]
    ids: list[str]
    scores: np.ndarray                       # (n_docs, n_keys)
    complete: np.ndarray                     # (n_docs,) bool
    exclusions: list[dict]                   # {"index", "id", "reason"}
    records: Optional[list[dict]]            # generation records (document, summary, candidates)
    stored_eval_scores: Optional[np.ndarray] = None       # seed: (n_docs, 2), NaN where absent
    repeat_scores: Optional[list[dict]] = None            # judge: per doc {key: [score|None per repeat]}
    orders: Optional[list[Optional[list]]] = None         # judge: per doc, per repeat, presented keys
    prompt_tokens: Optional[list[float]] = None           # per doc, from the generation metadata sidecar
    selection_buckets: Optional[list[float]] = None       # per doc, the generate --buckets value (same sidecar)
    meta: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def plain_index(self) -> int:
        if PLAIN_KEY not in self.keys:
            raise UsageError(f"{self.path}: no {PLAIN_KEY!r} candidate, so there is no plain generation to "
                             f"compare with")
        return self.keys.index(PLAIN_KEY)


def _ordered_keys(keys: Sequence[str]) -> list[str]:
    return ([PLAIN_KEY] if PLAIN_KEY in keys else []) + [k for k in keys if k != PLAIN_KEY]


def detect_format(data: Any) -> str:
    """'judge' (our scores file), 'seed' (a seed judged file) or a UsageError saying what it is."""
    if isinstance(data, dict) and data.get("format") == "attn_transition.judge_scores":
        return "judge"
    if isinstance(data, list) and data and isinstance(data[0], dict):
        if "gpt4_eva" in data[0] or "eval_scores" in data[0]:
            return "seed"
        if "document" in data[0]:
            raise UsageError("this is a generation file without judge scores; score it first: "
                             "attn-transition judge FILE.json")
    raise UsageError("not a scores file: expected our judge output (a JSON object with "
                     "\"format\": \"attn_transition.judge_scores\") or a seed judged file (a JSON list of "
                     "records with 'gpt4_eva' and 'eval_scores')")


def table_from_seed(records: list[dict], path: str) -> ScoreTable:
    validate_records(records, path)
    keys = _ordered_keys(candidate_keys(records[0]))
    n = len(records)
    scores = np.full((n, len(keys)), np.nan)
    stored = np.full((n, 2), np.nan)
    exclusions: list[dict] = []
    for i, rec in enumerate(records):
        ev = rec.get("eval_scores")
        if ev is not None:
            if not (isinstance(ev, list) and len(ev) == 2 and all(isinstance(x, (int, float)) for x in ev)):
                raise UsageError(f"{path}: record {i} (id {rec['id']!r}) field 'eval_scores' must be a list of two "
                                 f"numbers [plain, best of the rest], got {ev!r}")
            stored[i] = ev
        rec_keys = candidate_keys(rec)
        if set(rec_keys) != set(keys):
            exclusions.append({"index": i, "id": str(rec["id"]),
                               "reason": "candidate keys differ from the first record's"})
            continue
        if "gpt4_eva" not in rec:
            exclusions.append({"index": i, "id": str(rec["id"]), "reason": "no 'gpt4_eva' field"})
            continue
        parsed = parse_seed_eva(rec["gpt4_eva"], keys)
        if parsed.scores is None:
            exclusions.append({"index": i, "id": str(rec["id"]), "reason": parsed.reason})
            continue
        scores[i] = [parsed.scores[k] for k in keys]
    complete = ~np.isnan(scores).any(axis=1)
    table = ScoreTable("seed", path, keys, [str(r["id"]) for r in records], scores, complete, exclusions,
                       records, stored_eval_scores=stored, meta={"judge": {"model": "GPT-4 (the seed's)",
                                                                           "protocol": "joint (seed)"}})
    table.notes.append("seed file: its judge saw every candidate under its configuration name, in one fixed "
                       "order, once; name, position and judge-noise effects are not controlled (our `judge` "
                       "anonymises, shuffles and can repeat)")
    return table


def table_from_judge(data: dict, path: str, outputs: Optional[str] = None, *, load_outputs: bool = True) -> ScoreTable:
    """Our scores file; the generation file it names is read for texts (ROUGE, lengths)."""
    try:
        keys = _ordered_keys(data["candidate_keys"])
        docs = data["documents"]
    except (KeyError, TypeError) as exc:
        raise UsageError(f"{path}: scores file lacks field {exc}") from None
    n = len(docs)
    scores = np.full((n, len(keys)), np.nan)
    exclusions: list[dict] = []
    repeat_scores, orders = [], []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or not isinstance(doc.get("scores"), dict):
            raise UsageError(f"{path}: document {i} has no 'scores' object")
        per_key = doc["scores"]
        repeat_scores.append(per_key)
        orders.append(doc.get("orders"))
        missing = [k for k in keys if not any(v is not None for v in per_key.get(k) or [])]
        if missing:
            fails = [f for f in doc.get("failures") or [] if isinstance(f, dict)]
            refused = [f for f in fails if f.get("http_status")]
            why = f"{len(fails) - len(refused)} bad repl(ies) recorded"
            if refused:
                why += f", {len(refused)} request(s) refused: {str(refused[0].get('error'))[:200]}"
            exclusions.append({"index": i, "id": str(doc.get("id")),
                               "reason": f"no score for {len(missing)} candidate(s) (first: {missing[0]}); {why}"})
            continue
        for c, k in enumerate(keys):
            vals = [float(v) for v in per_key[k] if v is not None]
            scores[i, c] = sum(vals) / len(vals)
    complete = ~np.isnan(scores).any(axis=1)
    table = ScoreTable("judge", path, keys, [str(d.get("id")) for d in docs], scores, complete, exclusions, None,
                       repeat_scores=repeat_scores, orders=orders,
                       meta={k: data.get(k) for k in ("judge", "usage", "summary", "outputs")})
    if not load_outputs:
        return table
    out_info = data.get("outputs") or {}
    out_path = Path(outputs) if outputs else (Path(path).parent / out_info["path"] if out_info.get("path") else None)
    if out_path is None or not out_path.exists():
        table.notes.append(f"generation file {out_path} not found: no ROUGE, lengths from nothing "
                           f"(pass --outputs PATH)")
        return table
    records = read_records(out_path)
    if len(records) != n or [str(r["id"]) for r in records] != table.ids:
        raise UsageError(f"{out_path} does not match {path}: its record ids differ from the judged documents; "
                         f"pass the generation file that was judged with --outputs PATH")
    if out_info.get("sha256"):
        if file_sha256(out_path) != out_info["sha256"]:
            raise UsageError(f"{out_path} changed since it was judged (sha256 differs); rerun "
                             f"`attn-transition judge {out_path}` (unchanged answers come from the cache)")
    table.records = records
    table.prompt_tokens = read_prompt_tokens(out_path, table.ids)
    table.selection_buckets = read_selection_buckets(out_path, table.ids)
    return table


def _sidecar_numbers(generation_file: str | os.PathLike, ids: Sequence[str], name: str) -> Optional[list[float]]:
    """Field ``name`` of every id in ``<generation file>.meta.json`` (``documents: [{"id",
    name, ...}]``); ``None`` unless every id has a number there."""
    meta = Path(str(generation_file) + ".meta.json")
    if not meta.exists():
        return None
    try:
        docs = read_json(meta).get("documents") or []
        by_id = {str(d["id"]): float(d[name]) for d in docs
                 if isinstance(d, dict) and isinstance(d.get(name), (int, float)) and not isinstance(d[name], bool)}
    except (UsageError, AttributeError, KeyError, TypeError, ValueError):   # a sidecar is optional
        return None
    if not all(i in by_id for i in ids):
        return None
    return [by_id[i] for i in ids]


def read_prompt_tokens(generation_file: str | os.PathLike, ids: Sequence[str]) -> Optional[list[float]]:
    """Prompt lengths from ``<generation file>.meta.json`` (written by ``attn-transition
    generate``: ``documents: [{"id", "prompt_tokens"}]``); ``None`` unless every id has one."""
    return _sidecar_numbers(generation_file, ids, "prompt_tokens")


def read_selection_buckets(generation_file: str | os.PathLike, ids: Sequence[str]) -> Optional[list[float]]:
    """The ``generate --buckets`` value each document was selected for (``documents[].bucket``
    of the same sidecar); ``None`` unless every id has a non-null one."""
    return _sidecar_numbers(generation_file, ids, "bucket")


def load_scores(path: str | os.PathLike, outputs: Optional[str] = None) -> ScoreTable:
    path = Path(path)
    data = read_json(path)
    try:
        kind = detect_format(data)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None
    if kind == "seed":
        table = table_from_seed(data, str(path))
        table.prompt_tokens = read_prompt_tokens(path, table.ids)
        table.selection_buckets = read_selection_buckets(path, table.ids)
        return table
    return table_from_judge(data, str(path), outputs)
