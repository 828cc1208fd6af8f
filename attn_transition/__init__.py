"""attn_transition: Attention Transition as a runtime patch for Hugging Face transformers.

    import attn_transition as at
    at.enable(model, at.ClassicConfig())      # or at.SRAConfig()
    model.generate(**inputs, attn_transition=False)   # per-call switch
    at.disable(model)                         # back to the exact stock model
"""

from .config import ClassicConfig, SRAConfig, TransitionConfig, parse_config
from .errors import AttnTransitionError, ConfigError, InputError, NotACausalLMError, UnsupportedModelError, UsageError
from . import kernel
from .schedules import layer_plan, reweight

__version__ = "0.1.0"


def __getattr__(name):
    # The integration layer imports transformers; load it only when asked for.
    if name in ("enable", "disable", "enabled", "is_enabled", "get_state", "FAMILIES", "patches"):
        import importlib

        patches = importlib.import_module("attn_transition.patches")
        return patches if name == "patches" else getattr(patches, name)
    if name == "models":                     # the embedded models (imports the evaluation package)
        import importlib

        return importlib.import_module("attn_transition.models")
    raise AttributeError(f"module 'attn_transition' has no attribute {name!r}")


__all__ = [
    "ClassicConfig", "SRAConfig", "TransitionConfig", "parse_config", "reweight", "layer_plan", "kernel",
    "enable", "disable", "enabled", "is_enabled", "get_state", "FAMILIES",
    "AttnTransitionError", "ConfigError", "InputError", "UnsupportedModelError", "NotACausalLMError", "UsageError",
]
