"""The seed's XSum output format: a JSON list of records.

Each record holds ``document``, ``summary``, ``id``, the plain generation ``decode_or``
and one ``decode_<config name>`` per attention-transition setting. Judged files (the
seed's own, or ours) may also carry ``gpt4_eva`` (the judge's free text) and
``eval_scores``. Config names follow the seed's scheme: ``decode_al_05_be_01_lay_2`` is
alpha 0.5, beta 0.1, 2 intervals per layer (the decimal point is dropped, so a value is
read as ``d.ddd``: the scheme cannot express values >= 10). SRA configs are named
``decode_sra`` plus the fields that differ from the defaults, with 'p' as the decimal
point: ``decode_sra_beg_5_thr_50_eo_0p5``.
"""

from __future__ import annotations

import os
import re
from dataclasses import fields
from typing import Any, Iterable, Optional

from attn_transition.config import ClassicConfig, SRAConfig, TransitionConfig
from attn_transition.errors import UsageError

from .fileio import read_json, write_json_atomic   # noqa: F401  (part of this module's API)

__all__ = ["PLAIN_KEY", "REQUIRED_FIELDS", "config_key", "parse_config_key", "candidate_keys",
           "read_records", "write_records", "validate_records", "read_json", "write_json_atomic"]

PLAIN_KEY = "decode_or"
REQUIRED_FIELDS = ("document", "summary", "id")
_CLASSIC_RE = re.compile(r"^decode_al_(\d+)_be_(\d+)_lay_(\d+)((?:_[a-z]+\d*)*)$")
_SRA_ABBREV = {  # field -> short name used in keys, only written when not the default
    "begin_length": "beg", "threshold_len": "thr", "elimi_factor_inter": "ei", "elimi_factor_outer": "eo",
    "strengthen_factor_inter": "si", "strengthen_factor_outer": "so", "dyna_div": "div",
}


def _num(x: float) -> str:
    """0.5 -> '05', 1.0 -> '1', 1.5 -> '15', 0.1 -> '01' (the seed drops the decimal point)."""
    text = f"{float(x):g}"
    return text.replace(".", "")


def _unnum(text: str) -> float:
    """Inverse of ``_num`` for the seed's values: a leading 0 means '0.'; '15' means 1.5."""
    if text.startswith("0") and len(text) > 1:
        return float("0." + text[1:])
    if len(text) >= 2:
        return float(text[0] + "." + text[1:])
    return float(text)


def _pnum(x: float) -> str:
    """SRA keys spell the decimal point as 'p' (0.5 -> '0p5', 10 -> '10'): unambiguous."""
    return f"{x:g}".replace(".", "p")


def config_key(config: TransitionConfig) -> str:
    """The output key for a config, e.g. ``decode_al_05_be_01_lay_2`` or ``decode_sra``."""
    if isinstance(config, ClassicConfig):
        key = f"decode_al_{_num(config.alpha)}_be_{_num(config.beta)}_lay_{config.intervals_per_layer}"
        if config.strategy != "adding":
            key += f"_{config.strategy}"
        if config.min_length != ClassicConfig.min_length:
            key += f"_min{config.min_length}"
        return key
    if isinstance(config, SRAConfig):
        parts = ["decode_sra"]
        for f in fields(SRAConfig):
            value = getattr(config, f.name)
            if value == f.default:
                continue
            if f.name in _SRA_ABBREV:
                parts.append(f"{_SRA_ABBREV[f.name]}_{_pnum(value)}")
            else:  # booleans
                parts.append(f.name.replace("_", "") if value else f"no{f.name.replace('_', '')}")
        return "_".join(parts)
    raise TypeError(f"not a transition config: {config!r}")


def parse_config_key(key: str) -> Optional[TransitionConfig]:
    """Config of an output key; ``None`` for the plain ``decode_or``."""
    if key == PLAIN_KEY:
        return None
    m = _CLASSIC_RE.match(key)
    if m:
        kwargs: dict[str, Any] = {"alpha": _unnum(m.group(1)), "beta": _unnum(m.group(2)),
                                  "intervals_per_layer": int(m.group(3))}
        for extra in filter(None, m.group(4).split("_")):
            if extra in ClassicConfig.STRATEGIES:
                kwargs["strategy"] = extra
            elif extra.startswith("min") and extra[3:].isdigit():
                kwargs["min_length"] = int(extra[3:])
            else:
                raise UsageError(f"unrecognised suffix {extra!r} in output key {key!r}")
        return ClassicConfig(**kwargs)
    if key == "decode_sra" or key.startswith("decode_sra_"):
        tokens = key.split("_")[2:]
        by_abbrev = {v: k for k, v in _SRA_ABBREV.items()}
        kwargs = {}
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok in by_abbrev and i + 1 < len(tokens):
                name = by_abbrev[tok]
                default = next(f.default for f in fields(SRAConfig) if f.name == name)
                text = tokens[i + 1].replace("p", ".")
                try:
                    kwargs[name] = int(text) if isinstance(default, int) else float(text)
                except ValueError:
                    raise UsageError(f"bad value {tokens[i + 1]!r} for {name} in output key {key!r}") from None
                i += 2
                continue
            for f in fields(SRAConfig):
                flat = f.name.replace("_", "")
                if tok == flat:
                    kwargs[f.name] = True
                    break
                if tok == "no" + flat:
                    kwargs[f.name] = False
                    break
            else:
                raise UsageError(f"unrecognised part {tok!r} in output key {key!r}")
            i += 1
        return SRAConfig(**kwargs)
    raise UsageError(f"output key {key!r} is neither {PLAIN_KEY!r}, a classic key like "
                     f"'decode_al_05_be_01_lay_2' nor an SRA key like 'decode_sra'")


def candidate_keys(record: dict) -> list[str]:
    """The generation keys of a record, in file order (``decode_or`` included)."""
    return [k for k in record if k.startswith("decode_")]


def validate_records(records: Any, source: str = "input") -> list[dict]:
    """Check the seed format; raise UsageError naming the record and field that is wrong."""
    if not isinstance(records, list):
        raise UsageError(f"{source}: expected a JSON list of records, got {type(records).__name__}")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise UsageError(f"{source}: record {i} is a {type(rec).__name__}, expected an object")
        for field in REQUIRED_FIELDS:
            if field not in rec:
                raise UsageError(f"{source}: record {i} (id {rec.get('id', '?')!r}) has no {field!r} field")
        for key in candidate_keys(rec):
            if not isinstance(rec[key], str):
                raise UsageError(f"{source}: record {i} (id {rec['id']!r}) field {key!r} must be a string, "
                                 f"got {type(rec[key]).__name__}")
    return records


def read_records(path: str | os.PathLike) -> list[dict]:
    return validate_records(read_json(path), str(path))


def write_records(path: str | os.PathLike, records: Iterable[dict]) -> None:
    write_json_atomic(path, list(records))
