"""The name of transformers' KV-cache argument, for tests that drive a cache by hand.

transformers 5.x renamed ``past_key_values`` to ``cache`` (in inputs and in model outputs);
the old name still works on 5.24 but warns, and its removal is announced for 5.40. The
lowest supported release, 4.57, knows only ``past_key_values``. These helpers pick the
name the installed release declares, so the tests run on both without touching the
deprecated name where the new one exists.
"""

from __future__ import annotations

import inspect
from typing import Any

NEW, OLD = "cache", "past_key_values"


def cache_kwarg(model: Any) -> str:
    """The keyword ``model.forward`` takes its KV cache under: ``"cache"`` or ``"past_key_values"``."""
    params = inspect.signature(model.forward).parameters
    if NEW in params:
        return NEW
    if OLD in params:
        return OLD
    raise TypeError(f"{type(model).__name__}.forward takes neither {NEW!r} nor {OLD!r}: {list(params)}")


def cache_of(output: Any) -> Any:
    """The KV cache a model (or ``generate(..., return_dict_in_generate=True)``) returned.

    Read by key, not by attribute: on 5.x the ``past_key_values`` attribute is a deprecated alias.
    """
    for name in (NEW, OLD):
        if name in output.keys():
            return output[name]
    return None
