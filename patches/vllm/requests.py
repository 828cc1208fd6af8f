"""Each request's own transition: read and checked in the caller's process, before the engine.

A request names its config and prompt width in ``SamplingParams.extra_args`` (the OpenAI server's
``vllm_xargs`` is the same dict: ``CompletionRequest.to_sampling_params``,
vllm/entrypoints/openai/completion/protocol.py):

- ``"attn_transition"``: a config string (``"sra"``, ``"classic:alpha=1"``) or ``"none"`` (not
  edited); absent: the engine's default (``additional_config={"attn_transition": ...}``, where
  ``"none"`` means: only requests that ask are edited);
- ``"attn_transition_prompt_length"``: the prompt width ``n`` (an int, ``1 <= n <= `` the prompt's
  length), the transformers keyword's meaning: the prompt is the first ``n`` tokens, its rows are
  edited with that ``n``, tokens after it are not edited; absent: the whole prompt.

Every request reaches the engine through ``InputProcessor.process_inputs``
(vllm/v1/engine/input_processor.py; ``LLMEngine.add_request``, ``AsyncLLM.add_request``), in the
process that owns the engine client (``LLM``, the API server). The plugin wraps it: an invalid value
raises :class:`~attn_transition.errors.ConfigError` (a ``ValueError``: the API server answers HTTP
400; vllm/entrypoints/serve/exception_handling) before the request is queued, so the engine stays up.
A valid one is written back resolved (the canonical config string and the width) into the
request's own copy of ``extra_args``, which the worker reads (:mod:`.steps`), and the request's
``cache_salt`` becomes the salt of (the user's salt, the config, the width): prefix caching reuses
blocks only between requests with the same tokens, config and width, whose K/V are the same; a
request that is not edited keeps its own salt, stock caching.

Validated here rather than in a custom logits processor's ``validate_params`` (which vLLM also calls
in this process, ``validate_logits_processors_parameters`` in vllm/v1/sample/logits_processor/
__init__.py): that hook sees neither the prompt (its length) nor the engine's config, cannot set
the request's ``cache_salt``, and a loaded processor joins every step of the worker's sampler
(``update_state`` and ``apply``; vllm/v1/worker/gpu_input_batch.py, vllm/v1/sample/sampler.py).

Beam search (``LLM.beam_search``, the server's ``use_beam_search``) sends each step as a new request
whose prompt is the original prompt plus the beam's tokens
(``BeamSearchSequence.get_prompt``, vllm/entrypoints/generate/beam_search/utils.py). The plugin
wraps ``get_prompt`` to tag that prompt with the original prompt's width
(:data:`BEAM_PROMPT_WIDTH`), so only the original prompt's rows are edited, with its ``n``. The step
requests carry none of the caller's ``extra_args``, so a server request asking for its own config
together with ``use_beam_search`` is refused; so is a server request carrying the plugin's keys (or
``additional_config``) at the top level of its body, which vLLM would ignore.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Optional

from vllm.exceptions import VLLMValidationError

from attn_transition.config import TransitionConfig, format_config, parse_config
from attn_transition.errors import ConfigError
from attn_transition.keywords import ADDITIONAL_CONFIG_KEY, LENGTH_KWARG

from .asked import EngineTransition, default_config, engine_transition, splits_prompts

__all__ = ["CONFIG_KEY", "WIDTH_KEY", "BEAM_PROMPT_WIDTH", "RequestConfigError", "request_transition",
           "resolve_request", "salted", "check_body", "install_request_check"]

CONFIG_KEY = ADDITIONAL_CONFIG_KEY                        # extra_args["attn_transition"]
WIDTH_KEY = LENGTH_KWARG                                  # extra_args["attn_transition_prompt_length"]
BEAM_PROMPT_WIDTH = "attn_transition_beam_prompt_width"   # set on beam search's step prompts
_NONE = "none"
_WRAPPED = "_attn_transition_wrapped"
_ENGINE = "_attn_transition_engine"              # on an InputProcessor: (engine_transition(), splits_prompts())


class RequestConfigError(ConfigError, VLLMValidationError):
    """An invalid per-request value: the library's :class:`ConfigError` (a ``ValueError``) and vLLM's
    ``VLLMValidationError``, which the API server answers with HTTP 400 (``AsyncLLM.generate`` turns
    any other error of ``process_inputs`` into a 500; vllm/v1/engine/async_llm.py)."""

    def __init__(self, message: str, *, field: str) -> None:
        ConfigError.__init__(self, message, field=field)
        self.parameter = field                           # the error response's "param"
        self.value = None

    def __str__(self) -> str:                            # the one line, without vLLM's "(parameter=...)"
        return str(self.args[0])


@functools.lru_cache(maxsize=256)
def _parse(spec: str) -> TransitionConfig:
    return parse_config(spec)


def _config(value: Any) -> Optional[TransitionConfig]:
    """A request's ``extra_args["attn_transition"]``: a config, or None for ``"none"``."""
    field = f"extra_args[{CONFIG_KEY!r}]"
    if not isinstance(value, str):
        raise RequestConfigError(f"{field} must be a config string such as 'sra' or 'classic:alpha=1', or "
                                 f"'none'; got {value!r} ({type(value).__name__})", field=CONFIG_KEY)
    if value.strip().lower() == _NONE:
        return None
    try:
        return _parse(value)
    except ConfigError as err:
        raise RequestConfigError(f"{field}: {err}", field=CONFIG_KEY) from None


def _width(value: Any, prompt_len: Optional[int]) -> int:
    """A request's ``extra_args["attn_transition_prompt_length"]``, checked against its prompt."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestConfigError(f"extra_args[{WIDTH_KEY!r}] must be an int >= 1 (the prompt's first n "
                                 f"tokens), got {value!r}", field=WIDTH_KEY)
    if prompt_len is not None and value > prompt_len:
        raise RequestConfigError(f"extra_args[{WIDTH_KEY!r}] = {value} is longer than the prompt "
                                 f"({prompt_len} tokens)", field=WIDTH_KEY)
    return value


def resolve_request(extra_args: Optional[dict], default: Optional[TransitionConfig], prompt_len: int
                    ) -> tuple[Optional[TransitionConfig], int]:
    """The config (None: not edited) and prompt width of a request from its ``extra_args``, the
    engine's default config and its prompt's length (in the worker: what the caller's process
    wrote back, or the defaults for a request that bypassed it).

    Raises:
        ConfigError: an invalid value (the message names the ``extra_args`` key).
    """
    extra = extra_args or {}
    config = _config(extra[CONFIG_KEY]) if CONFIG_KEY in extra else default
    width = _width(extra[WIDTH_KEY], prompt_len) if WIDTH_KEY in extra else prompt_len
    return config, width


def salted(user_salt: Optional[str], config: TransitionConfig, width: int) -> str:
    """The ``cache_salt`` of an edited request: its user's salt, config and width, unambiguously."""
    return json.dumps([ADDITIONAL_CONFIG_KEY, format_config(config), width, user_salt])


def _refuse_off_engine() -> RequestConfigError:
    return RequestConfigError(f"extra_args[{CONFIG_KEY!r}]: this engine was started without the attn_transition "
                              f"plugin; start it with additional_config={{{ADDITIONAL_CONFIG_KEY!r}: 'none'}} (edit "
                              f"only requests that ask) or a default config", field=CONFIG_KEY)


# What a request with a config that is not continuous is told where the engine's settings are not known.
_MAY_SPLIT = ("enable_chunked_prefill", "False")


def request_transition(engine: Optional[EngineTransition], request: Any, prompt: Any, *,
                       splits: Optional[tuple[str, str]] = _MAY_SPLIT) -> None:
    """Check one ``EngineCoreRequest`` (``process_inputs``' result) and resolve its transition in place.

    ``engine``: :func:`~.asked.engine_transition` of the engine (None: the plugin is off);
    ``prompt``: what the caller handed ``process_inputs`` (a beam search step carries
    :data:`BEAM_PROMPT_WIDTH`); ``splits``: :func:`~.asked.splits_prompts` of the engine (None: it
    computes every prompt in one step; by default it may split them). Raises :class:`ConfigError`
    for an invalid value, for a request asking for a config on an engine started without the
    plugin, or for a config that is not continuous (each edit needs all its rows in one step) on
    an engine that may split its prompt.
    """
    params = request.sampling_params
    if params is None:                                   # pooling: the engine's default, as before
        return
    extra = dict(params.extra_args or {})
    beam_width = prompt.get(BEAM_PROMPT_WIDTH) if isinstance(prompt, dict) else None
    if beam_width is not None and WIDTH_KEY not in extra:
        extra[WIDTH_KEY] = beam_width
    if CONFIG_KEY not in extra and WIDTH_KEY not in extra and engine is None:
        return                                           # stock vLLM: nothing read, nothing changed
    prompt_len = (len(request.prompt_token_ids) if request.prompt_token_ids is not None
                  else len(request.prompt_embeds))      # a prompt of embeddings: its rows
    if engine is None:
        if CONFIG_KEY in extra and _config(extra[CONFIG_KEY]) is not None:
            raise _refuse_off_engine()
        if WIDTH_KEY in extra:
            _width(extra[WIDTH_KEY], prompt_len)
        return
    config, width = resolve_request(extra, default_config(engine), prompt_len)
    if config is not None and not config.continuous and splits is not None:
        setting, value = splits
        also = "" if setting == "enable_prefix_caching" else " and enable_prefix_caching=False"
        raise RequestConfigError(f"extra_args[{CONFIG_KEY!r}]: {format_config(config)!r} is not continuous (each edit "
                                 f"needs all its rows in one step) and this engine's {setting} splits prompts into "
                                 f"steps; start it with {setting}={value}{also}, or use a continuous schedule",
                                 field=CONFIG_KEY)
    extra[CONFIG_KEY] = _NONE if config is None else format_config(config)
    extra[WIDTH_KEY] = width
    params.extra_args = extra                            # the request's own copy (clone() may be shallow)
    if config is not None:
        request.cache_salt = salted(request.cache_salt, config, width)


def _wrap_process_inputs(process_inputs: Any) -> Any:
    @functools.wraps(process_inputs)
    def wrapped(self, request_id: str, prompt: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        request = process_inputs(self, request_id, prompt, params, *args, **kwargs)
        if not hasattr(self, _ENGINE):                   # read once per input processor (per engine)
            setattr(self, _ENGINE, (engine_transition(self.vllm_config.additional_config),
                                    splits_prompts(self.vllm_config)))
        engine, splits = getattr(self, _ENGINE)
        request_transition(engine, request, prompt, splits=splits)
        return request

    setattr(wrapped, _WRAPPED, True)
    return wrapped


def _wrap_get_prompt(get_prompt: Any) -> Any:
    @functools.wraps(get_prompt)
    def wrapped(self) -> Any:
        prompt = get_prompt(self)
        original = self.orig_prompt
        if original.get("type") != "enc_dec" and isinstance(prompt, dict):
            prompt[BEAM_PROMPT_WIDTH] = len(original["prompt_token_ids"])
        return prompt

    setattr(wrapped, _WRAPPED, True)
    return wrapped


# Keys a server request might carry at the top level of its body, where vLLM keeps them unread
# (``OpenAIBaseModel``: extra="allow", vllm/entrypoints/serve/engine/protocol.py).
_MISPLACED = (CONFIG_KEY, WIDTH_KEY, "additional_config")


def check_body(request: Any) -> None:
    """Refuse a server request (``CompletionRequest``, ``ChatCompletionRequest``) carrying the
    plugin's keys or ``additional_config`` at the top level of its body, which vLLM would ignore."""
    misplaced = [k for k in _MISPLACED if k in (getattr(request, "model_extra", None) or {})]
    if misplaced:
        raise RequestConfigError(f"{misplaced[0]!r} at the top level of the request body is not read; pass "
                                 f"\"vllm_xargs\": {{{CONFIG_KEY!r}: ..., {WIDTH_KEY!r}: ...}}", field=misplaced[0])


def _wrap_to_sampling_params(to_params: Any) -> Any:
    @functools.wraps(to_params)
    def wrapped(self, *args: Any, **kwargs: Any) -> Any:
        check_body(self)
        return to_params(self, *args, **kwargs)

    setattr(wrapped, _WRAPPED, True)
    return wrapped


def _wrap_to_beam_search_params(to_params: Any) -> Any:
    @functools.wraps(to_params)
    def wrapped(self, *args: Any, **kwargs: Any) -> Any:
        check_body(self)
        asked = [k for k in (CONFIG_KEY, WIDTH_KEY) if k in (getattr(self, "vllm_xargs", None) or {})]
        if asked:
            raise RequestConfigError(f"vllm_xargs[{asked[0]!r}]: beam search's step requests carry no vllm_xargs, so "
                              f"they run with the engine's config; drop {asked[0]!r} or use_beam_search",
                              field=asked[0])
        return to_params(self, *args, **kwargs)

    setattr(wrapped, _WRAPPED, True)
    return wrapped


def _install(owner: Any, name: str, wrap: Any) -> None:
    method = getattr(owner, name)
    if not getattr(method, _WRAPPED, False):
        setattr(owner, name, wrap(method))


def install_request_check() -> None:
    """Wrap ``InputProcessor.process_inputs``, beam search's ``get_prompt`` and the OpenAI requests'
    ``to_sampling_params`` / ``to_beam_search_params`` (once per process; cheap, and a no-op for requests on an engine
    without the plugin that do not ask)."""
    from vllm.entrypoints.generate.beam_search.utils import BeamSearchSequence
    from vllm.v1.engine.input_processor import InputProcessor

    _install(InputProcessor, "process_inputs", _wrap_process_inputs)
    _install(BeamSearchSequence, "get_prompt", _wrap_get_prompt)
    try:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    except ImportError:                                  # pragma: no cover - the server's extras missing
        return
    for request_type in (CompletionRequest, ChatCompletionRequest):
        _install(request_type, "to_beam_search_params", _wrap_to_beam_search_params)
        _install(request_type, "to_sampling_params", _wrap_to_sampling_params)
