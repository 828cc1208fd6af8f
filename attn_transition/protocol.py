"""The protocol of an attention edit: what a schedule implements, the registry that names it,
and the one text codec of every registered schedule's config.

A *schedule* is a config class (a frozen, validated dataclass subclassing :class:`TransitionConfig`)
whose :meth:`~TransitionConfig.plan` says which query rows of which layer it edits, as
:class:`Edit` objects that edit a block of those rows in place. Registered under its name
(:func:`register_schedule`), it is a spec (``"name:field=value"``: :func:`parse_config`,
:func:`format_config`) everywhere a config is accepted: ``enable``, the per-call
``attn_transition=`` switch, the vLLM plugin, ``bench --config``.

Other processes (vLLM workers, a server) find a schedule that an installed package declares
in the entry-point group ``attn_transition.schedules`` (``name = module:Class``): a name not
registered in this process is looked up there and its module imported on first use.

Nothing here imports torch or any integration: the built-in schedules (``classic``, ``sra``)
register themselves in :mod:`.config`, their edits live in :mod:`.schedules`.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import math
from dataclasses import fields
from importlib import metadata
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence, TypeVar, Union, overload

from .errors import ConfigError, did_you_mean

__all__ = ["Edit", "TransitionConfig", "ENTRY_POINT_GROUP", "SPEC_TYPES", "RESERVED_NAMES", "SCHEDULES",
           "register_schedule", "schedule_class", "schedule_names", "parse_config", "format_config",
           "parse_configs", "config_dict", "build_config", "config_field", "check_number", "check_bool"]

ENTRY_POINT_GROUP = "attn_transition.schedules"
# The field types a spec can write and read back (a field's default says which it is).
SPEC_TYPES: tuple[type, ...] = (bool, int, float, str)
# Words a spec or a switch already means something else by (``attn_transition="none"`` is the
# stock model; ``seed`` is the seed's grid).
RESERVED_NAMES = frozenset({"none", "off", "stock", "seed"})


# Field checks a schedule's ``__post_init__`` can use: a ConfigError naming the class, the field,
# the value and what is allowed.

def check_number(owner: str, name: str, value: Any, *, low: float, high: float = math.inf,
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


def check_bool(owner: str, name: str, value: Any) -> None:
    """Raise ConfigError unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}.{name} must be True or False, got {value!r} ({type(value).__name__})")


class Edit(abc.ABC):
    """One edit of a layer's post-softmax attention on the query rows ``[start, end)``.

    Positions count from the sequence's first real token. An edit reads and writes only its
    own rows, and of each row only the columns it can see (a causal row ``p`` sees ``[0, p]``).
    Subclasses are (frozen) dataclasses with the fields ``start`` and ``end`` and whatever their
    edit needs.

    Attributes:
        start: First query row edited.
        end: One past the last query row edited.
    """

    start: int
    end: int

    @abc.abstractmethod
    def apply_(self, rows: Any, *, first_row: int, total: Any = None) -> Any:
        """Edit, in place, the contiguous rows ``[first_row, first_row + r)`` of this edit.

        Args:
            rows: ``(..., r, C)`` float32 or float64 tensor, post-softmax weights of those rows,
                columns counted from the first real token, ``C >= first_row + r``; never a column
                beyond a row's own position is read or written.
            first_row: Position of ``rows[..., 0, :]``; ``start <= first_row`` and
                ``first_row + r <= end``.
            total: ``(..., r, 1)`` each row's mass before the edit (less than 1 where an attention
                sink takes a share), or None for 1.

        Returns:
            ``rows``.
        """


class TransitionConfig(abc.ABC):
    """The base class of every schedule's config: a frozen dataclass validated on construction
    (a wrong value is a :class:`~attn_transition.errors.ConfigError` naming the field).

    Class attributes:
        schedule: The schedule's name in specs (``"classic"``): a lower-case identifier.
        continuous: True when each row's edit depends on that row alone, so the rows of an edit may
            be edited in any chunks (chunked prefill, the kernel's memory budget, vLLM). An
            integration refuses chunked input for a schedule with False (ConfigError), and the
            kernel then edits each edit's rows in one piece.

    Every field has a default of a type in :data:`SPEC_TYPES` (the spec writes and reads it;
    ``format_config`` lists the fields that differ from the defaults).
    """

    schedule: ClassVar[str]
    continuous: ClassVar[bool] = True

    @abc.abstractmethod
    def plan(self, layer: int, num_layers: int, n: int) -> Sequence[Edit]:
        """The edits layer ``layer`` (of ``num_layers``) makes on a prompt of ``n`` real tokens:
        inside ``[0, n)``, sorted by ``start``, not overlapping; empty leaves the layer stock.
        Called through :func:`attn_transition.schedules.layer_plan`, which checks this and caches it."""

    def describe(self) -> str:
        """A readable label of this config (default: its canonical spec, :func:`format_config`)."""
        return format_config(self)


# --------------------------------------------------------------------------- the registry

_REGISTRY: dict[str, type] = {}
# A read-only view of the schedules registered in this process (name -> config class).
SCHEDULES: Mapping[str, type] = MappingProxyType(_REGISTRY)

C = TypeVar("C", bound=type)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_class(cls: Any) -> str:
    """ConfigError unless ``cls`` can be registered; its name."""
    if not isinstance(cls, type) or not issubclass(cls, TransitionConfig):
        raise ConfigError(f"register_schedule: {cls!r} is not a subclass of attn_transition.TransitionConfig",
                          field="schedule")
    where = _qualified(cls)
    params = getattr(cls, "__dataclass_params__", None)
    if not dataclasses.is_dataclass(cls) or params is None or not params.frozen:
        raise ConfigError(f"register_schedule: {where} must be a frozen dataclass (@dataclass(frozen=True)): "
                          f"configs are hashed and shared between threads", field="schedule")
    name = getattr(cls, "schedule", None)
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower() or name in RESERVED_NAMES:
        raise ConfigError(f"register_schedule: {where}.schedule must be a lower-case identifier other than "
                          f"{sorted(RESERVED_NAMES)}, got {name!r}", field="schedule")
    if not isinstance(cls.continuous, bool):
        raise ConfigError(f"register_schedule: {where}.continuous must be True or False", field="continuous")
    for f in fields(cls):
        if not f.init or f.default is dataclasses.MISSING or type(f.default) not in SPEC_TYPES:
            raise ConfigError(f"register_schedule: {where}.{f.name} needs a default of type bool, int, float or "
                              f"str (a spec writes and reads it), got {f.default!r}", field=f.name)
    if getattr(cls, "__abstractmethods__", None):
        raise ConfigError(f"register_schedule: {where} does not implement "
                          f"{', '.join(sorted(cls.__abstractmethods__))}", field="plan")
    try:
        cls()
    except ConfigError as err:
        raise ConfigError(f"register_schedule: {where}'s defaults are not a valid config: {err}",
                          field=err.field) from None
    return name


@overload
def register_schedule(cls: C, *, replace: bool = False) -> C: ...


@overload
def register_schedule(cls: None = None, *, replace: bool = False) -> Callable[[C], C]: ...


def register_schedule(cls: Optional[C] = None, *, replace: bool = False) -> Union[C, Callable[[C], C]]:
    """Register a schedule's config class under its ``schedule`` name; returns the class, so it
    serves as a decorator (``@register_schedule`` or ``@register_schedule(replace=True)``).

    Raises:
        ConfigError: not a :class:`TransitionConfig` subclass, not a frozen dataclass, a name that is
            not a lower-case identifier (or a reserved word), a field without a default of a type in
            :data:`SPEC_TYPES`, defaults that do not validate, or a name another class holds (both
            named) unless ``replace=True``. Registering the same class again (also the same module
            imported again) replaces the entry.
    """
    if cls is None:
        return lambda c: register_schedule(c, replace=replace)
    name = _check_class(cls)
    old = _REGISTRY.get(name)
    if old is not None and old is not cls and _qualified(old) != _qualified(cls) and not replace:
        raise ConfigError(f"register_schedule: the schedule name {name!r} is taken by {_qualified(old)}; "
                          f"{_qualified(cls)} needs another name (or replace=True)", field="schedule")
    _REGISTRY[name] = cls
    return cls


def _entry_points() -> dict[str, str]:
    """name -> ``module:Class``, from the installed packages' metadata."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _load(name: str, target: str) -> None:
    """Import an entry point's ``module:Class`` and register the class if importing did not."""
    module_name, _, attr = target.partition(":")
    where = f"the entry point {name} = {target} ({ENTRY_POINT_GROUP})"
    try:
        obj: Any = importlib.import_module(module_name.strip())
        for part in filter(None, attr.strip().split(".")):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"schedule {name!r}: {where} does not load: {err}", field="schedule") from err
    if isinstance(obj, type) and _REGISTRY.get(name) is not obj:
        if getattr(obj, "schedule", None) != name:
            raise ConfigError(f"schedule {name!r}: {where} names a class whose schedule is "
                              f"{getattr(obj, 'schedule', None)!r}", field="schedule")
        register_schedule(obj)


def schedule_names() -> list[str]:
    """Every schedule's name: those registered in this process and those installed packages declare."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def schedule_class(name: str, where: str = "") -> type:
    """The config class of a schedule name (case and spaces ignored), loading an installed
    package's entry point on first use.

    Raises:
        ConfigError: no such schedule (with the nearest name), or its entry point does not load.
    """
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        target = _entry_points().get(key)
        if target is not None:
            _load(key, target)
    if key not in _REGISTRY:
        names = schedule_names()
        raise ConfigError(f"unknown schedule {key!r}{' in ' + where if where else ''}; use one of {names}"
                          f"{did_you_mean(key, names)}", field="schedule")
    return _REGISTRY[key]


# --------------------------------------------------------------------------- specs

def config_field(cls: type, name: str) -> dataclasses.Field:
    """The field ``name`` of a config class; ConfigError with a hint otherwise."""
    by_name = {f.name: f for f in fields(cls)}
    if name not in by_name:
        raise ConfigError(f"{cls.__name__} has no field {name!r}{did_you_mean(name, by_name)}; "
                          f"fields: {', '.join(by_name)}", field=name)
    return by_name[name]


def _coerce(owner: str, field: dataclasses.Field, text: str) -> Any:
    """Turn the text of a ``key=value`` pair into the field's type (its default's)."""
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
        raise ConfigError(f"{owner}.{field.name} must be {kind}, got {text!r}", field=field.name) from None
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


def build_config(cls: type, pairs: Sequence[tuple[str, str]]) -> TransitionConfig:
    """A config of ``cls`` from ``(field, text)`` pairs, each text read as its field's type."""
    return cls(**{key: _coerce(cls.__name__, config_field(cls, key), text) for key, text in pairs})


def parse_config(spec: str) -> TransitionConfig:
    """Build a config from a compact string such as ``"classic"``, ``"sra"`` or
    ``"classic:alpha=1,beta=0.5,intervals_per_layer=2"`` (any registered schedule's name, then its
    fields).

    Unknown schedules and keys raise :class:`ConfigError` with a "did you mean" hint.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a config spec must be a non-empty string like 'classic:alpha=1', got {spec!r}")
    head, _, tail = spec.strip().partition(":")
    where = f"config {spec!r}"
    return build_config(schedule_class(head, where), _pairs(tail, where))


def _text(config: TransitionConfig, name: str, value: Any) -> str:
    """A field value as the spec writes it: ``1`` for 1.0 (as ``:g`` does) unless that loses digits.
    A string the spec could not read back (``,``, ``=``, ``:``, outer spaces, empty) is a ConfigError."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    text = str(value)
    if isinstance(value, str) and (not text or text != text.strip() or any(c in text for c in ",=:")):
        raise ConfigError(f"{type(config).__name__}.{name}={value!r} cannot be written in a spec (no ',', '=', "
                          f"':' or outer spaces); validate it in the config", field=name)
    return text


def format_config(config: TransitionConfig) -> str:
    """The canonical spec of a config: the schedule and its non-default fields, e.g.
    ``classic:alpha=1`` (the inverse of :func:`parse_config`; also the config's label in logs)."""
    if not isinstance(config, TransitionConfig):
        raise ConfigError(f"not a schedule config: {config!r} ({type(config).__name__})", field="config")
    default = type(config)()
    changed = [f"{f.name}={_text(config, f.name, getattr(config, f.name))}" for f in fields(config)
               if getattr(config, f.name) != getattr(default, f.name)]
    return config.schedule + (":" + ",".join(changed) if changed else "")


def parse_configs(items: Sequence[Union[str, TransitionConfig]]) -> dict[str, TransitionConfig]:
    """``label -> config`` for several specs (or configs), in order, the first of each config kept."""
    out: dict[str, TransitionConfig] = {}
    for item in items:
        config = parse_config(item) if isinstance(item, str) else item
        if not isinstance(config, TransitionConfig):
            raise ConfigError(f"not a config or a config spec: {item!r} ({type(item).__name__})")
        out.setdefault(format_config(config), config)
    return out


def config_dict(config: TransitionConfig) -> dict[str, Any]:
    """``{"schedule": ..., field: value, ...}`` (as run metadata stores a config)."""
    return {"schedule": config.schedule, **dataclasses.asdict(config)}
