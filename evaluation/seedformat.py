"""The seed's XSum output format: a JSON list of records.

Each record holds ``document``, ``summary``, ``id``, the plain generation ``decode_or``
and one ``decode_<config name>`` per attention-transition setting. Judged files (the
seed's own, or ours) may also carry ``gpt4_eva`` (the judge's free text) and
``eval_scores``. Config names follow the seed's scheme: ``decode_al_05_be_01_lay_2`` is
alpha 0.5, beta 0.1, 2 intervals per layer (the decimal point is dropped, so a value is
read as ``d.ddd``: the scheme cannot express values >= 10). SRA configs are named
``decode_sra`` plus the fields that differ from the defaults, with 'p' as the decimal
point: ``decode_sra_beg_5_thr_50_eo_0p5``. The key codec itself is
:func:`attn_transition.config.seed_key` / :func:`~attn_transition.config.parse_seed_key`,
re-exported here under the format's names.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from attn_transition.config import SEED_PLAIN_KEY as PLAIN_KEY
from attn_transition.config import parse_seed_key as parse_config_key
from attn_transition.config import seed_key as config_key
from attn_transition.errors import UsageError

from .runtime.files import read_json, write_json_atomic   # noqa: F401  (part of this module's API)

__all__ = ["PLAIN_KEY", "REQUIRED_FIELDS", "config_key", "parse_config_key", "candidate_keys",
           "read_records", "write_records", "validate_records", "read_json", "write_json_atomic"]

REQUIRED_FIELDS = ("document", "summary", "id")


def candidate_keys(record: dict) -> list[str]:
    """The generation keys of a record, in file order (``decode_or`` included)."""
    return [k for k in record if k.startswith("decode_")]


def validate_records(records: Any, source: str = "input") -> list[dict]:
    """Check the seed format; raise UsageError naming the record and field that is wrong.

    ``document`` and ``summary`` are non-null strings (a null would be judged as the text
    "None"), ``id`` a string or an int, unique, all of one type (1 and "1" would be one
    document after a round trip through other tools), every ``decode_*`` a string.
    """
    if not isinstance(records, list):
        raise UsageError(f"{source}: expected a JSON list of records, got {type(records).__name__}")
    seen: dict[Any, int] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise UsageError(f"{source}: record {i} is a {type(rec).__name__}, expected an object")
        for field in REQUIRED_FIELDS:
            if field not in rec:
                raise UsageError(f"{source}: record {i} (id {rec.get('id', '?')!r}) has no {field!r} field")
        ident = rec["id"]
        if isinstance(ident, bool) or not isinstance(ident, (str, int)):
            raise UsageError(f"{source}: record {i} field 'id' must be a string or an integer, got "
                             f"{_kind(ident)}")
        if type(ident) is not type(records[0].get("id")):
            raise UsageError(f"{source}: record {i} has id {ident!r} ({_kind(ident)}) but record 0 has "
                             f"{records[0].get('id')!r} ({_kind(records[0].get('id'))}); use one type for all ids")
        if ident in seen:
            raise UsageError(f"{source}: records {seen[ident]} and {i} have the same id {ident!r}; ids must be unique")
        seen[ident] = i
        for key in ("document", "summary", *candidate_keys(rec)):
            if not isinstance(rec[key], str):
                raise UsageError(f"{source}: record {i} (id {ident!r}) field {key!r} must be a string, "
                                 f"got {_kind(rec[key])}")
    return records


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def read_records(path: str | os.PathLike) -> list[dict]:
    return validate_records(read_json(path), str(path))


def write_records(path: str | os.PathLike, records: Iterable[dict]) -> None:
    write_json_atomic(path, list(records))
