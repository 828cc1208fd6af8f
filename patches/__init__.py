"""Model-integration layer: plugs the schedules into transformers' attention registry.

Installed as ``attn_transition.patches``. Knows transformers; knows nothing about
evaluation.
"""

from .api import DEFAULT_MAX_CHUNK_MIB, STATE_ATTR, TransitionState, disable, enable, enabled, get_state, is_enabled
from .families import FAMILIES, family_for

__all__ = ["enable", "disable", "enabled", "is_enabled", "get_state", "TransitionState", "FAMILIES",
           "family_for", "STATE_ATTR", "DEFAULT_MAX_CHUNK_MIB"]
