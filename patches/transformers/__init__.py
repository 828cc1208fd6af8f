"""The transformers integration: plugs the engine-neutral kernel
(:mod:`attn_transition.kernel`) into transformers' attention registry.

Installed as ``attn_transition.patches``. Knows transformers; knows nothing about
evaluation. One concern per module:

- :mod:`.api`: ``enable`` / ``disable`` / ``enabled`` / ``is_enabled``, the decoder's hooks;
- :mod:`.state`: the state on an enabled model (settings, schedule layout, per-thread calls);
- :mod:`.calls`: what one forward call edits (the plan, read once per call);
- :mod:`.generation`: the prompt's width inside ``generate``;
- :mod:`.attention`: the registered attention function (stock rows, then the kernel);
- :mod:`.base_rows`: the stock rows on the CPU, skipping the recomputed ones where that pays;
- :mod:`.explicit`: plain explicit attention with its weights (``output_attentions``);
- :mod:`.budget`: the ``max_chunk_mib`` setting as a memory budget per layer call;
- :mod:`.registration`: the names in transformers' registries;
- :mod:`.families`: per-architecture facts (which layers attend, how the schedule counts them);
- :mod:`.compat`: version-dependent workarounds.
"""

from .api import DEFAULT_MAX_CHUNK_MIB, STATE_ATTR, Options, TransitionState, disable, enable, enabled, get_state, is_enabled
from .families import FAMILIES, family_for

__all__ = ["enable", "disable", "enabled", "is_enabled", "get_state", "TransitionState", "Options", "FAMILIES",
           "family_for", "STATE_ATTR", "DEFAULT_MAX_CHUNK_MIB"]
