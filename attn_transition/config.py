"""The two built-in schedules' configs (``classic``, ``sra``), registered by name, and the grid form.

Both configs are frozen dataclasses subclassing :class:`~attn_transition.protocol.TransitionConfig`,
validated on construction: a wrong type or a value out of range raises
:class:`~attn_transition.errors.ConfigError` naming the field, the value and what is allowed.
Defaults are the reference defaults. Which rows each layer edits is
:mod:`attn_transition.schedules`' (each config's ``plan``).

Text forms (parse once at the boundary; everything past it holds config objects):

- the spec, ``classic``, ``sra``, ``classic:alpha=1,beta=0.5``: :func:`parse_config`, and
  :func:`format_config` (canonical: non-default fields only; ``parse_config(format_config(c)) == c``),
  also the label of a config in bench logs and tables; :func:`parse_configs` for a list. They read
  any registered schedule's fields (:mod:`attn_transition.protocol`, re-exported here);
- the grid, ``alpha=0.5,1;beta=0.1,0.5`` (the product of the values; ``sra:...``, any registered
  schedule's name; ``seed``): :func:`parse_grid`.

The seed's output keys (``decode_al_05_be_01_lay_2``) are the seed format's, in
``attn_transition.evaluation.seedformat``: its table names every field of both configs and
a field added here without a name there stops that module's import.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from .errors import ConfigError, did_you_mean
from .protocol import (SCHEDULES, Edit, TransitionConfig, build_config, config_dict, config_field, format_config,
                       parse_config, parse_configs, register_schedule, schedule_class, schedule_names)
from .schedules import classic_plan, sra_plan

__all__ = ["ClassicConfig", "SRAConfig", "TransitionConfig", "SCHEDULES", "parse_config", "format_config",
           "parse_configs", "parse_grid", "seed_grid", "SEED_GRID", "config_dict", "register_schedule",
           "schedule_class", "schedule_names"]


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


@register_schedule
@dataclass(frozen=True)
class ClassicConfig(TransitionConfig):
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

    def plan(self, layer: int, num_layers: int, n: int) -> Sequence[Edit]:
        """The classic blocks of ``layer`` (:func:`attn_transition.schedules.classic_plan`)."""
        return classic_plan(self, layer, num_layers, n)


@register_schedule
@dataclass(frozen=True)
class SRAConfig(TransitionConfig):
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

    def plan(self, layer: int, num_layers: int, n: int) -> Sequence[Edit]:
        """The inter and outer spans of ``layer`` (:func:`attn_transition.schedules.sra_plan`)."""
        return sra_plan(self, layer, num_layers, n)


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
        cls = schedule_class(head, f"grid {spec!r}") if colon else ClassicConfig
        axes: dict[str, list[str]] = {}
        for part in filter(None, (p.strip() for p in (body if colon else text).split(";"))):
            name, eq, values = part.partition("=")
            name = name.strip()
            if not eq:
                raise ConfigError(f"{part!r} must look like name=value1,value2")
            config_field(cls, name)
            if name in axes:
                raise ConfigError(f"field {name!r} appears twice; list all its values once")
            axes[name] = [v.strip() for v in values.split(",") if v.strip()]
            if not axes[name]:
                raise ConfigError(f"field {name!r} has no values")
        return [build_config(cls, list(zip(axes, combo))) for combo in itertools.product(*axes.values())]
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith("unknown schedule") else f"grid {spec!r}: {message}") \
            from None
