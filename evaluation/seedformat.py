"""The seed's XSum output format: a JSON list of records, and its output-key codec.

Each record holds ``document``, ``summary``, ``id``, the plain generation ``decode_or``
and one ``decode_<config name>`` per attention-transition setting. Judged files (the
seed's own, or ours) may also carry ``gpt4_eva`` (the judge's free text) and
``eval_scores``.

Output keys (:func:`config_key` / :func:`parse_config_key`): ``decode_al_05_be_01_lay_2`` is
alpha 0.5, beta 0.1, 2 intervals per layer (the seed's own names; the decimal point is
dropped, so a value is read as ``d.ddd``: the scheme cannot express values >= 10), then a
suffix for each other field that is not its default (``_multi``, ``_min200``). SRA configs
are named ``decode_sra`` plus the fields that differ from the defaults, with 'p' as the
decimal point: ``decode_sra_beg_5_thr_50_eo_0p5``; booleans are flags (``noouter``,
``dynamicthreshold``). :data:`KEY_NAMES` says how every field of the two built-in config
classes is written; a field it does not name fails at import (:func:`check_key_names`), and a
config whose class has more fields than its table is refused, so no field is ever written
wrongly or dropped.

The scheme is the seed's, and names the built-in schedules only: a config of any other
registered schedule (``attn_transition.register_schedule``) has no output key and is a
ConfigError naming its schedule (:func:`config_key`); its runs are labelled by its spec
(``format_config``) everywhere else.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterable, Mapping, Optional

from attn_transition.config import ClassicConfig, SRAConfig, TransitionConfig, format_config, parse_config
from attn_transition.errors import ConfigError, UsageError

from .runtime.files import read_json, write_json_atomic   # noqa: F401  (part of this module's API)

__all__ = ["PLAIN_KEY", "REQUIRED_FIELDS", "KEY_NAMES", "KEYED_SCHEDULES", "FLAG", "config_key", "parse_config_key",
           "check_key_names",
           "candidate_keys", "read_records", "write_records", "validate_records", "read_json", "write_json_atomic"]

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


# --------------------------------------------------------------------------- the output keys

PLAIN_KEY = "decode_or"
FLAG = "<flag>"   # a boolean field: written as its name without underscores (or no<name>) when not the default

# The config classes the seed's scheme names (each needs a table below).
KEYED_SCHEDULES: tuple[type, ...] = (ClassicConfig, SRAConfig)
# How the key writes every field of each config class: an abbreviation followed by the value,
# FLAG for a boolean, "" for a word field whose value is written alone (classic's strategy).
# The first three classic names are the seed's own and always written, in this order.
KEY_NAMES: dict[type, dict[str, str]] = {
    ClassicConfig: {"alpha": "al", "beta": "be", "intervals_per_layer": "lay", "strategy": "", "min_length": "min"},
    SRAConfig: {"begin_length": "beg", "threshold_len": "thr", "elimi_factor_inter": "ei", "elimi_factor_outer": "eo",
                "strengthen_factor_inter": "si", "strengthen_factor_outer": "so", "inter": FLAG, "outer": FLAG,
                "dynamic_threshold": FLAG, "dyna_div": "div"},
}
_CLASSIC_HEAD = ("alpha", "beta", "intervals_per_layer")
_CLASSIC_KEY = re.compile(r"^decode_al_(\d+)_be_(\d+)_lay_(\d+)((?:_[a-z0-9]+)*)$")
_SRA_PREFIX = "decode_sra"
_SUFFIX = re.compile(r"^([a-z]+)(\d[0-9p]*)$")   # a classic suffix: abbreviation then value (min200, xx0p5)


def _flag(name: str) -> str:
    return name.replace("_", "")


def _names_problems(cls: type, names: Mapping[str, str]) -> list[str]:
    """What is wrong with ``names`` as the key table of ``cls`` (empty when it covers every field exactly)."""
    problems = []
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    for name, f in by_name.items():
        if name not in names:
            problems.append(f"field {name!r} has no abbreviation")
        elif (names[name] == FLAG) != isinstance(f.default, bool):
            problems.append(f"field {name!r} is {'not ' if names[name] == FLAG else ''}a boolean but is "
                            f"{'' if names[name] == FLAG else 'not '}written as a FLAG")
        elif names[name] == "" and (not issubclass(cls, ClassicConfig) or not isinstance(f.default, str)):
            problems.append(f"field {name!r}: only a classic text field may be written as its bare value")
        elif names[name] not in (FLAG, "") and not re.fullmatch(r"[a-z]+", names[name]):
            problems.append(f"field {name!r}: abbreviation {names[name]!r} is not lowercase letters")
    problems += [f"names {name!r}, which is not a field" for name in names if name not in by_name]
    words = [names[n] for n in names if names[n] not in (FLAG, "")]
    words += [w for n in names if names[n] == FLAG for w in (_flag(n), "no" + _flag(n))]
    problems += [f"the word {w!r} is used twice" for w in sorted({w for w in words if words.count(w) > 1})]
    if list(names.values()).count("") > 1:
        problems.append("more than one field is written as its bare value")
    if issubclass(cls, ClassicConfig) and [names.get(n) for n in _CLASSIC_HEAD] != ["al", "be", "lay"]:
        problems.append(f"{', '.join(_CLASSIC_HEAD)} must keep the seed's names al, be, lay")
    return problems


def check_key_names(tables: Optional[Mapping[type, Mapping[str, str]]] = None) -> None:
    """TypeError unless each of :data:`KEYED_SCHEDULES` has a key table naming each of its fields
    (run at import: a field added to a built-in config without a key name stops the import)."""
    tables = KEY_NAMES if tables is None else tables
    missing = [cls.__name__ for cls in KEYED_SCHEDULES if cls not in tables]
    if missing:
        raise TypeError(f"evaluation/seedformat.py: no output-key table for {', '.join(missing)}; add one to "
                        f"KEY_NAMES")
    for cls, names in tables.items():
        problems = _names_problems(cls, names)
        if problems:
            raise TypeError(f"evaluation/seedformat.py: the output-key table of {cls.__name__} is wrong: "
                            f"{'; '.join(problems)}; fix KEY_NAMES so each field is written once")


check_key_names()


def _table(config: Any) -> tuple[type, dict[str, str]]:
    """The config's base class and key table; TypeError for a subclass with fields the table lacks,
    ConfigError for a schedule the scheme does not name."""
    if type(config) in KEY_NAMES:
        return type(config), KEY_NAMES[type(config)]
    for base, names in KEY_NAMES.items():
        if isinstance(config, base):
            if type(config) is not base:
                problems = _names_problems(type(config), names)
                if problems:
                    raise TypeError(f"{type(config).__name__} cannot be named in the seed's output-key scheme: "
                                    f"{'; '.join(problems)} (KEY_NAMES in evaluation/seedformat.py)")
            return base, names
    if isinstance(config, TransitionConfig):
        raise ConfigError(f"schedule {config.schedule!r} ({type(config).__module__}.{type(config).__qualname__}) has "
                          f"no output key in the seed's format, which names only "
                          f"{' and '.join(repr(c.schedule) for c in KEYED_SCHEDULES)} configs; label its runs with "
                          f"its spec {format_config(config)!r} instead", field="config")
    raise TypeError(f"not a transition config: {config!r}")


def _num(x: float) -> str:
    """0.5 -> '05', 1.0 -> '1', 1.5 -> '15', 0.1 -> '01' (the seed drops the decimal point)."""
    return f"{float(x):g}".replace(".", "")


def _unnum(text: str) -> float:
    """Inverse of ``_num`` for the seed's values: a leading 0 means '0.'; '15' means 1.5."""
    if text.startswith("0") and len(text) > 1:
        return float("0." + text[1:])
    if len(text) >= 2:
        return float(text[0] + "." + text[1:])
    return float(text)


def _pnum(x: Any) -> str:
    """A value after an abbreviation, with 'p' as the decimal point (0.5 -> '0p5', 10 -> '10'):
    unambiguous. A float keeps all its digits (``repr``) where ``:g`` would drop some."""
    if isinstance(x, float):
        short = f"{x:g}"
        text = short if float(short) == x else repr(x)
    else:
        text = str(x)
    return text.replace(".", "p")


def _changed(config: Any, names: Mapping[str, str]) -> list[tuple[str, str, Any]]:
    """``(field, key name, value)`` of each field that is not its default, in field order."""
    return [(f.name, names[f.name], getattr(config, f.name)) for f in dataclasses.fields(config)
            if getattr(config, f.name) != f.default]


def _default(cls: type, name: str) -> Any:
    return {f.name: f.default for f in dataclasses.fields(cls)}[name]


def _tokens(name: str, abbrev: str, value: Any, *, glued: bool) -> list[str]:
    """The key's tokens for one changed field: a flag, a bare word, or the abbreviation and the value
    (one token, ``min200``, after a classic head; two, ``thr_64``, in an SRA key)."""
    if abbrev == FLAG:
        return [_flag(name) if value else "no" + _flag(name)]
    if abbrev == "":
        return [str(value)]
    return [abbrev + _pnum(value)] if glued else [abbrev, _pnum(value)]


def _encode(config: TransitionConfig) -> str:
    base, names = _table(config)
    if issubclass(base, ClassicConfig):
        parts = [f"decode_al_{_num(config.alpha)}_be_{_num(config.beta)}_lay_{config.intervals_per_layer}"]
        for name, abbrev, value in _changed(config, names):
            if name not in _CLASSIC_HEAD:
                parts += _tokens(name, abbrev, value, glued=True)
    else:
        parts = [_SRA_PREFIX]
        for name, abbrev, value in _changed(config, names):
            parts += _tokens(name, abbrev, value, glued=False)
    return "_".join(parts)


def config_key(config: TransitionConfig, *, strict: bool = False) -> str:
    """The seed-format output key of a config, e.g. ``decode_al_05_be_01_lay_2`` or ``decode_sra``.

    Classic keys drop the decimal point, so not every value can be written: with ``strict``,
    a config whose key does not read back as itself raises ConfigError. A config whose class has
    a field without a key name raises TypeError (never a key that drops or misnames the field); a
    config of a schedule other than classic and sra raises ConfigError naming it."""
    key = _encode(config)
    if strict:
        try:
            back: Any = parse_config_key(key)
            said = f"reads back as {format_config(back)!r}" if back is not None else "reads back as the plain model"
        except ConfigError as exc:
            back, said = None, f"does not read back ({exc})"
        if back != config:
            raise ConfigError(f"config {format_config(config)!r} cannot be named in the seed's output-key scheme: "
                              f"{key!r} {said}; classic keys write alpha and beta without the decimal point, so "
                              f"each must be below 10 with few decimals")
    return key


def _value(cls: type, name: str, text: str, key: str) -> Any:
    """The field's value from its text in a key ('p' is a number's decimal point), checked as
    ``parse_config`` checks it."""
    if isinstance(_default(cls, name), (int, float)) and not isinstance(_default(cls, name), bool):
        text = text.replace("p", ".")
    try:
        return getattr(parse_config(f"{cls.schedule}:{name}={text}"), name)
    except ConfigError as exc:
        raise ConfigError(f"bad value {text!r} for {name} in output key {key!r}: {exc}") from None


def _read_tokens(cls: type, names: Mapping[str, str], tokens: list[str], key: str, *, glued: bool) -> dict[str, Any]:
    """Field values of the tokens after a key's head (see :func:`_tokens`)."""
    flags = {}
    for name, abbrev in names.items():
        if abbrev == FLAG:
            flags[_flag(name)], flags["no" + _flag(name)] = (name, True), (name, False)
    by_abbrev = {abbrev: name for name, abbrev in names.items() if abbrev not in (FLAG, "")}
    bare = [name for name, abbrev in names.items() if abbrev == ""]
    kwargs: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok, step = tokens[i], 1
        m = _SUFFIX.match(tok) if glued else None
        if tok in flags:
            name, value = flags[tok]
        elif m and m.group(1) in by_abbrev:
            name = by_abbrev[m.group(1)]
            value = _value(cls, name, m.group(2), key)
        elif not glued and tok in by_abbrev and i + 1 < len(tokens):
            name, step = by_abbrev[tok], 2
            value = _value(cls, name, tokens[i + 1], key)
        elif bare and tok.isalpha():
            name = bare[0]
            value = _value(cls, name, tok, key)
        else:
            raise ConfigError(f"unrecognised part {tok!r} in output key {key!r}")
        if name in kwargs:
            raise ConfigError(f"output key {key!r} names {name} twice")
        kwargs[name] = value
        i += step
    return kwargs


def parse_config_key(key: str) -> Optional[TransitionConfig]:
    """The config of a seed-format output key; ``None`` for the plain ``decode_or``."""
    if key == PLAIN_KEY:
        return None
    m = _CLASSIC_KEY.match(key)
    if m:
        kwargs: dict[str, Any] = {"alpha": _unnum(m.group(1)), "beta": _unnum(m.group(2)),
                                  "intervals_per_layer": int(m.group(3))}
        suffixes = {n: a for n, a in KEY_NAMES[ClassicConfig].items() if n not in _CLASSIC_HEAD}
        kwargs.update(_read_tokens(ClassicConfig, suffixes, m.group(4).split("_")[1:], key, glued=True))
        return ClassicConfig(**kwargs)
    if key == _SRA_PREFIX or key.startswith(_SRA_PREFIX + "_"):
        return SRAConfig(**_read_tokens(SRAConfig, KEY_NAMES[SRAConfig], key.split("_")[2:], key, glued=False))
    raise ConfigError(f"output key {key!r} is neither {PLAIN_KEY!r}, a classic key like "
                      f"'decode_al_05_be_01_lay_2' nor an SRA key like 'decode_sra'")
