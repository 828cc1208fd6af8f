"""Where the plugin is asked for, and what it refuses: checked once, at engine start.

The engine config is built by ``EngineArgs.create_engine_config`` (vllm/engine/arg_utils.py) in the
process that starts the engine (``LLM(...)``, ``vllm serve``), after vLLM has loaded the general
plugins (``EngineArgs.__post_init__``). The plugin wraps that method: without
``additional_config["attn_transition"]`` the wrapper calls it unchanged; with it, the config string
is validated and the settings the edit cannot honour are refused there, in the caller's process, as
one-line :class:`~attn_transition.errors.ConfigError` s naming the setting to change.

Prefix caching is turned off when the transition is on (unless the caller asked for it, which is
refused): every prompt row's edit depends on the whole prompt's length, so K/V cached for a prompt
of another length (a shared document with another question) are not the K/V this prompt needs.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Optional

from attn_transition.config import ClassicConfig, SRAConfig, TransitionConfig, parse_config
from attn_transition.errors import ConfigError

from . import ADDITIONAL_CONFIG_KEY

__all__ = ["transition_config", "install_engine_check", "check_engine_args", "check_vllm_config"]

logger = logging.getLogger("attn_transition.vllm")
_WRAPPED = "_attn_transition_wrapped"
_FIELD = f"additional_config[{ADDITIONAL_CONFIG_KEY!r}]"


def transition_config(additional_config: Any) -> Optional[TransitionConfig]:
    """The transition config an engine's ``additional_config`` asks for, or None (plugin inert).

    Raises:
        ConfigError: the value is not a valid config string (the message names the field).
    """
    if not isinstance(additional_config, dict) or ADDITIONAL_CONFIG_KEY not in additional_config:
        return None
    spec = additional_config[ADDITIONAL_CONFIG_KEY]
    if isinstance(spec, (ClassicConfig, SRAConfig)):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"{_FIELD} must be a config string such as 'classic', 'sra' or 'classic:alpha=1', "
                          f"got {spec!r} ({type(spec).__name__})", field=ADDITIONAL_CONFIG_KEY)
    try:
        return parse_config(spec)
    except ConfigError as err:
        raise ConfigError(f"{_FIELD}: {err}", field=ADDITIONAL_CONFIG_KEY) from None


def check_engine_args(args: Any) -> Optional[TransitionConfig]:
    """Validate the transition config of ``EngineArgs`` and adjust the settings it needs, before
    vLLM builds the engine config. Returns the config, or None when the plugin is not asked for."""
    config = transition_config(getattr(args, "additional_config", None))
    if config is None:
        return None
    if args.enable_prefix_caching:
        raise ConfigError(
            "attn_transition: prefix caching would reuse K/V computed for prompts of other lengths, which "
            "the edit makes different; leave enable_prefix_caching unset or pass enable_prefix_caching=False "
            "(--no-enable-prefix-caching)", field="enable_prefix_caching")
    args.enable_prefix_caching = False
    if getattr(args, "speculative_config", None):
        raise ConfigError("attn_transition: speculative decoding is not supported with the transition; "
                          "remove speculative_config", field="speculative_config")
    if getattr(args, "kv_cache_dtype", "auto") not in ("auto", None):
        raise ConfigError(f"attn_transition: the edited rows read the KV cache, which must hold the model's "
                          f"dtype; pass kv_cache_dtype='auto' (got {args.kv_cache_dtype!r})",
                          field="kv_cache_dtype")
    return config


def check_vllm_config(vllm_config: Any, config: TransitionConfig) -> None:
    """Refuse, at engine start, what the plugin cannot edit faithfully on this engine."""
    from vllm.platforms import current_platform

    from attn_transition.patches.families import family_for, schedule_layout

    model_config = vllm_config.model_config
    text_config = model_config.hf_text_config
    family_for(text_config)                              # UnsupportedModelError, naming the model type
    schedule_layout(text_config)
    if getattr(model_config, "use_mla", False):
        raise ConfigError("attn_transition: multi-head latent attention (MLA) backends are not supported by the "
                          "vLLM plugin; use the transformers path (attn_transition.enable)", field="model")
    if getattr(vllm_config.parallel_config, "enable_dbo", False):
        raise ConfigError("attn_transition: dual-batch overlap splits a step's requests across micro-batches; "
                          "pass enable_dbo=False", field="enable_dbo")
    if current_platform.is_cpu():
        from .cpu import check_cpu_engine

        check_cpu_engine(vllm_config)
    elif current_platform.is_cuda():
        from .cuda import check_cuda_engine

        check_cuda_engine(vllm_config)
    else:
        raise ConfigError(f"attn_transition: the vLLM plugin runs on vLLM's CPU and CUDA platforms, not on "
                          f"{type(current_platform).__name__}", field="device")
    logger.info("attn_transition: %s on every prompt; prefix caching off", config)


def _wrap_create_engine_config(create: Any) -> Any:
    @functools.wraps(create)
    def create_engine_config(self, *args: Any, **kwargs: Any) -> Any:
        config = check_engine_args(self)
        vllm_config = create(self, *args, **kwargs)
        if config is not None:
            check_vllm_config(vllm_config, config)
        return vllm_config

    setattr(create_engine_config, _WRAPPED, True)
    return create_engine_config


def install_engine_check() -> None:
    """Wrap ``EngineArgs.create_engine_config`` (once per process; ``AsyncEngineArgs`` inherits it)."""
    from vllm.engine.arg_utils import EngineArgs

    if not getattr(EngineArgs.create_engine_config, _WRAPPED, False):
        EngineArgs.create_engine_config = _wrap_create_engine_config(EngineArgs.create_engine_config)
