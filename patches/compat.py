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
    """Let ``generate(..., attn_transition=False)`` through transformers' kwarg validation.

    ``GenerationMixin._validate_model_kwargs`` rejects any model kwarg that is not a
    parameter of ``forward`` nor a key of ``TransformersKwargs`` (checked against
    transformers 5.x, ``generation/utils.py``). Registering
    the key there is the only way to let a per-call switch reach the attention
    function without rebinding ``generate`` or ``forward``: the kwarg then travels
    through the model's ``**kwargs`` like ``output_attentions`` does. Adding a key is
    harmless to other models (they ignore unknown attention kwargs).
    Returns whether the key is accepted.
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
