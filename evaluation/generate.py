"""``attn-transition generate``: XSum-style summaries, plain and with attention transition,
written in the seed's JSON format.

The seed paper generated XSum summaries with LLaMA-7b for documents of about 800, 1200,
1600 and 1900 prompt tokens, once plainly (``decode_or``) and once per attention-transition
setting (``decode_al_05_be_01_lay_2`` ...), and stored them as a JSON list for a judge.
This module is that workflow as a Python API (used by the notebook) and a command:

    docs = load_documents("data.jsonl")                    # or "EdinburghNLP/xsum"
    template = load_template("auto", tokenizer)             # base / chat / a JSON file
    prompts = render_prompts(template, tokenizer, docs)
    records = [new_record(d) for d in docs]
    generate_records(model, tokenizer, records, prompts, parse_grid("alpha=0.5,1;beta=0.1"),
                     add_special_tokens=template.add_special_tokens, max_new_tokens=50)

Loop order: one pass per output key (plain first, then each config), every document of
that pass batched with left padding, so the model is re-configured once per config.
Outputs are written atomically after every batch; ``--resume`` fills only missing keys,
also in files written by the seed's own code. With ``accelerate launch`` the documents
are sharded by rank, each rank writes ``<output>.rank<k>.json`` and rank 0 merges them
in input order.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import platform
import random
import re
import sys
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from attn_transition.commands import register_command
from attn_transition.config import SCHEDULES, ClassicConfig, TransitionConfig, parse_config
from attn_transition.errors import ConfigError, UsageError, did_you_mean

from .models import generate_greedy as generate_batch
from .seedformat import (PLAIN_KEY, REQUIRED_FIELDS, config_key, parse_config_key, read_json, read_records,
                         write_json_atomic, write_records)

__all__ = [
    "SAMPLE_PATH", "HUB_DATASET", "SEED_GRID", "PromptTemplate", "Selection", "load_documents",
    "load_template", "render_prompts", "prompt_lengths", "bucket_of", "select_by_buckets", "select_first",
    "seed_grid", "parse_grid", "collect_configs", "new_record", "merge_outputs", "shard_indices",
    "generate_batch", "generate_records", "meta_path", "add_arguments", "run", "EPILOG",
]

PACKAGE_DIR = Path(__file__).parent
PROMPTS_DIR = PACKAGE_DIR / "prompts"
SAMPLE_PATH = PACKAGE_DIR / "data" / "xsum_sample.jsonl"
HUB_DATASET = "EdinburghNLP/xsum"
META_FORMAT = "attn_transition.generate/1"
BUILTIN_TEMPLATES = {"base": "summarize_base.json", "chat": "summarize_chat.json"}
PLACEHOLDER = "{document}"

# The seed's released grid (63 configs; its published files hold a subset of them).
SEED_GRID: dict[str, tuple[float, ...]] = {
    "alpha": (0.5, 1, 1.5),
    "beta": (0.1, 0.3, 0.5, 0.8, 1, 1.2, 1.5),
    "intervals_per_layer": (1, 2, 3),
}


# --------------------------------------------------------------------------- documents

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _check_rows(rows: Iterable[Any], source: str, where: Callable[[int], str]) -> list[dict]:
    """Keep ``document``, ``summary``, ``id`` of every row; raise naming the row and field that is wrong."""
    out: list[dict] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UsageError(f"{source}: {where(i)} is a {type(row).__name__}, expected an object with "
                             f"fields {', '.join(REQUIRED_FIELDS)}")
        for name in REQUIRED_FIELDS:
            if name not in row or row[name] is None:
                found = ", ".join(map(str, row)) or "none"
                raise UsageError(f"{source}: {where(i)} (id {row.get('id', '?')!r}) has no {name!r} field "
                                 f"(fields found: {found}); every record needs {', '.join(REQUIRED_FIELDS)}")
        if not isinstance(row["document"], str) or not row["document"].strip():
            raise UsageError(f"{source}: {where(i)} (id {row['id']!r}) has an empty or non-text 'document'")
        if not isinstance(row["summary"], str):
            raise UsageError(f"{source}: {where(i)} (id {row['id']!r}) field 'summary' must be text, "
                             f"got {type(row['summary']).__name__}")
        doc_id = str(row["id"])
        if doc_id in seen:
            raise UsageError(f"{source}: {where(i)} repeats id {doc_id!r} of {where(seen[doc_id])}; "
                             f"ids must be unique (they key --resume and the merge of shards)")
        seen[doc_id] = i
        out.append({"document": row["document"], "summary": row["summary"], "id": doc_id})
    return out


def _read_jsonl(path: Path) -> list[dict]:
    rows: list[Any] = []
    lines: list[int] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}: line {number} is not valid JSON ({exc.msg}); "
                                 f"a .jsonl file holds one JSON object per line") from None
            lines.append(number)
    return _check_rows(rows, str(path), lambda i: f"record {i} (line {lines[i]})")


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected a JSON list of records (or {{\"data\": [...]}}), "
                         f"got {type(data).__name__}")
    return _check_rows(data, str(path), lambda i: f"record {i}")


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # Row i is on line i + 2 (line 1 is the header) unless a field spans lines.
    return _check_rows(rows, str(path), lambda i: f"record {i} (row {i + 2})")


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv}


def _read_hub(name: str, split: str) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise UsageError(f"loading {name} needs the datasets package (pip install datasets); or pass a "
                         f"local JSON / JSONL / CSV file with fields {', '.join(REQUIRED_FIELDS)}") from None
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # network, offline mode, unknown split: all the user's to fix
        raise UsageError(f"could not load {name} (split {split!r}) through datasets: {_first_line(exc)}; "
                         f"without the Hugging Face hub pass a local JSON / JSONL / CSV file with fields "
                         f"{', '.join(REQUIRED_FIELDS)} instead") from None
    return _check_rows(ds, f"{name}[{split}]", lambda i: f"record {i}")


def load_documents(source: str | os.PathLike = SAMPLE_PATH, split: str = "test") -> list[dict]:
    """Documents as ``{"document", "summary", "id"}`` dicts (ids as text), in input order.

    ``source`` is a local ``.json`` (a list of objects), ``.jsonl`` or ``.csv`` file, or a
    dataset id on the Hugging Face hub (``EdinburghNLP/xsum``; also ``xsum``) loaded through
    ``datasets`` with ``split``. Extra fields (earlier generations, scores) are ignored.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file():
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise UsageError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
                             f"use one of {', '.join(_READERS)}")
        return reader(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; pass a .json, .jsonl or .csv file")
    if text.lower() == "xsum":
        text = HUB_DATASET
    if path.suffix.lower() in _READERS or text.startswith((".", "/", "~")) or "/" not in text:
        raise UsageError(f"data file {text} does not exist; pass a local .json / .jsonl / .csv file "
                         f"or a hub dataset id such as {HUB_DATASET}")
    return _read_hub(text, split)


def new_record(doc: dict) -> dict:
    """A fresh output record in the seed's key order: document, summary, id."""
    return {"document": doc["document"], "summary": doc["summary"], "id": str(doc["id"])}


# --------------------------------------------------------------------------- prompt templates

TEMPLATE_KINDS = ("base", "chat")
_TEMPLATE_FIELDS = ("name", "version", "kind", "description", "template", "system", "user")


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned prompt. ``base``: ``template`` with ``{document}``, tokenized with the
    tokenizer's special tokens; ``chat``: an optional ``system`` message and a ``user``
    message with ``{document}``, rendered by the tokenizer's chat template."""

    name: str
    version: int
    kind: str
    template: str = ""
    system: Optional[str] = None
    user: str = ""
    description: str = ""
    source: str = "builtin"

    def __post_init__(self) -> None:
        where = f"prompt template {self.source}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise UsageError(f"{where}: 'name' must be a non-empty string, got {self.name!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise UsageError(f"{where}: 'version' must be an int >= 1, got {self.version!r}")
        if self.kind not in TEMPLATE_KINDS:
            raise UsageError(f"{where}: 'kind' must be one of {list(TEMPLATE_KINDS)}, got {self.kind!r}")
        text_field = "template" if self.kind == "base" else "user"
        text = getattr(self, text_field)
        if not isinstance(text, str) or PLACEHOLDER not in text:
            raise UsageError(f"{where}: a {self.kind} template needs a {text_field!r} string containing "
                             f"{PLACEHOLDER}, got {text!r}")
        if self.system is not None and not isinstance(self.system, str):
            raise UsageError(f"{where}: 'system' must be a string, got {type(self.system).__name__}")

    @property
    def add_special_tokens(self) -> bool:
        """Base prompts get the tokenizer's BOS; a chat template writes its own special tokens."""
        return self.kind == "base"

    def render(self, document: str, tokenizer: Any = None) -> str:
        if self.kind == "base":
            return self.template.replace(PLACEHOLDER, document)
        if getattr(tokenizer, "chat_template", None) is None:
            raise UsageError(f"prompt template {self.name!r} is a chat template but the tokenizer has no "
                             f"chat template; use --template base")
        user = self.user.replace(PLACEHOLDER, document)
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
                   [{"role": "user", "content": user}]
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:
            if not self.system:
                raise
            # Some chat templates refuse a system turn: put the instruction in the user turn.
            merged = [{"role": "user", "content": f"{self.system}\n\n{user}"}]
            return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)

    def as_dict(self) -> dict:
        text = {"template": self.template} if self.kind == "base" else {"system": self.system, "user": self.user}
        return {"name": self.name, "version": self.version, "kind": self.kind, "source": self.source,
                "text": text, "description": self.description}

    def same_prompt(self, other: dict) -> bool:
        """Whether a template recorded by :meth:`as_dict` renders the same prompts."""
        mine = self.as_dict()
        return all(mine[k] == other.get(k) for k in ("name", "version", "kind", "text"))


def _template_from_file(path: Path, source: str) -> PromptTemplate:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"prompt template {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise UsageError(f"prompt template {path} must be a JSON object with fields "
                         f"{', '.join(_TEMPLATE_FIELDS)}")
    for key in data:
        if key not in _TEMPLATE_FIELDS:
            extra = did_you_mean(key, _TEMPLATE_FIELDS)
            raise UsageError(f"prompt template {path}: unknown field {key!r}{extra}; "
                             f"fields: {', '.join(_TEMPLATE_FIELDS)}")
    for key in ("name", "version", "kind"):
        if key not in data:
            raise UsageError(f"prompt template {path}: missing field {key!r} (needs name, version, kind and "
                             f"'template' for kind base or 'user' for kind chat)")
    return PromptTemplate(**data, source=source)


def load_template(spec: str, tokenizer: Any = None) -> PromptTemplate:
    """``auto`` (chat if the tokenizer has a chat template, else base), ``base``, ``chat``,
    or the path of a JSON file with ``name``, ``version``, ``kind`` and the text fields."""
    if spec == "auto":
        spec = "chat" if getattr(tokenizer, "chat_template", None) is not None else "base"
    if spec in BUILTIN_TEMPLATES:
        template = _template_from_file(PROMPTS_DIR / BUILTIN_TEMPLATES[spec], "builtin")
    else:
        path = Path(spec).expanduser()
        if path.is_file():
            template = _template_from_file(path, str(path))
        elif spec.endswith(".json") or os.sep in spec:
            raise UsageError(f"prompt template file {spec} does not exist")
        else:
            choices = ["auto", *BUILTIN_TEMPLATES]
            extra = did_you_mean(spec, choices)
            raise UsageError(f"unknown --template {spec!r}{extra}; use one of {', '.join(choices)} "
                             f"or the path of a JSON template file")
    if template.kind == "chat" and tokenizer is not None and getattr(tokenizer, "chat_template", None) is None:
        raise UsageError(f"prompt template {template.name!r} is a chat template but the tokenizer has no "
                         f"chat template; use --template base")
    return template


def render_prompts(template: PromptTemplate, tokenizer: Any, docs: Sequence[dict]) -> list[str]:
    return [template.render(d["document"], tokenizer) for d in docs]


def prompt_lengths(tokenizer: Any, prompts: Sequence[str], add_special_tokens: bool) -> list[int]:
    """Token count of each prompt as the model will see it."""
    if not prompts:
        return []
    ids = tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
    return [len(x) for x in ids]


# --------------------------------------------------------------------------- selection

@dataclass
class Selection:
    """Chosen positions (into the candidate list, in candidate order) and their buckets."""

    indices: list[int]
    buckets: list[Optional[int]]
    counts: dict[int, int] = field(default_factory=dict)
    scanned: int = 0
    observed: Optional[tuple[int, int]] = None   # shortest and longest prompt scanned


def _check_buckets(buckets: Sequence[int], per_bucket: int, tolerance: float) -> None:
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
    _check_buckets(buckets, per_bucket, tolerance)
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
    wanted = ", ".join(f"{b}" for b in buckets)
    if sel.observed is None:
        return "no documents to select from: the data is empty"
    lo, hi = sel.observed
    return (f"no document has a prompt length within +-{tolerance:.0%} of the buckets {wanted} tokens: the "
            f"{sel.scanned} prompts scanned are {lo}..{hi} tokens long; widen the window with "
            f"--bucket-tolerance, pick --buckets inside {lo}..{hi}, or select by count with --limit")


def _check_limit(limit: Optional[int]) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(f"--limit must be an int >= 1, got {limit!r}")


def select_first(n: int, limit: Optional[int]) -> Selection:
    """The first ``limit`` of ``n`` documents (all of them without a limit)."""
    _check_limit(limit)
    k = n if limit is None else min(n, limit)
    return Selection(list(range(k)), [None] * k, {}, scanned=n)


def _chunked(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def _lazy_lengths(tokenizer: Any, template: PromptTemplate, docs: Sequence[dict],
                  chunk: int = 256) -> Iterator[int]:
    """Prompt lengths computed chunk by chunk, so bucketing a large set can stop early."""
    for part in _chunked(docs, chunk):
        yield from prompt_lengths(tokenizer, render_prompts(template, tokenizer, part),
                                  template.add_special_tokens)


# --------------------------------------------------------------------------- configs

def seed_grid() -> list[ClassicConfig]:
    """The seed's grid: alpha x beta x intervals_per_layer (63 classic configs)."""
    return [ClassicConfig(alpha=a, beta=b, intervals_per_layer=k)
            for a, b, k in itertools.product(*SEED_GRID.values())]


def parse_grid(spec: str) -> list[TransitionConfig]:
    """Configs of a grid spec.

    ``seed`` is :func:`seed_grid`; ``none`` is empty; otherwise ``name=v1,v2;name=v3`` over
    the fields of a schedule (``classic`` unless the spec starts with ``sra:``), e.g.
    ``alpha=0.5,1;beta=0.1,0.5;intervals_per_layer=2`` (the product, first field outermost).
    Every combination is validated like ``parse_config``; bad ones raise ConfigError.
    """
    text = spec.strip()
    if text.lower() == "seed":
        return list(seed_grid())
    if text.lower() in ("none", ""):
        return []
    schedule = "classic"
    head, colon, body = text.partition(":")
    if colon:
        schedule = head.strip().lower()
        if schedule not in SCHEDULES:
            extra = did_you_mean(schedule, SCHEDULES)
            raise ConfigError(f"grid {spec!r}: unknown schedule {schedule!r}{extra}; use one of {sorted(SCHEDULES)}")
    else:
        body = text
    names = [f.name for f in fields(SCHEDULES[schedule])]
    axes: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in body.split(";"))):
        name, eq, values = part.partition("=")
        name = name.strip()
        if not eq:
            raise ConfigError(f"grid {spec!r}: {part!r} must look like name=value1,value2")
        if name not in names:
            extra = did_you_mean(name, names)
            raise ConfigError(f"grid {spec!r}: {SCHEDULES[schedule].__name__} has no field {name!r}{extra}; "
                              f"fields: {', '.join(names)}")
        if name in axes:
            raise ConfigError(f"grid {spec!r}: field {name!r} appears twice; list all its values once")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise ConfigError(f"grid {spec!r}: field {name!r} has no values")
        axes[name] = vals
    if not axes:
        return [parse_config(schedule)]
    out = []
    for combo in itertools.product(*axes.values()):
        item = ",".join(f"{k}={v}" for k, v in zip(axes, combo))
        try:
            out.append(parse_config(f"{schedule}:{item}"))
        except ConfigError as exc:
            raise ConfigError(f"grid {spec!r}: {exc}") from None
    return out


def _checked_key(cfg: TransitionConfig) -> str:
    key = config_key(cfg)
    back = parse_config_key(key)
    if back != cfg:
        raise UsageError(f"config {cfg} cannot be named in the seed's output-key scheme: {key!r} reads back "
                         f"as {back}; classic keys write values without the decimal point, so each must "
                         f"be below 10 with at most 3 decimals")
    return key


def collect_configs(grid: Optional[str], specs: Sequence[str] = ()) -> dict[str, TransitionConfig]:
    """Output key -> config for ``--grid`` then every ``--config``, duplicates dropped, in order.

    With neither, the default classic config (the seed's ``attn_transition=True``)."""
    configs: list[TransitionConfig] = parse_grid(grid) if grid else []
    configs += [parse_config(s) for s in specs]
    if grid is None and not specs:
        configs = [ClassicConfig()]
    out: dict[str, TransitionConfig] = {}
    for cfg in configs:
        out.setdefault(_checked_key(cfg), cfg)
    return out


def config_as_dict(cfg: TransitionConfig) -> dict:
    return {"schedule": cfg.schedule, **{f.name: getattr(cfg, f.name) for f in fields(cfg)}}


# --------------------------------------------------------------------------- generation

def _tqdm(**kwargs: Any):
    from tqdm import tqdm          # plain text bars: also in notebooks without ipywidgets

    return tqdm(**kwargs)


def generate_records(model: Any, tokenizer: Any, records: list[dict], prompts: Sequence[str],
                     configs: dict[str, TransitionConfig] | Sequence[TransitionConfig], *,
                     add_special_tokens: bool, max_new_tokens: int = 50, batch_size: int = 4,
                     include_plain: bool = True, lengths: Optional[Sequence[int]] = None,
                     on_batch: Optional[Callable[[], None]] = None, progress: bool = True,
                     timings: Optional[dict[str, dict]] = None) -> dict[str, dict]:
    """Fill every missing ``decode_or`` / ``decode_<config>`` of ``records`` in place.

    One pass per key (plain first), documents batched longest first; ``on_batch`` runs
    after each batch (the CLI saves there). Keys already present are never regenerated.
    The model's transition state is restored afterwards. Returns ``{key: {"seconds",
    "documents"}}`` for the keys generated now; a ``timings`` dict given is filled the same
    way as each pass finishes (so an interrupted run still reports its finished passes).
    """
    import attn_transition as at

    if len(prompts) != len(records):
        raise ValueError(f"{len(prompts)} prompts for {len(records)} records")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"--batch-size must be an int >= 1, got {batch_size!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be an int >= 1, got {max_new_tokens!r}")
    if not isinstance(configs, dict):
        configs = {_checked_key(c): c for c in configs}
    passes: list[tuple[str, Optional[TransitionConfig]]] = ([(PLAIN_KEY, None)] if include_plain else [])
    passes += list(configs.items())
    if lengths is None:
        lengths = prompt_lengths(tokenizer, prompts, add_special_tokens)
    todo = {key: sorted((i for i, r in enumerate(records) if key not in r), key=lambda i: -lengths[i])
            for key, _ in passes}
    passes = [(key, cfg) for key, cfg in passes if todo[key]]
    timings = {} if timings is None else timings
    before = at.get_state(model)
    saved = (before.config, before.full_matrix) if before is not None else None
    outer = _tqdm(total=len(passes), desc="configs", unit="config", disable=not progress or not passes,
                  position=0)
    try:
        for key, cfg in passes:
            outer.set_postfix_str(key)
            plain_switch = False
            if cfg is None:
                plain_switch = at.is_enabled(model)
            else:
                at.enable(model, cfg)
            started = time.perf_counter()
            indices = todo[key]
            inner = _tqdm(total=len(indices), desc=key, unit="doc", leave=False, disable=not progress,
                          position=1)
            for batch in _chunked(indices, batch_size):
                texts = generate_batch(model, tokenizer, [prompts[i] for i in batch],
                                       max_new_tokens=max_new_tokens, add_special_tokens=add_special_tokens,
                                       plain_switch=plain_switch)
                for i, text in zip(batch, texts):
                    records[i][key] = text
                if on_batch is not None:
                    on_batch()
                inner.update(len(batch))
            inner.close()
            timings[key] = {"seconds": round(time.perf_counter() - started, 3), "documents": len(indices)}
            outer.update(1)
    finally:
        outer.close()
        if saved is not None:
            at.enable(model, saved[0], full_matrix=saved[1])
        elif at.is_enabled(model):
            at.disable(model)
    return timings


# --------------------------------------------------------------------------- files, shards, metadata

def meta_path(output: str | os.PathLike) -> Path:
    """The sidecar of an output file: ``<output>.meta.json``."""
    output = Path(output)
    return output.with_name(output.name + ".meta.json")


def shard_path(output: Path, rank: int) -> Path:
    return output.with_name(f"{output.name}.rank{rank}.json")


def existing_shards(output: Path) -> list[Path]:
    """Shard files of ``output`` left by any earlier multi-process run (any world size)."""
    pattern = re.compile(re.escape(output.name) + r"\.rank\d+\.json")
    return sorted(p for p in output.parent.glob(f"{output.name}.rank*.json") if pattern.fullmatch(p.name))


def combine_timings(per_rank: Iterable[dict[str, dict]]) -> dict[str, dict]:
    """Timings of ranks that ran side by side: documents add up, seconds is the slowest rank's."""
    out: dict[str, dict] = {}
    for timings in per_rank:
        for key, t in timings.items():
            prev = out.get(key, {"seconds": 0.0, "documents": 0})
            out[key] = {"seconds": max(prev["seconds"], t["seconds"]), "documents": prev["documents"] + t["documents"]}
    return out


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """Positions handled by ``rank`` of ``world`` processes (round robin, so lengths balance)."""
    assert 0 <= rank < world, (rank, world)
    return list(range(rank, n, world))


def merge_outputs(records: list[dict], others: Iterable[dict]) -> int:
    """Copy into ``records`` (matched by id) every ``decode_*`` key they lack; returns the count."""
    by_id = {str(r["id"]): r for r in records}          # ids compare as text (a seed file may hold ints)
    added = 0
    for rec in others:
        target = by_id.get(str(rec.get("id")))
        if target is None:
            continue
        for key, value in rec.items():
            if key.startswith("decode_") and key not in target:
                target[key] = value
                added += 1
    return added





def _read_meta(path: Path) -> Optional[dict]:
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except UsageError as exc:
        raise UsageError(f"{exc}; delete it to resume without the old metadata") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object; delete it to resume without the old metadata")
    return data


def library_versions() -> dict[str, Optional[str]]:
    from importlib import metadata

    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in ("attn-transition", "torch", "transformers", "tokenizers", "accelerate", "datasets"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    import attn_transition

    out["attn-transition"] = attn_transition.__version__
    return out


# --------------------------------------------------------------------------- distributed

@dataclass
class DistState:
    rank: int = 0
    world: int = 1
    device: Optional[str] = None
    barrier: Callable[[], None] = lambda: None

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_state() -> DistState:
    """Rank and world size under ``accelerate launch`` / ``torchrun``; one process otherwise."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        world = 1
    if world <= 1:
        return DistState()
    try:
        from accelerate import PartialState
    except ImportError:
        raise UsageError(f"WORLD_SIZE={world} but accelerate is not installed: pip install accelerate, "
                         f"or run a single process") from None
    import torch

    # Without a GPU, accelerate needs cpu=True to set up a multi-process (gloo) group.
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes != world:
        raise UsageError(f"WORLD_SIZE={world} but accelerate set up {state.num_processes} process(es) "
                         f"({state.distributed_type}); launch with accelerate launch or torchrun")
    return DistState(state.process_index, state.num_processes, str(state.device), state.wait_for_everyone)


# --------------------------------------------------------------------------- command line

EPILOG = """examples:
  # the seed's experiment: LLaMA-7b, four length buckets, the full grid, 50 new tokens
  attn-transition generate --model huggyllama/llama-7b --dtype float16 --device cuda \\
      --buckets 800,1200,1600,1900 --per-bucket 200 --grid seed --max-new-tokens 50 -o xsum_llama7b.json
  # a local file, two explicit configs, SmolLM2 on CPU
  attn-transition generate data.jsonl --limit 3 --config classic --config sra -o out.json
  # a compact grid; then fill what is missing after an interruption
  attn-transition generate data.jsonl --grid 'alpha=0.5,1;beta=0.1,0.5;intervals_per_layer=2' -o out.json
  attn-transition generate data.jsonl --grid 'alpha=0.5,1;beta=0.1,0.5;intervals_per_layer=2' -o out.json --resume
  # several GPUs (documents sharded by rank; rank 0 merges)
  accelerate launch -m attn_transition.cli generate --model huggyllama/llama-7b --dtype float16 --grid seed ...

Output: a JSON list of {document, summary, id, decode_or, decode_<config>...} plus
<output>.meta.json (model, prompt template, grid, settings, versions, timings, buckets).
"""


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints like 800,1200, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .models import add_model_arguments

    parser.add_argument("data", nargs="?", default=None,
                        help=f"a local .json / .jsonl / .csv file with fields document, summary, id, or a hub "
                             f"dataset id (default {HUB_DATASET}; with --resume and no data: the output's own "
                             f"documents)")
    parser.add_argument("-o", "--output", required=True, help="output JSON file (the seed's format)")
    parser.add_argument("--split", default="test", help="dataset split for a hub dataset (default test)")
    sel = parser.add_argument_group("document selection")
    sel.add_argument("--buckets", type=_int_list, default=None,
                     help="prompt-token lengths to select around, e.g. 800,1200,1600,1900 (the seed's)")
    sel.add_argument("--per-bucket", type=int, default=200, help="documents per bucket (default 200)")
    sel.add_argument("--bucket-tolerance", type=float, default=0.1,
                     help="accepted relative distance from a bucket (default 0.1 = +-10%%)")
    sel.add_argument("--limit", type=int, default=None,
                     help="at most this many documents (the first ones, after bucketing if --buckets)")
    sel.add_argument("--shuffle", action="store_true", help="shuffle the documents (with --seed) before selecting")
    sel.add_argument("--seed", type=int, default=0, help="seed of --shuffle (generation is greedy; default 0)")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--template", default="auto",
                     help="prompt: base (the seed's '<document> Please summarize context above:'), chat (a "
                          "system instruction + chat template), auto (chat if the tokenizer has a chat "
                          "template; default) or a JSON template file")
    gen.add_argument("--grid", default=None,
                     help="'seed' (alpha 0.5,1,1.5 x beta 0.1..1.5 x intervals 1,2,3 = 63 configs), 'none', or "
                          "a spec like 'alpha=0.5,1;beta=0.1,0.5;intervals_per_layer=2' (prefix 'sra:' for SRA)")
    gen.add_argument("--config", action="append", default=[], metavar="SPEC",
                     help="an explicit config, repeatable: classic, sra, classic:alpha=1,beta=0.5 "
                          "(default without --grid: classic)")
    gen.add_argument("--no-plain", action="store_true", help="do not generate the plain output decode_or")
    gen.add_argument("--max-new-tokens", type=int, default=50, help="new tokens per summary (seed: 50)")
    gen.add_argument("--batch-size", type=int, default=4, help="documents per generate call (default 4)")
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--resume", action="store_true",
                           help="keep the existing output (also one written by the seed's code) and fill only "
                                "missing outputs")
    run_group.add_argument("--overwrite", action="store_true", help="replace an existing output")
    run_group.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_arguments(parser)


def _check_compatible(meta: Optional[dict], model_name: str, template: PromptTemplate,
                      max_new_tokens: int, output: Path) -> None:
    """Refuse to mix generations made with another model, prompt or length in one file."""
    if not meta:
        return
    old_model = (meta.get("model") or {}).get("name")
    if old_model is not None and old_model != model_name:
        raise UsageError(f"{output} was generated with --model {old_model}; resuming with {model_name} would mix "
                         f"models in one file (use the same --model, or --overwrite / another -o)")
    old_template = meta.get("prompt_template")
    if old_template is not None and not template.same_prompt(old_template):
        raise UsageError(f"{output} was generated with prompt template {old_template.get('name')!r} "
                         f"v{old_template.get('version')}; resuming with {template.name!r} v{template.version} "
                         f"would mix prompts (pass the same --template, or --overwrite / another -o)")
    old_max = (meta.get("generation") or {}).get("max_new_tokens")
    if old_max is not None and old_max != max_new_tokens:
        raise UsageError(f"{output} was generated with --max-new-tokens {old_max}; resuming with {max_new_tokens} "
                         f"would mix lengths (pass --max-new-tokens {old_max})")


def _drop_merged_shards(output: Path, records: Sequence[dict], keys: Sequence[str], dist: DistState) -> None:
    """Remove the rank shards once ``output`` holds every output; otherwise keep them for a --resume."""
    missing = sum(1 for r in records for k in keys if k not in r)
    if missing:
        _note(dist, f"{missing} outputs are still missing; the rank shards stay next to {output.name} for a "
                    f"later --resume")
        return
    for shard in existing_shards(output):
        meta_path(shard).unlink(missing_ok=True)
        shard.unlink()


def _note(dist: DistState, text: str) -> None:
    if dist.main:
        print(f"attn-transition generate: {text}", file=sys.stderr, flush=True)


def _select(args: argparse.Namespace, docs: Sequence[dict], tokenizer: Any, template: PromptTemplate,
            dist: DistState) -> Selection:
    """``--buckets`` / ``--limit`` selection over ``docs``; notes the buckets left short."""
    if args.buckets is None:
        return select_first(len(docs), args.limit)
    selection = select_by_buckets(_lazy_lengths(tokenizer, template, docs), args.buckets,
                                  args.per_bucket, args.bucket_tolerance)
    if not selection.indices:
        raise UsageError(empty_selection_message(selection, args.buckets, args.bucket_tolerance))
    if args.limit is not None:
        selection.indices = selection.indices[:args.limit]
        selection.buckets = selection.buckets[:args.limit]
    for b in args.buckets:
        got = sum(1 for x in selection.buckets if x == b)
        if got < args.per_bucket:
            _note(dist, f"bucket {b}: {got} of {args.per_bucket} documents within "
                        f"+-{args.bucket_tolerance:.0%} (scanned {selection.scanned})")
    return selection


def run(args: argparse.Namespace) -> int:
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    output = Path(args.output).expanduser()
    mpath = meta_path(output)
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other: --resume keeps the existing output and "
                         "fills what is missing, --overwrite starts over")
    if output.is_dir():
        raise UsageError(f"-o {output} is a folder; pass a file name such as {output / 'xsum.json'}")
    if output.exists() and not (args.resume or args.overwrite):
        raise UsageError(f"{output} already exists; pass --resume to fill its missing outputs or --overwrite "
                         f"to replace it")
    if existing_shards(output) and not (args.resume or args.overwrite):
        names = ", ".join(p.name for p in existing_shards(output))
        raise UsageError(f"{names} hold the outputs of an interrupted multi-process run of {output.name}; pass "
                         f"--resume to keep and complete them or --overwrite to start over")
    # Cheap checks first: nothing is loaded before the arguments are known to be good.
    configs = collect_configs(args.grid, args.config)
    if not configs and args.no_plain:
        raise UsageError("nothing to generate: --no-plain and an empty grid with no --config")
    if args.buckets is not None:
        _check_buckets(args.buckets, args.per_bucket, args.bucket_tolerance)
    _check_limit(args.limit)
    for name in ("max_new_tokens", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be an int >= 1, got {getattr(args, name)}")

    dist = dist_state()
    if dist.world > 1 and args.device_map:
        raise UsageError("--device-map spreads one model over several GPUs; under accelerate launch each "
                         "process holds a whole model: drop --device-map or run one process")
    existing: list[dict] = []
    old_meta: Optional[dict] = None
    if args.resume and output.exists():
        existing = read_records(output)
        old_meta = _read_meta(mpath)
    docs: list[dict] = []
    data_source = args.data
    if data_source is not None or not existing:
        data_source = data_source or HUB_DATASET
        docs = load_documents(data_source, args.split)
        if not docs:
            raise UsageError(f"{data_source} holds no documents")
    else:
        data_source = (old_meta or {}).get("data", {}).get("source") or str(output)

    from .models import load_model

    device = dist.device if dist.world > 1 else args.device
    model, tokenizer = load_model(args.model, device=device, dtype=args.dtype, device_map=args.device_map,
                                  cache=args.cache_dir)
    template = load_template(args.template, tokenizer)
    _check_compatible(old_meta, args.model, template, args.max_new_tokens, output)
    if args.resume:
        for shard in existing_shards(output):     # each rank's sidecar records the run it belongs to
            _check_compatible(_read_meta(meta_path(shard)), args.model, template, args.max_new_tokens, shard)

    # Selection (on every rank alike: same data, same tokenizer, same order).
    if args.shuffle:
        order = list(range(len(docs)))
        random.Random(args.seed).shuffle(order)
        docs = [docs[i] for i in order]
    old_docs_meta = {d.get("id"): d for d in (old_meta or {}).get("documents", []) if isinstance(d, dict)}
    bucket_by_id: dict[str, Optional[int]] = {k: v.get("bucket") for k, v in old_docs_meta.items()}
    selection = _select(args, docs, tokenizer, template, dist) if docs else None
    if selection is not None:
        for i, b in zip(selection.indices, selection.buckets):
            bucket_by_id[docs[i]["id"]] = b

    records = existing
    appended = 0
    known = {str(r["id"]) for r in records}
    for i in (selection.indices if selection else []):
        if str(docs[i]["id"]) not in known:
            records.append(new_record(docs[i]))
            appended += 1
            known.add(str(docs[i]["id"]))
    prompts = render_prompts(template, tokenizer, records)
    lengths = prompt_lengths(tokenizer, prompts, template.add_special_tokens)
    limit_ctx = getattr(model.config, "max_position_embeddings", None)
    if limit_ctx:
        over = sum(1 for n in lengths if n + args.max_new_tokens > limit_ctx)
        if over:
            _note(dist, f"{over} prompts plus {args.max_new_tokens} new tokens exceed the model's "
                        f"max_position_embeddings={limit_ctx}")
    if args.buckets is not None:
        for rec, n in zip(records, lengths):
            if bucket_by_id.get(rec["id"]) is None:
                bucket_by_id[rec["id"]] = bucket_of(n, args.buckets, args.bucket_tolerance)

    # Outputs from an interrupted multi-process run.
    merged = 0
    if args.resume:
        for shard in existing_shards(output):
            merged += merge_outputs(records, read_records(shard))

    num_layers = None
    try:
        from attn_transition.patches.families import schedule_layout

        num_layers = schedule_layout(model.config)[0]   # hybrids: attention layers only
    except Exception:
        pass
    old_timings: dict[str, dict] = dict((old_meta or {}).get("timings", {}))
    runs: list[dict] = list((old_meta or {}).get("runs", []))
    all_keys = ([PLAIN_KEY] if not args.no_plain else []) + list(configs)
    old_grid = (old_meta or {}).get("grid", {}).get("configs", {})

    def build_meta(timings: dict[str, dict], finished: bool) -> dict:
        merged_timings = dict(old_timings)
        for key, t in timings.items():
            prev = merged_timings.get(key, {"seconds": 0.0, "documents": 0})
            merged_timings[key] = {"seconds": round(prev.get("seconds", 0.0) + t["seconds"], 3),
                                   "documents": prev.get("documents", 0) + t["documents"]}
        grid_configs = dict(old_grid)
        grid_configs.update({k: config_as_dict(c) for k, c in configs.items()})
        this_run = {"started": started_at, "finished": finished, "world_size": dist.world,
                    "seconds": round(time.perf_counter() - t0, 3), "generated": timings,
                    "argv_grid": args.grid, "argv_configs": list(args.config)}
        return {
            "format": META_FORMAT,
            "output": output.name,
            "model": {"name": args.model, "model_type": getattr(model.config, "model_type", None),
                      "num_layers": num_layers, "dtype": args.dtype,
                      "device": str(getattr(model, "device", device)), "device_map": args.device_map},
            "prompt_template": template.as_dict(),
            "data": {"source": str(data_source), "split": args.split, "shuffle": args.shuffle},
            "selection": {"buckets": args.buckets, "per_bucket": args.per_bucket if args.buckets else None,
                          "bucket_tolerance": args.bucket_tolerance if args.buckets else None,
                          "limit": args.limit,
                          "counts": ({str(b): sum(1 for r in records if bucket_by_id.get(r["id"]) == b)
                                      for b in args.buckets} if args.buckets else None)},
            "grid": {"spec": args.grid, "configs_given": list(args.config), "plain": not args.no_plain,
                     "keys": all_keys, "configs": grid_configs},
            "generation": {"max_new_tokens": args.max_new_tokens, "do_sample": False, "num_beams": 1,
                           "batch_size": args.batch_size, "padding_side": "left",
                           "add_special_tokens": template.add_special_tokens},
            "versions": library_versions(),
            "seed": args.seed,
            "timings": merged_timings,
            "runs": runs + [this_run],
            "documents": [{"id": r["id"], "bucket": bucket_by_id.get(r["id"]), "prompt_tokens": n}
                          for r, n in zip(records, lengths)],
        }

    mine = shard_indices(len(records), dist.rank, dist.world)
    my_records = [records[i] for i in mine]
    my_prompts = [prompts[i] for i in mine]
    my_lengths = [lengths[i] for i in mine]
    timings: dict[str, dict] = {}
    target = output if dist.world == 1 else shard_path(output, dist.rank)

    # A resumed file is rewritten only once something in it changes (a seed-written file keeps its bytes).
    dirty = [dist.world > 1 or not output.exists() or args.overwrite or appended > 0 or merged > 0]

    def save(changed: bool = False) -> None:
        dirty[0] = dirty[0] or changed
        if dirty[0]:
            write_records(target, my_records)
        if dist.world == 1:
            write_json_atomic(mpath, build_meta(timings, finished=False))
        else:
            write_json_atomic(meta_path(target), {
                "rank": dist.rank, "world_size": dist.world, "timings": timings,
                "model": {"name": args.model}, "prompt_template": template.as_dict(),
                "generation": {"max_new_tokens": args.max_new_tokens}})

    if args.overwrite and dist.main:
        for shard in existing_shards(output):    # an earlier run's shards must not be merged into this one
            meta_path(shard).unlink(missing_ok=True)
            shard.unlink()
    dist.barrier()          # every rank has read (or dropped) the old shards before any is rewritten
    save()
    todo_count = sum(1 for r in records for k in all_keys if k not in r)
    sharded = f", sharded over {dist.world} processes" if dist.world > 1 else ""
    _note(dist, f"{len(records)} documents (prompts {min(lengths)}..{max(lengths)} tokens{sharded}), "
                f"{len(all_keys)} outputs each, {todo_count} to generate; "
                f"template {template.name} v{template.version}")
    try:
        generate_records(
            model, tokenizer, my_records, my_prompts, configs, add_special_tokens=template.add_special_tokens,
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, include_plain=not args.no_plain,
            lengths=my_lengths, on_batch=lambda: save(changed=True), timings=timings,
            progress=not args.no_progress and dist.main)
    finally:
        save()
    if dist.world > 1:
        dist.barrier()
        if dist.main:
            per_rank = []
            for rank in range(dist.world):
                merge_outputs(records, read_records(shard_path(output, rank)))
                per_rank.append((_read_meta(meta_path(shard_path(output, rank))) or {}).get("timings", {}))
            write_records(output, records)
            write_json_atomic(mpath, build_meta(combine_timings(per_rank), finished=True))
            _drop_merged_shards(output, records, all_keys, dist)
        dist.barrier()
    else:
        write_json_atomic(mpath, build_meta(timings, finished=True))
        if merged:
            _drop_merged_shards(output, records, all_keys, dist)
    if dirty[0]:
        _note(dist, f"wrote {len(records)} records x {len(all_keys)} outputs to {output} (metadata {mpath.name}) "
                    f"in {time.perf_counter() - t0:.1f} s")
    else:
        _note(dist, f"nothing was missing: {output} is unchanged (metadata {mpath.name} written)")
    return 0

register_command('generate', help="XSum-style generation into the seed's JSON format",
                 add_arguments=add_arguments, run=run, epilog=EPILOG)
