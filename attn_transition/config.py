"""Configuration of the two attention-transition schedules.

Both configs are frozen dataclasses validated on construction: a wrong type or a
value out of range raises :class:`~attn_transition.errors.ConfigError` naming the
field, the value and what is allowed. Defaults are the reference defaults.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Union

from .errors import ConfigError, did_you_mean

__all__ = ["ClassicConfig", "SRAConfig", "TransitionConfig", "parse_config", "SCHEDULES"]


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


def parse_config(spec: str) -> TransitionConfig:
    """Build a config from a compact string such as ``"classic"``, ``"sra"`` or
    ``"classic:alpha=1,beta=0.5,intervals_per_layer=2"``.

    Unknown schedules and keys raise :class:`ConfigError` with a "did you mean" hint.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a config spec must be a non-empty string like 'classic:alpha=1', got {spec!r}")
    head, _, tail = spec.strip().partition(":")
    head = head.strip().lower()
    if head not in SCHEDULES:
        extra = did_you_mean(head, SCHEDULES)
        raise ConfigError(f"unknown schedule {head!r} in config {spec!r}; use one of {sorted(SCHEDULES)}{extra}")
    cls = SCHEDULES[head]
    by_name = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in tail.split(","))):
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"config item {item!r} in {spec!r} must look like key=value")
        if key not in by_name:
            extra = did_you_mean(key, by_name)
            raise ConfigError(f"{cls.__name__} has no field {key!r}{extra}; fields: {', '.join(by_name)}")
        values[key] = _coerce(cls.__name__, by_name[key], text.strip())
    return cls(**values)
