"""The public keyword names: how a caller names the transition in a call, in either engine.

- transformers: ``model.generate(..., attn_transition=<config | True | False>)`` and
  ``attn_transition_prompt_length=<int>`` for a prefill fed in chunks (read and removed by the
  decoder's pre-hook, :mod:`attn_transition.patches.transformers.calls`);
- vLLM: ``additional_config={"attn_transition": "<config>"}`` at engine start, and per request
  ``SamplingParams(extra_args={"attn_transition": ..., "attn_transition_prompt_length": ...})``
  (:mod:`attn_transition.patches.vllm`).

The strings are the same in both engines, so a config named once reads the same everywhere.
"""

from __future__ import annotations

__all__ = ["SWITCH_KWARG", "LENGTH_KWARG", "CALL_KWARGS", "ADDITIONAL_CONFIG_KEY"]

# The per-call switch (on / off / a config) and the whole prompt's width for a prefill fed in chunks.
SWITCH_KWARG = "attn_transition"
LENGTH_KWARG = "attn_transition_prompt_length"
CALL_KWARGS = (SWITCH_KWARG, LENGTH_KWARG)
# vLLM's engine-wide setting: the key of ``additional_config``.
ADDITIONAL_CONFIG_KEY = SWITCH_KWARG
