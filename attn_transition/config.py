"""The two built-in schedules' configs (``classic``, ``sra``), registered by name, and the grid form.

Both configs are frozen dataclasses subclassing :class:`~attn_transition.protocol.TransitionConfig`,
validated on construction: a wrong type or a value out of range raises
:class:`~attn_transition.errors.ConfigError` naming the field, the value and what is allowed.
Defaults are the reference defaults. Each schedule is one module (:mod:`.classic`, :mod:`.sra`:
its config, its plan, its edit); this one gathers the configs and their text forms.

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

from .classic import ClassicConfig
from .errors import ConfigError
from .protocol import (SCHEDULES, TransitionConfig, build_config, config_dict, config_field, format_config,
                       parse_config, parse_configs, register_schedule, schedule_class, schedule_names)
from .sra import SRAConfig

__all__ = ["ClassicConfig", "SRAConfig", "TransitionConfig", "SCHEDULES", "parse_config", "format_config",
           "parse_configs", "parse_grid", "seed_grid", "SEED_GRID", "config_dict", "register_schedule",
           "schedule_class", "schedule_names"]


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
