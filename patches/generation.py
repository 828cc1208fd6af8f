"""Where a forward call sits in transformers' ``generate``: the prompt's width, read once per call.

The schedule edits the rows of a *prompt* and needs its whole width ``n``. Inside
``generate`` every forward call is one of: the prefill (one call, or one call per chunk with
``prefill_chunk_size``), or a decoding step (one new token with a cache; the whole sequence
again with ``use_cache=False``; a few candidate tokens under assisted decoding). The prompt's
width is what ``generate`` was given, and ``generate`` holds it in a local variable,
``input_ids_length`` (``generation/utils.py``, ``GenerationMixin.generate``; present from
transformers 4.57 to 5.24 at least, checked by the floor suite). This module reads it from the
innermost ``generate`` frame on the caller's stack.

Why the stack: ``generate`` passes nothing per call that tells a chunk of a prompt from a
whole prompt, nor a ``use_cache=False`` decoding step from a fresh prompt, and wrapping or
rebinding ``generate`` is what this library does not do. The frame is only read, never kept:
a frame referenced past its call would keep its tensors alive.
"""

from __future__ import annotations

import sys
from typing import Optional

__all__ = ["generate_prompt"]

_LOCAL = "input_ids_length"


def _generation_file() -> Optional[str]:
    module = sys.modules.get("transformers.generation.utils")
    return getattr(module, "__file__", None)


def generate_prompt(depth: int = 2, limit: int = 64) -> Optional[tuple[int, int]]:
    """``(frame id, prompt width)`` of the innermost ``GenerationMixin.generate`` call on this
    thread's stack, or None outside ``generate`` (or where the width is not known: a
    generation from ``inputs_embeds`` only). ``depth`` skips this function's callers inside the
    library; at most ``limit`` frames are looked at."""
    path = _generation_file()
    if path is None:
        return None
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return None
    for _ in range(limit):
        if frame is None:
            return None
        code = frame.f_code
        if code.co_name == "generate" and code.co_filename == path:
            width = frame.f_locals.get(_LOCAL)
            if isinstance(width, int) and width > 0:
                return id(frame), width
            return None
        frame = frame.f_back
    return None
