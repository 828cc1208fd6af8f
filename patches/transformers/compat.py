"""Version-dependent workarounds, each computed once and each citing why it exists."""

from __future__ import annotations

import functools
from typing import Any

from attn_transition.errors import UsageError
from attn_transition.keywords import CALL_KWARGS


# transformers' continuous batching (``generate_batch``, ``init_continuous_batching``,
# ``continuous_batching_context_manager``; ``generation/continuous_batching/continuous_api.py``)
# packs several requests into one row of one forward call (``cu_seq_lens_q``), which the schedule,
# whose positions belong to one prompt per row, cannot address. From 5.x
# ``ContinuousBatchingManager.switch_to_cb_friendly_attn`` rejects any implementation but sdpa,
# paged eager and flash before the first forward, with the advice to switch to sdpa (which
# silently drops the edit); in 4.57 the forward reaches the decoder. Either way it is refused
# with this message: by :func:`refuse_continuous_batching` before it runs, and by the decoder's
# pre-hook (calls.py) for a forward that arrives anyway.
CONTINUOUS_BATCHING_REFUSAL = (
    "attn_transition: continuous batching (generate_batch, init_continuous_batching) packs several "
    "requests into one sequence, which the edit cannot address; use generate on a padded batch, or "
    "at.disable(model) first for stock continuous batching")
CONTINUOUS_BATCHING_METHODS = ("generate_batch", "init_continuous_batching", "continuous_batching_context_manager")


class _Refused:
    """A model attribute standing in for a continuous batching method while enabled: calling it
    raises :class:`UsageError` (picklable and copyable with the model; it holds no reference)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UsageError(CONTINUOUS_BATCHING_REFUSAL)

    def __repr__(self) -> str:
        return f"<{self.name} refused while attn_transition is enabled>"


def refuse_continuous_batching(model: Any) -> None:
    """Make the model's continuous batching methods raise the library's refusal (instance
    attributes, removed by :func:`allow_continuous_batching`; the class is not touched)."""
    for name in CONTINUOUS_BATCHING_METHODS:
        if callable(getattr(type(model), name, None)):
            model.__dict__[name] = _Refused(name)


def allow_continuous_batching(model: Any) -> None:
    """Undo :func:`refuse_continuous_batching`."""
    for name in CONTINUOUS_BATCHING_METHODS:
        if isinstance(model.__dict__.get(name), _Refused):
            del model.__dict__[name]


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
