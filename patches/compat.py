"""Version-dependent workarounds, each computed once and each citing why it exists."""

from __future__ import annotations

import functools

# The per-call keywords: the switch (on / off / a config) and the whole prompt's width for a
# prefill fed in chunks. Both are read (and removed) by the decoder pre-hook in calls.py.
SWITCH_KWARG = "attn_transition"
LENGTH_KWARG = "attn_transition_prompt_length"
CALL_KWARGS = (SWITCH_KWARG, LENGTH_KWARG)


@functools.lru_cache(maxsize=None)
def allow_generate_switch() -> bool:
    """Let ``generate(..., attn_transition=...)`` through transformers' kwarg validation.

    ``GenerationMixin._validate_model_kwargs`` rejects any model kwarg that is not a
    parameter of ``forward`` nor a key of ``TransformersKwargs``; the second rule exists
    from transformers 4.57 (``generation/utils.py``; 4.56 and older accept signature
    parameters only, hence the floor). Registering the keys there is the only way to let
    the per-call keywords reach the decoder without rebinding ``generate`` or ``forward``:
    they then travel through the model's ``**kwargs`` like ``output_attentions`` does, and
    the decoder pre-hook removes them. Adding keys is harmless to other models (their
    attention functions ignore unknown kwargs). Returns whether the keys are accepted.
    """
    try:
        from transformers.utils import TransformersKwargs
    except ImportError:  # pragma: no cover - very old transformers
        return False
    keys = getattr(TransformersKwargs, "__optional_keys__", None)
    if keys is None:  # pragma: no cover
        return False
    missing = set(CALL_KWARGS) - set(keys)
    if missing:
        TransformersKwargs.__optional_keys__ = frozenset(keys | missing)
    return True
