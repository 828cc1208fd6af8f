"""Configuration of the two attention-transition schedules, and their one text codec.

Both configs are frozen dataclasses validated on construction: a wrong type or a
value out of range raises :class:`~attn_transition.errors.ConfigError` naming the
field, the value and what is allowed. Defaults are the reference defaults.

Text forms (parse once at the boundary; everything past it holds config objects):

- the spec, ``classic``, ``sra``, ``classic:alpha=1,beta=0.5``: :func:`parse_config`, and
  :func:`format_config` (canonical: non-default fields only; ``parse_config(format_config(c)) == c``),
  also the label of a config in bench logs and tables; :func:`parse_configs` for a list;
- the grid, ``alpha=0.5,1;beta=0.1,0.5`` (the product of the values; ``sra:...``; ``seed``):
  :func:`parse_grid`.

The seed's output keys (``decode_al_05_be_01_lay_2``) are the seed format's, in
``attn_transition.evaluation.seedformat``: its table names every field of both configs and
a field added here without a name there stops that module's import.

The dataclasses and their spec and grid forms stay in this one file on purpose: a field added
to a config is then added to each of its forms in one place.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
import itertools
from typing import Any, ClassVar, Sequence, Union

from .errors import ConfigError, did_you_mean

__all__ = ["ClassicConfig", "SRAConfig", "TransitionConfig", "SCHEDULES", "parse_config", "format_config",
           "parse_configs", "parse_grid", "seed_grid", "SEED_GRID", "config_dict"]


def _check_number(owner: str, name: str, value: Any, *, low: float, high: float = math.inf,
                  low_open: bool = False, integer: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a real number (an int if ``integer``) inside the range."""
    kind = "an int" if integer else "a number"
    lo_br = "(" if low_open else "["
    hi = "inf" if high == math.inf else f"{high:g}"
    allowed = f"{kind} in {lo_br}{low:g}, {hi}{')' if high == math.inf else ']'}"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{owner}.{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
        raise ConfigError(f"{owner}.{name} must be {allowed}, got {value!r}")


def _check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}.{name} must be True or False, got {value!r} ({type(value).__name__})")


@dataclass(frozen=True)
class ClassicConfig:
    """The 2023 schedule ("classic"): block-by-block elimination and transition.

    Layer ``l`` (``1 <= l <= L-3``) edits ``intervals_per_layer`` blocks of query rows;
    inside a block, weights below ``alpha / e`` are zeroed and the removed mass moves onto
    the two previous blocks of context (``strategy="adding"``) or rescales the row
    (``strategy="multi"``). See ``docs`` in the README for the exact formulas.

    Args:
        alpha: Elimination strength; the threshold of a block ending at row ``e`` is
            ``alpha / e``. A number > 0. The paper's grid used 0.5, 1, 1.5.
        beta: Fraction of the removed mass moved onto earlier context. A number >= 0.
            The paper's grid used 0.1 ... 1.5.
        intervals_per_layer: Number of consecutive blocks edited per layer (the
            reference's ``one_layer_inter_use``). An int >= 1.
        strategy: ``"adding"`` (move mass onto the two previous blocks) or ``"multi"``
            (rescale the surviving weights of each row).
        min_length: Prompts shorter than this many real tokens are left unchanged.
            An int >= 0.
    """

    alpha: float = 0.5
    beta: float = 0.1
    intervals_per_layer: int = 2
    strategy: str = "adding"
    min_length: int = 400

    schedule: ClassVar[str] = "classic"
    STRATEGIES: ClassVar[tuple[str, ...]] = ("adding", "multi")

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_number(owner, "alpha", self.alpha, low=0.0, low_open=True)
        _check_number(owner, "beta", self.beta, low=0.0)
        _check_number(owner, "intervals_per_layer", self.intervals_per_layer, low=1, high=64, integer=True)
        _check_number(owner, "min_length", self.min_length, low=0, integer=True)
        if self.strategy not in self.STRATEGIES:
            extra = did_you_mean(str(self.strategy), self.STRATEGIES)
            raise ConfigError(
                f"{owner}.strategy must be one of {list(self.STRATEGIES)}, got {self.strategy!r}{extra}")


@dataclass(frozen=True)
class SRAConfig:
    """The 2025 schedule ("sra"): an inter step on a band of middle rows and an outer
    step on the last ``threshold_len`` rows, both strengthening an earlier span.

    Args:
        begin_length: Tokens at the start that the inter step never targets. An int >= 0.
        threshold_len: Number of final rows edited by the outer step (the tail that is
            usually the question). An int >= 0.
        elimi_factor_inter: Elimination factor of the inter step; threshold is
            ``elimi_factor_inter / (s - begin_length)``. A number >= 0.
        elimi_factor_outer: Elimination factor of the outer step; threshold is
            ``elimi_factor_outer / (n - threshold_len)``. A number >= 0.
        strengthen_factor_inter: Multiplier of the mass moved by the inter step. A number >= 0.
        strengthen_factor_outer: Multiplier of the mass moved by the outer step. A number >= 0.
        inter: Run the inter step.
        outer: Run the outer step (layers >= 1).
        dynamic_threshold: Use ``threshold_len = n // dyna_div`` for each input instead
            of the fixed ``threshold_len``.
        dyna_div: Divisor of the dynamic threshold. An int >= 1.
    """

    begin_length: int = 100
    threshold_len: int = 200
    elimi_factor_inter: float = 0.5
    elimi_factor_outer: float = 0.3
    strengthen_factor_inter: float = 4.0
    strengthen_factor_outer: float = 4.0
    inter: bool = True
    outer: bool = True
    dynamic_threshold: bool = False
    dyna_div: int = 20

    schedule: ClassVar[str] = "sra"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_number(owner, "begin_length", self.begin_length, low=0, integer=True)
        _check_number(owner, "threshold_len", self.threshold_len, low=0, integer=True)
        for name in ("elimi_factor_inter", "elimi_factor_outer",
                     "strengthen_factor_inter", "strengthen_factor_outer"):
            _check_number(owner, name, getattr(self, name), low=0.0)
        for name in ("inter", "outer", "dynamic_threshold"):
            _check_bool(owner, name, getattr(self, name))
        _check_number(owner, "dyna_div", self.dyna_div, low=1, integer=True)

    def threshold_for(self, n: int) -> int:
        """The tail length used for an input of ``n`` real tokens."""
        return n // self.dyna_div if self.dynamic_threshold else self.threshold_len


TransitionConfig = Union[ClassicConfig, SRAConfig]
SCHEDULES: dict[str, type] = {"classic": ClassicConfig, "sra": SRAConfig}


# --------------------------------------------------------------------------- specs

def _schedule(name: str, where: str) -> type:
    """The config class of a schedule name; ConfigError with a hint otherwise."""
    key = name.strip().lower()
    if key not in SCHEDULES:
        raise ConfigError(f"unknown schedule {key!r} in {where}; use one of {sorted(SCHEDULES)}"
                          f"{did_you_mean(key, SCHEDULES)}")
    return SCHEDULES[key]


def _field(cls: type, name: str) -> dataclasses.Field:
    """The field ``name`` of a config class; ConfigError with a hint otherwise."""
    by_name = {f.name: f for f in fields(cls)}
    if name not in by_name:
        raise ConfigError(f"{cls.__name__} has no field {name!r}{did_you_mean(name, by_name)}; "
                          f"fields: {', '.join(by_name)}")
    return by_name[name]


def _coerce(owner: str, field: dataclasses.Field, text: str) -> Any:
    """Turn the text of a ``key=value`` pair into the field's type."""
    default = field.default
    try:
        if isinstance(default, bool):
            low = text.strip().lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = {bool: "true or false", int: "an int", float: "a number"}[type(default)]
        raise ConfigError(f"{owner}.{field.name} must be {kind}, got {text!r}") from None
    return text


def _pairs(items: str, where: str) -> list[tuple[str, str]]:
    """``"a=1,b=2"`` -> ``[("a", "1"), ("b", "2")]``; a key given twice is a ConfigError naming it
    (the string would otherwise keep one of the two values without a word)."""
    out = []
    seen: set[str] = set()
    for item in filter(None, (p.strip() for p in items.split(","))):
        key, eq, text = item.partition("=")
        if not eq:
            raise ConfigError(f"config item {item!r} in {where} must look like key=value")
        key = key.strip()
        if key in seen:
            raise ConfigError(f"{key!r} appears twice in {where}; give each key once", field=key)
        seen.add(key)
        out.append((key, text.strip()))
    return out


def _build(cls: type, pairs: Sequence[tuple[str, str]]) -> TransitionConfig:
    return cls(**{key: _coerce(cls.__name__, _field(cls, key), text) for key, text in pairs})


def parse_config(spec: str) -> TransitionConfig:
    """Build a config from a compact string such as ``"classic"``, ``"sra"`` or
    ``"classic:alpha=1,beta=0.5,intervals_per_layer=2"``.

    Unknown schedules and keys raise :class:`ConfigError` with a "did you mean" hint.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a config spec must be a non-empty string like 'classic:alpha=1', got {spec!r}")
    head, _, tail = spec.strip().partition(":")
    where = f"config {spec!r}"
    return _build(_schedule(head, where), _pairs(tail, where))


def _text(value: Any) -> str:
    """A field value as the spec writes it: ``1`` for 1.0 (as ``:g`` does) unless that loses digits."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def format_config(config: TransitionConfig) -> str:
    """The canonical spec of a config: the schedule and its non-default fields, e.g.
    ``classic:alpha=1`` (the inverse of :func:`parse_config`; also the config's label in logs)."""
    default = type(config)()
    changed = [f"{f.name}={_text(getattr(config, f.name))}" for f in fields(config)
               if getattr(config, f.name) != getattr(default, f.name)]
    return config.schedule + (":" + ",".join(changed) if changed else "")


def parse_configs(items: Sequence[Union[str, TransitionConfig]]) -> dict[str, TransitionConfig]:
    """``label -> config`` for several specs (or configs), in order, the first of each config kept."""
    out: dict[str, TransitionConfig] = {}
    for item in items:
        config = parse_config(item) if isinstance(item, str) else item
        if not isinstance(config, (ClassicConfig, SRAConfig)):
            raise ConfigError(f"not a config or a config spec: {item!r} ({type(item).__name__})")
        out.setdefault(format_config(config), config)
    return out


def config_dict(config: TransitionConfig) -> dict[str, Any]:
    """``{"schedule": ..., field: value, ...}`` (as run metadata stores a config)."""
    return {"schedule": config.schedule, **dataclasses.asdict(config)}


# --------------------------------------------------------------------------- grids

# The seed's released grid (63 configs; its published files hold a subset of them).
SEED_GRID: dict[str, tuple[float, ...]] = {
    "alpha": (0.5, 1, 1.5),
    "beta": (0.1, 0.3, 0.5, 0.8, 1, 1.2, 1.5),
    "intervals_per_layer": (1, 2, 3),
}


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
        return seed_grid()
    if text.lower() in ("none", ""):
        return []
    head, colon, body = text.partition(":")
    try:
        cls = _schedule(head, f"grid {spec!r}") if colon else ClassicConfig
        axes: dict[str, list[str]] = {}
        for part in filter(None, (p.strip() for p in (body if colon else text).split(";"))):
            name, eq, values = part.partition("=")
            name = name.strip()
            if not eq:
                raise ConfigError(f"{part!r} must look like name=value1,value2")
            _field(cls, name)
            if name in axes:
                raise ConfigError(f"field {name!r} appears twice; list all its values once")
            axes[name] = [v.strip() for v in values.split(",") if v.strip()]
            if not axes[name]:
                raise ConfigError(f"field {name!r} has no values")
        return [_build(cls, list(zip(axes, combo))) for combo in itertools.product(*axes.values())]
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith("unknown schedule") else f"grid {spec!r}: {message}") \
            from None
