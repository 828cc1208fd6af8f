"""What an engine asks of the plugin: its ``additional_config["attn_transition"]``, read.

Every process of an engine reads the same value (the engine-start check in the caller's process,
:mod:`.engine`; the request check, :mod:`.requests`; the backends and the step rows in the worker,
:mod:`.backends`, :mod:`.steps`), so this module imports nothing of the plugin and nothing of vLLM:
each of them imports it, and it imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

from attn_transition.config import TransitionConfig, parse_config
from attn_transition.errors import ConfigError
from attn_transition.keywords import ADDITIONAL_CONFIG_KEY

__all__ = ["FIELD", "NoDefault", "NO_DEFAULT", "EngineTransition", "transition_config", "engine_transition",
           "default_config", "splits_prompts"]

FIELD = f"additional_config[{ADDITIONAL_CONFIG_KEY!r}]"


def transition_config(additional_config: Any) -> Optional[TransitionConfig]:
    """The transition config an engine's ``additional_config`` asks for, or None (plugin inert).

    Raises:
        ConfigError: the value is not a valid config string (the message names the field).
    """
    if not isinstance(additional_config, dict) or ADDITIONAL_CONFIG_KEY not in additional_config:
        return None
    spec = additional_config[ADDITIONAL_CONFIG_KEY]
    if isinstance(spec, TransitionConfig):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"{FIELD} must be a config string such as 'classic', 'sra' or 'classic:alpha=1', "
                          f"got {spec!r} ({type(spec).__name__})", field=ADDITIONAL_CONFIG_KEY)
    try:
        return parse_config(spec)
    except ConfigError as err:
        raise ConfigError(f"{FIELD}: {err}", field=ADDITIONAL_CONFIG_KEY) from None


@dataclass(frozen=True)
class NoDefault:
    """The engine default of ``additional_config={"attn_transition": "none"}``: the plugin is on,
    a request is edited only when it asks (``SamplingParams.extra_args``, :mod:`.requests`)."""

    schedule: str = "none"


NO_DEFAULT = NoDefault()
EngineTransition = Union[TransitionConfig, NoDefault]


def engine_transition(additional_config: Any) -> Optional[EngineTransition]:
    """What an engine's ``additional_config`` asks of the plugin: None (no key: the plugin is inert,
    exactly stock vLLM), :data:`NO_DEFAULT` (``"none"``: on, per-request configs only) or the
    default config of every request that does not name its own.

    Raises:
        ConfigError: the value is not ``"none"`` nor a valid config string (the message names the field).
    """
    if isinstance(additional_config, dict) and isinstance(additional_config.get(ADDITIONAL_CONFIG_KEY), str) \
            and additional_config[ADDITIONAL_CONFIG_KEY].strip().lower() == "none":
        return NO_DEFAULT
    return transition_config(additional_config)


def default_config(engine: Optional[EngineTransition]) -> Optional[TransitionConfig]:
    """The config of a request that names none: ``engine``'s default, or None (not edited) for an
    inert engine or one started with ``"none"``."""
    return None if engine is None or isinstance(engine, NoDefault) else engine


def splits_prompts(vllm_config: Any) -> Optional[tuple[str, str]]:
    """Why the engine of ``vllm_config`` may compute a prompt's rows in more than one step, as
    ``(setting, the value that stops it)``, or None: every prompt is computed in one step, from its first token. A schedule that is not continuous (``TransitionConfig.continuous``
    False: each edit needs all its rows at once) is edited only on such an engine.

    A prompt is split by chunked prefill (``enable_chunked_prefill``) and by a long-prefill cap
    (``long_prefill_token_threshold``: ``Scheduler.schedule``, vllm/v1/core/sched/scheduler.py);
    a prefix-cache hit starts its rows after the cached ones (``enable_prefix_caching``).
    """
    scheduler, cache = vllm_config.scheduler_config, vllm_config.cache_config
    if getattr(scheduler, "enable_chunked_prefill", True):
        return "enable_chunked_prefill", "False"
    if (getattr(scheduler, "long_prefill_token_threshold", 0) or 0) > 0:
        return "long_prefill_token_threshold", "0"
    if getattr(cache, "enable_prefix_caching", True):
        return "enable_prefix_caching", "False"
    return None
