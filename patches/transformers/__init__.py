"""The transformers integration: plugs the engine-neutral kernel
(:mod:`attn_transition.kernel`) into transformers' attention registry.

Installed as ``attn_transition.patches.transformers`` (its public names are also reachable from
``attn_transition.patches`` and ``attn_transition``). Knows transformers and the core; knows
nothing about the vLLM plugin or evaluation. One concern per module:

- :mod:`.api`: ``enable`` / ``disable`` / ``enabled`` / ``is_enabled``, the decoder's hooks;
- :mod:`.state`: the state on an enabled model (settings, schedule layout, per-thread calls);
- :mod:`.calls`: what one forward call edits (its geometry, :class:`~.calls.CallGeometry`, read once
  per call; each layer's edits are the core's ``layer_plan``);
- :mod:`.generation`: the prompt's width inside ``generate``;
- :mod:`.attention`: the registered attention function (stock rows, then the kernel) and its
  registration;
- :mod:`.base_rows`: the stock rows on the CPU, skipping the recomputed ones where that pays;
- :mod:`.explicit`: plain explicit attention with its weights (``output_attentions``);
- :mod:`.registration`: the names in transformers' registries and the stock function behind each;
- :mod:`.families`: the transformers way out of a refused multimodal model;
- :mod:`.compat`: version-dependent workarounds.

From the core it uses :mod:`attn_transition.protocol` (any registered schedule, through its base
classes), :mod:`attn_transition.schedules` (``layer_plan``, the padding spans),
:mod:`attn_transition.kernel` (the edited rows), :mod:`attn_transition.budget` (the ``max_chunk_mib`` setting),
:mod:`attn_transition.families` (which layers the schedule counts) and
:mod:`attn_transition.keywords` (the per-call keyword names).
"""

from attn_transition.families import FAMILIES

from .families import family_for
from .api import DEFAULT_MAX_CHUNK_MIB, STATE_ATTR, Options, TransitionState, disable, enable, enabled, get_state, is_enabled
from .registration import register_attention

__all__ = ["enable", "disable", "enabled", "is_enabled", "get_state", "TransitionState", "Options", "FAMILIES",
           "family_for", "STATE_ATTR", "DEFAULT_MAX_CHUNK_MIB", "register_attention"]
