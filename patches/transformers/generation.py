"""Whether a forward call is made by *this* model's ``generate``, and what that ``generate`` was given.

The schedule edits the rows of a *prompt* and needs its whole width ``n``. Inside
``generate`` every forward call is one of: the prefill (one call, or one call per chunk with
``prefill_chunk_size``), or a decoding step (one new token with a cache; the whole sequence
again with ``use_cache=False``; a few candidate tokens under assisted decoding). The prompt's
width is what ``generate`` was given, and ``generate`` holds it in a local variable,
``input_ids_length`` (``generation/utils.py``, ``GenerationMixin.generate``; present from
transformers 4.57 to 5.25 at least, checked by the floor suite), next to the 2D padding mask
it was given (``model_kwargs["attention_mask"]``; None when there is no padding).

How the call is found: by walking this thread's stack, by identity. transformers offers no
way to read the width without the stack in every supported version: ``generate`` passes the
forward the sliced ``input_ids``, the mask of the sequence so far and (5.x) no
``cache_position`` at all; neither ``prepare_inputs_for_generation`` nor the generation config
holds the prompt's width, and nothing tells a ``use_cache=False`` decoding step (the whole
sequence again) from a fresh prompt. Wrapping or rebinding ``generate`` is what this library
does not do. So, from the decoder's pre-hook outwards:

- the first frame of transformers' ``generation`` package decides. If it is a frame of
  ``generation/utils.py`` (``_sample``, ``_prefill``, ``_beam_search``, ``_assisted_decoding``...),
  the run of ``utils.py`` frames above it leads to the ``generate`` that made the call; if it
  is another file of the package (a ``LogitsProcessorList``, a ``StoppingCriteriaList``, a
  candidate generator, continuous batching), the call was made *by generate's machinery*, not
  by ``generate`` itself (a scorer or reward model in a logits processor);
- that ``generate`` counts only if its ``self`` is the enabled model or owns it as a
  submodule (a multimodal model around an enabled language model). A PEFT wrapper's or a
  pipeline's ``generate`` ends in the wrapped model's ``GenerationMixin.generate``, whose
  ``self`` is the enabled model, so they count; another model's ``generate`` never does.

No fixed frame depth is assumed. The frames are only read, never kept: a frame referenced past
its call would keep its tensors alive. What identifies the ``generate`` call afterwards (a
prefill in chunks continues over several calls) is a weak reference to the generation config
that ``generate`` copies for each call (``_prepare_generation_config``): while it lives no
other call can have it, and once the call is over (or raised) it dies with the call.
"""

from __future__ import annotations

import os
import sys
import weakref
from dataclasses import dataclass
from typing import Any, Optional

import torch

__all__ = ["GenerateCall", "generate_call"]

_WIDTH = "input_ids_length"
_INPUTS = "inputs_tensor"
_KWARGS = "model_kwargs"
_CONFIG = "generation_config"
_STATE_ATTR = "_attn_transition"      # state.STATE_ATTR (not imported: state imports this module's user)
_STACK_LIMIT = 512                    # frames looked at, at most (a guard, far above any real stack)


@dataclass(frozen=True)
class GenerateCall:
    """What this model's ``generate`` was given, read from its frame.

    Attributes:
        marker: A weak reference to the call's own generation config (its identity), or None
            where it cannot be referenced weakly.
        width: The prompt's width (padding included), or None where ``generate`` holds none.
        mask: The ``(batch, width)`` 0/1 padding mask ``generate`` was given; None: every
            prompt token is real.
    """

    marker: Optional[weakref.ref]
    width: Optional[int]
    mask: Optional[torch.Tensor]

    def is_call(self, marker: Optional[weakref.ref]) -> bool:
        """Whether ``marker`` names this same ``generate`` call (a dead reference names none)."""
        if marker is None or self.marker is None:
            return False
        mine = self.marker()
        return mine is not None and marker() is mine


def _generation_paths() -> Optional[tuple[str, str]]:
    """(``generation/utils.py``, the ``generation`` package folder + separator), or None when
    transformers' generation code is not imported (then no call can come from ``generate``)."""
    module = sys.modules.get("transformers.generation.utils")
    path = getattr(module, "__file__", None)
    if path is None:
        return None
    return path, os.path.dirname(path) + os.sep


def _owns(owner: Any, state: Any) -> bool:
    """Whether the ``self`` of a ``generate`` frame is the model ``state`` is attached to, or
    holds it as a submodule."""
    if getattr(owner, "__dict__", {}).get(_STATE_ATTR) is state:
        return True
    if isinstance(owner, torch.nn.Module):
        return any(m.__dict__.get(_STATE_ATTR) is state for m in owner.modules())
    return False


def _weak(obj: Any) -> Optional[weakref.ref]:
    try:
        return weakref.ref(obj)
    except TypeError:
        return None


def _read(frame: Any) -> GenerateCall:
    local = frame.f_locals
    width = local.get(_WIDTH)
    width = width if isinstance(width, int) and width > 0 else None
    inputs = local.get(_INPUTS)
    if width is None and isinstance(inputs, torch.Tensor) and inputs.dim() == 3:
        width = int(inputs.shape[1]) or None           # a generation from inputs_embeds only
    kwargs = local.get(_KWARGS)
    mask = kwargs.get("attention_mask") if isinstance(kwargs, dict) else None
    if not (isinstance(mask, torch.Tensor) and mask.dim() == 2):
        mask = None
    return GenerateCall(_weak(local.get(_CONFIG)), width, mask)


def generate_call(state: Any) -> Optional[GenerateCall]:
    """The ``generate`` of the model ``state`` belongs to that made the forward call under way on
    this thread, or None: the call is not made by that model's ``generate`` (a call by hand, by
    another model's ``generate``, or by a processor, criterion or callback of a ``generate``)."""
    paths = _generation_paths()
    if paths is None:
        return None
    utils, package = paths
    frame = sys._getframe(1)
    for _ in range(_STACK_LIMIT):
        if frame is None:
            return None
        name = frame.f_code.co_filename
        if name == utils:
            while frame is not None and frame.f_code.co_filename == utils:
                if frame.f_code.co_name == "generate":
                    return _read(frame) if _owns(frame.f_locals.get("self"), state) else None
                frame = frame.f_back
            return None
        if name.startswith(package):
            return None                                # generate's machinery made this call
        frame = frame.f_back
    return None
