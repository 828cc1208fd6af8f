"""attn_transition: Attention Transition as a runtime patch for Hugging Face transformers.

    import attn_transition as at
    at.enable(model, at.ClassicConfig())      # or at.SRAConfig()
    model.generate(**inputs, attn_transition=False)   # per-call switch
    at.disable(model)                         # back to the exact stock model

The engine-neutral core. It imports no integration and no evaluation (``lint-imports``
checks it, see setup.cfg); ``enable`` and the other names of the transformers integration
load it on first use. One concern per module:

- :mod:`.protocol`: what a schedule implements (``TransitionConfig``, ``Edit``), the registry of
  schedule names (``register_schedule``, entry points ``attn_transition.schedules``) and the spec codec;
- :mod:`.classic`, :mod:`.sra`: one built-in schedule each, whole (its validated config, its plan,
  its edit and the edit's in-place math); :mod:`.rowops`: the in-place row operations they share;
- :mod:`.config`: the built-in configs gathered (``ClassicConfig``, ``SRAConfig``), ``parse_config``,
  the grid form;
- :mod:`.schedules`: which rows of which layer a config edits (``layer_plan``: the config's plan,
  checked), applying a plan, ``reweight``;
- :mod:`.kernel`: the edited rows of post-softmax attention, in bounded memory;
- :mod:`.budget`: the ``max_chunk_mib`` setting as a memory budget per layer call;
- :mod:`.families`: the model-layout facts both engines need (supported ``model_type`` values,
  which layers the schedule counts);
- :mod:`.keywords`: the public keyword names (``attn_transition=``, ``attn_transition_prompt_length=``);
- :mod:`.errors`: the library's errors;
- :mod:`.models`: the embedded models, offline (``load``);
- :mod:`.cli`, :mod:`.commands`, :mod:`.extras`: the ``attn-transition`` command and its plug-in
  subcommands (defined by evaluation).

The integrations are :mod:`attn_transition.patches` (``.transformers``, ``.vllm``); evaluation is
:mod:`attn_transition.evaluation`.
"""

from typing import TYPE_CHECKING

from .config import ClassicConfig, SRAConfig, format_config, parse_config
from .protocol import Edit, TransitionConfig, register_schedule, schedule_class, schedule_names
from .errors import AttnTransitionError, ConfigError, InputError, NotACausalLMError, UnsupportedModelError, UsageError
from . import kernel
from .schedules import layer_plan, reweight

if TYPE_CHECKING:   # what __getattr__ below loads on first use, spelled out for static tools
    from . import models, patches
    from .families import FAMILIES
    from .patches.transformers import disable, enable, enabled, get_state, is_enabled

__version__ = "0.1.0"

# name -> the module that defines it; loaded on first use (the transformers integration imports
# transformers, the embedded models their loader).
_LAZY = {
    **{name: "attn_transition.patches.transformers"
       for name in ("enable", "disable", "enabled", "is_enabled", "get_state")},
    "FAMILIES": "attn_transition.families",
}
_LAZY_MODULES = {"patches": "attn_transition.patches", "models": "attn_transition.models"}


def __getattr__(name: str):
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(_LAZY_MODULES[name])
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attn_transition' has no attribute {name!r}")


__all__ = [
    "ClassicConfig", "SRAConfig", "TransitionConfig", "Edit", "register_schedule", "schedule_class", "schedule_names",
    "parse_config", "format_config", "reweight", "layer_plan", "kernel",
    "enable", "disable", "enabled", "is_enabled", "get_state", "FAMILIES",
    "AttnTransitionError", "ConfigError", "InputError", "UnsupportedModelError", "NotACausalLMError", "UsageError",
]
