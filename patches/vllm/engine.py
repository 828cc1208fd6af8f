"""Where the plugin is asked for, and what it refuses: checked once, at engine start.

The engine config is built by ``EngineArgs.create_engine_config`` (vllm/engine/arg_utils.py) in the
process that starts the engine (``LLM(...)``, ``vllm serve``), after vLLM has loaded the general
plugins (``EngineArgs.__post_init__``). The plugin wraps that method: without
``additional_config["attn_transition"]`` the wrapper calls it unchanged; with it, the config string
is validated and the settings the edit cannot honour are refused there, in the caller's process, as
one-line :class:`~attn_transition.errors.ConfigError` s naming the setting to change.

Prefix caching stays on, salted per request (:mod:`.requests`): every prompt row's edit depends
on the prompt's width, so K/V cached for a prompt of another width (a shared document with another
question) are not the K/V this prompt needs; a request's cache is salted by (its config, its width),
so only exact repeats reuse. ``additional_config={"attn_transition": "none"}`` starts the plugin
with no default: only requests that ask (``SamplingParams.extra_args``) are edited.
KV connectors (``kv_transfer_config``) hand K/V computed for one prompt to another in the same way,
and are refused.

Visible: a key of ``additional_config`` spelled close to ``attn_transition`` is refused with the
spelling to use (else the engine would silently be stock vLLM), and an engine that edits says so at
start in one WARNING line through vLLM's own logger (``vllm.attn_transition``, a child of the
``vllm`` logger that vLLM gives a handler: vllm/logger.py, ``DEFAULT_LOGGING_CONFIG``) and in the
Prometheus gauge ``attn_transition_config_info`` of the process that built the config (the API
server's ``/metrics`` under ``vllm serve``).
"""

from __future__ import annotations

import difflib
import functools
from typing import Any, Optional

from attn_transition.config import TransitionConfig, format_config
from attn_transition.errors import ConfigError, did_you_mean
from attn_transition.families import family_for, schedule_layout
from attn_transition.keywords import ADDITIONAL_CONFIG_KEY

from .asked import FIELD, EngineTransition, engine_transition, splits_prompts
from .platforms import PLATFORMS, current_platform_backend, load

__all__ = ["install_engine_check", "check_engine_args", "check_vllm_config", "check_key_spelling", "uses_alibi",
           "check_whole_prompts", "announce", "LOGGER_NAME", "METRIC_NAME"]

# A child of vLLM's "vllm" logger, which vLLM configures with a handler (and propagate=False, so a
# logger outside its tree has none under vLLM's defaults).
LOGGER_NAME = "vllm.attn_transition"
METRIC_NAME = "attn_transition_config_info"
# difflib's ratio above which a key of additional_config is taken for a misspelling of the plugin's key:
# 'attn_transtion' 0.97, 'attention_transition' 0.86, 'transition' 0.80; vLLM's own keys
# ('gdn_prefill_backend', 'kda_prefill_backend', ...) stay below 0.5.
_CLOSE = 0.8
_WRAPPED = "_attn_transition_wrapped"


def _normalised(key: str) -> str:
    return key.strip().lower().replace("-", "_").replace(" ", "_")


def check_key_spelling(additional_config: Any) -> None:
    """Refuse a key of ``additional_config`` that is not the plugin's but close to it.

    Close: equal once lower-cased with ``-`` and spaces read as ``_`` (``attn-transition``), or a
    difflib ratio of at least 0.8 (``attn_transtion``, ``attention_transition``). Without this the
    engine would start as stock vLLM and edit nothing, without a word.

    Raises:
        ConfigError: naming the key and the spelling to use (field ``additional_config``).
    """
    if not isinstance(additional_config, dict):
        return
    for key in additional_config:
        if not isinstance(key, str) or key == ADDITIONAL_CONFIG_KEY:
            continue
        near = _normalised(key) == ADDITIONAL_CONFIG_KEY or difflib.get_close_matches(
            _normalised(key), [ADDITIONAL_CONFIG_KEY], n=1, cutoff=_CLOSE)
        if near:
            hint = did_you_mean(_normalised(key), [ADDITIONAL_CONFIG_KEY])   # the key itself: it is close
            raise ConfigError(f"additional_config key {key!r} is not the attn_transition plugin's key{hint}; "
                              f"an engine without additional_config[{ADDITIONAL_CONFIG_KEY!r}] edits nothing",
                              field="additional_config")


def check_engine_args(args: Any) -> Optional[EngineTransition]:
    """Validate the transition config of ``EngineArgs`` and adjust the settings it needs, before
    vLLM builds the engine config. Returns the engine's default (:func:`engine_transition`), or None
    when the plugin is not asked for."""
    check_key_spelling(getattr(args, "additional_config", None))
    config = engine_transition(getattr(args, "additional_config", None))
    if config is None:
        return None
    # Prefix caching stays as the caller set it (vLLM's default: on): the caller's process salts
    # each edited request's cache by (its config, its prompt width) (:mod:`.requests`), so only a
    # request with the same tokens, config and width reuses its blocks; a request that is not
    # edited keeps stock caching. Where the cached keys cannot be read back, the CPU check turns it
    # off (:func:`.cpu.check_cpu_engine`).
    if getattr(args, "speculative_config", None):
        raise ConfigError("attn_transition: speculative decoding is not supported with the transition; "
                          "remove speculative_config", field="speculative_config")
    if getattr(args, "kv_cache_dtype", "auto") not in ("auto", None):
        raise ConfigError(f"attn_transition: the edited rows read the KV cache, which must hold the model's "
                          f"dtype; pass kv_cache_dtype='auto' (got {args.kv_cache_dtype!r})",
                          field="kv_cache_dtype")
    if getattr(args, "kv_transfer_config", None) is not None:
        # A KV connector (disaggregated prefill, offloading) hands K/V computed for one prompt to
        # another, as prefix caching would: the edited rows of another prompt length.
        raise ConfigError("attn_transition: a KV connector hands K/V computed for other prompts to this one, which "
                          "the edit makes different; remove kv_transfer_config (--kv-transfer-config)",
                          field="kv_transfer_config")
    return config


def uses_alibi(text_config: Any) -> bool:
    """Whether a model's text config asks for ALiBi position biases, as vLLM's model code reads it:
    ``config.alibi`` (``FalconAttention``, vllm/model_executor/models/falcon.py), MPT's
    ``attn_config["alibi"]``, Jais' ``position_embedding_type == "alibi"``. The edited rows are
    recomputed without a position bias, so such a model cannot be edited faithfully."""
    attn_config = getattr(text_config, "attn_config", None)
    nested = attn_config.get("alibi") if isinstance(attn_config, dict) else getattr(attn_config, "alibi", False)
    return (getattr(text_config, "alibi", False) is True or nested is True
            or getattr(text_config, "position_embedding_type", None) == "alibi")


def check_vllm_config(vllm_config: Any, config: EngineTransition) -> None:
    """Refuse, at engine start, what the plugin cannot edit faithfully on this engine: the model
    (its family, ALiBi, MLA), dual-batch overlap, a platform without a row in
    :data:`~.platforms.PLATFORMS`, and what that row's engine check refuses.

    Raises:
        UnsupportedModelError: the model's family (named) is not one the edit supports.
        ConfigError: naming the setting to change (``field``).
    """
    from vllm.platforms import current_platform

    model_config = vllm_config.model_config
    text_config = model_config.hf_text_config
    family_for(text_config)                              # UnsupportedModelError, naming the model type
    schedule_layout(text_config)
    if uses_alibi(text_config):
        raise ConfigError("attn_transition: ALiBi attention is not supported by the vLLM plugin (the edited rows "
                          "carry no position bias); use a model without ALiBi", field="model")
    if getattr(model_config, "use_mla", False):
        raise ConfigError("attn_transition: multi-head latent attention (MLA) backends are not supported by the "
                          "vLLM plugin; use the transformers path (attn_transition.enable)", field="model")
    if getattr(vllm_config.parallel_config, "enable_dbo", False):
        raise ConfigError("attn_transition: dual-batch overlap splits a step's requests across micro-batches; "
                          "pass enable_dbo=False", field="enable_dbo")
    check_whole_prompts(vllm_config, config)
    found = current_platform_backend(current_platform)
    if found is None:
        names = " and ".join(name.upper() for name in PLATFORMS)
        raise ConfigError(f"attn_transition: the vLLM plugin runs on vLLM's {names} platforms, not on "
                          f"{type(current_platform).__name__}", field="device")
    load(found[1].engine_check)(vllm_config)


def check_whole_prompts(vllm_config: Any, config: EngineTransition) -> None:
    """A default config whose schedule is not continuous (``continuous`` False: each edit needs all
    its rows in one step) needs every prompt computed in one step: chunked prefill and a
    long-prefill cap are refused, prefix caching is turned off (a cache hit starts a prompt's
    rows after the cached ones; the engine's WARNING line says so). Requests naming such a
    config on another engine are refused one by one (:func:`~.requests.request_transition`).

    Raises:
        ConfigError: naming the setting that splits prompts (``field``).
    """
    if not isinstance(config, TransitionConfig) or config.continuous:
        return
    vllm_config.cache_config.enable_prefix_caching = False
    split = splits_prompts(vllm_config)
    if split is not None:
        setting, value = split
        raise ConfigError(f"attn_transition: {FIELD} {format_config(config)!r} is not continuous (each edit needs "
                          f"all its rows in one step) and {setting} splits prompts into steps; pass "
                          f"{setting}={value}", field=setting)


def _prefix_caching(vllm_config: Any) -> str:
    """What the engine does with prefix caching, as :func:`check_engine_args` and the platform
    checks left it (read from the built config, so it reports what they decided)."""
    if not vllm_config.cache_config.enable_prefix_caching:
        return "off"
    return "salted by each request's config and prompt width"


def announce(vllm_config: Any, config: Any) -> str:
    """Say at engine start, in one WARNING line through vLLM's logger, what the engine edits with
    which config and what became of prefix caching; publish the same in the Prometheus gauge
    ``attn_transition_config_info`` (labels ``config``: the default's canonical spec, or ``none``;
    ``prefix_caching``; value 1). ``config``: the engine's default config, or the no-default marker
    of ``"none"``. Returns the line."""
    from vllm.logger import init_logger

    caching = _prefix_caching(vllm_config)
    if isinstance(config, TransitionConfig):
        label = format_config(config)
        edited = f"every request's prompt rows with {label} ({config!r}, from {FIELD}) unless a request names its own"
    else:
        label = "none"
        edited = f"only the prompt rows of requests that name a config ({FIELD} is 'none')"
    line = f"attn_transition: editing {edited}; decode rows are not edited; prefix caching {caching}"
    init_logger(LOGGER_NAME).warning("%s", line)
    _publish(label, caching)
    return line


_GAUGE: list[Any] = []          # the process's one gauge (prometheus_client refuses a second of a name)


def _publish(label: str, caching: str) -> None:
    """Set ``attn_transition_config_info{config=label, prefix_caching=caching} 1`` in this process's
    default registry (the one the API server's ``/metrics`` serves: vllm/v1/metrics/prometheus.py,
    ``get_prometheus_registry``), dropping the labels of an earlier engine of this process."""
    try:
        from prometheus_client import Gauge
    except ImportError:                                  # pragma: no cover - a vLLM dependency
        return
    if not _GAUGE:
        _GAUGE.append(Gauge(METRIC_NAME, "The attention transition this vLLM engine applies (value 1)",
                            labelnames=["config", "prefix_caching"], multiprocess_mode="mostrecent"))
    _GAUGE[0].clear()
    _GAUGE[0].labels(config=label, prefix_caching=caching).set(1)


def _wrap_create_engine_config(create: Any) -> Any:
    @functools.wraps(create)
    def create_engine_config(self, *args: Any, **kwargs: Any) -> Any:
        config = check_engine_args(self)
        vllm_config = create(self, *args, **kwargs)
        if config is not None:
            check_vllm_config(vllm_config, config)
            announce(vllm_config, config)
        return vllm_config

    setattr(create_engine_config, _WRAPPED, True)
    return create_engine_config


def install_engine_check() -> None:
    """Wrap ``EngineArgs.create_engine_config`` (once per process; ``AsyncEngineArgs`` inherits it)."""
    from vllm.engine.arg_utils import EngineArgs

    if not getattr(EngineArgs.create_engine_config, _WRAPPED, False):
        EngineArgs.create_engine_config = _wrap_create_engine_config(EngineArgs.create_engine_config)
