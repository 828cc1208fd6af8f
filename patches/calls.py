"""What one forward call of an enabled model edits: read once per call, before the layers run.

A forward pre-hook on the model's decoder (the module that owns the layers) reads the
call's inputs once: the per-call switch and prompt length, the 2D padding mask, how many
tokens the cache already holds, and where the call sits in ``generate`` (:mod:`.generation`).
From them it builds a :class:`CallPlan` that every layer's attention function then uses; no
layer has to rediscover the geometry from its 4D mask, and decoding steps (one new token)
cost no tensor work and no device sync.

Positions are absolute key positions of the sequence (cache included); a row's prompt
starts at its first real token (left padding). The schedule needs each row's whole prompt
width ``n``, and the rules are:

- ``attn_transition_prompt_length=<width>`` given: every call edits the rows of the prompt
  ``[0, width)`` it holds, exactly as the one-shot prefill does (each edited row needs only the
  keys before it, which the cache holds). A width smaller than a one-shot input, or not the
  width ``generate`` was given, is an error.
- Inside ``generate``: the width is ``generate``'s input. The prefill, whole or in chunks
  (``prefill_chunk_size``), is edited like the one-shot prefill; decoding steps are never
  edited: with a cache they are left alone, with ``use_cache=False`` the prompt rows of each
  full forward are edited as in the prefill and the generated rows are not. A ``generate`` that
  continues a cache it was given (a chat's next turn) edits nothing (warned once).
- Outside ``generate``: a call with an empty cache is a whole prompt. A segment continuing a
  cached sequence without a declared width edits nothing, with a warning once per model that
  says what that means for a prompt fed in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from attn_transition.config import ClassicConfig, SRAConfig, TransitionConfig, parse_config
from attn_transition.errors import ConfigError
from attn_transition.kernel import Scratch, bool_mask

from .compat import LENGTH_KWARG, SWITCH_KWARG
from .generation import generate_prompt

__all__ = ["RowPrompt", "CallPlan", "ChunkedPrefill", "plan_call", "plan_from_mask", "resolve_switch"]


@dataclass(frozen=True)
class RowPrompt:
    """One batch row of a call. Positions are absolute key positions.

    Attributes:
        first: Position of the row's first real token.
        real_end: End of the row's real tokens seen so far (this call included).
        length: ``n`` of the schedule, counted from ``first``; 0 means "edit nothing".
    """

    first: int
    real_end: int
    length: int


@dataclass(frozen=True)
class CallPlan:
    """The geometry of one forward call, shared by all its layers.

    Attributes:
        config: The schedule this call applies, or None (nothing edited).
        batch: Batch size of the call.
        q_len: Number of new tokens (query rows) in the call.
        offset: Absolute position of the call's first query row (tokens already cached).
        rows: One :class:`RowPrompt` per batch row.
    """

    config: Optional[TransitionConfig]
    batch: int
    q_len: int
    offset: int
    rows: tuple[RowPrompt, ...]
    scratch: Scratch = field(default_factory=Scratch, compare=False, repr=False)


@dataclass(frozen=True)
class ChunkedPrefill:
    """A prefill in chunks under way inside ``generate``: the next chunk continues ``cache`` at
    ``next_offset`` within a prompt of ``width``.

    Attributes:
        generate_id: Identity of the ``generate`` frame that started it.
        cache_id: Identity of the cache the chunks fill.
        width: The prompt's width.
        next_offset: Where the next chunk starts.
    """

    generate_id: int
    cache_id: int
    width: int
    next_offset: int


def resolve_switch(switch: Any, default: Optional[TransitionConfig], active: bool) -> Optional[TransitionConfig]:
    """The config a call runs with, from its ``attn_transition=`` value (library boundary check)."""
    if switch is None:
        return default if active else None
    if switch is False:
        return None
    if switch is True:
        return default
    if isinstance(switch, (ClassicConfig, SRAConfig)):
        return switch
    if isinstance(switch, str):
        return None if switch.strip().lower() in ("none", "off", "stock") else parse_config(switch)
    raise ConfigError(f"{SWITCH_KWARG} must be True, False, None, a ClassicConfig/SRAConfig or a config "
                      f"string like 'classic:alpha=1', got {switch!r} ({type(switch).__name__})")


def _check_length(length: Any) -> Optional[int]:
    if length is None:
        return None
    if isinstance(length, torch.Tensor) and length.numel() == 1:
        length = int(length.item())
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigError(f"{LENGTH_KWARG} must be an int >= 1 (the width of the whole prompt), got {length!r}")
    return length


def _spans(mask2d: torch.Tensor) -> list[tuple[int, int, bool]]:
    """(first real position, real count, contiguous) per row of a (batch, width) 0/1 mask; one sync."""
    real = mask2d.to(torch.bool)                                               # (batch, width)
    width = real.shape[1]
    count = real.sum(-1)                                                       # (batch,)
    first = torch.where(count > 0, real.int().argmax(-1), 0)                   # (batch,)
    last = width - 1 - real.flip(-1).int().argmax(-1)                          # (batch,)
    contiguous = (count == 0) | (last - first + 1 == count)
    rows = torch.stack([first, count, contiguous.long()]).tolist()            # (3, batch) -> lists
    return [(f, c, bool(k)) for f, c, k in zip(*rows)]


def _offset_and_mask(args: tuple, kwargs: dict, q: int) -> tuple[int, Optional[torch.Tensor], Any]:
    """Tokens already cached, the (batch, offset + q) real-token mask (None: all real), the cache."""
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if isinstance(mask, dict):                     # prepared per layer type (e.g. Gemma 3 under generate)
        mask = mask.get("full_attention", next(iter(mask.values()), None))
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return int(mask.shape[1]) - q, mask, cache  # generate passes the mask of the whole sequence so far
    offset = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
    if isinstance(mask, torch.Tensor) and mask.dim() == 4:
        # A prepared 4D mask (static caches, compiled generate): the last query row sees every
        # real key before it (padding masks keys, not queries).
        return offset, bool_mask(mask[:, 0, -1, :offset + q]), cache                 # (batch, offset + q)
    return offset, None, cache                     # no mask: every token is real


WHOLE = -1   # the call is one whole prompt: a row's n is its own real tokens (right padding included)


def _prompt_width(state: Any, length: Optional[int], offset: int, q: int, cache: Any) -> Optional[int]:
    """The width of the prompt this call's rows belong to (a row's n counts from its first real
    token to it), ``WHOLE``, or None when the call edits nothing."""
    inside = generate_prompt(depth=4)
    if inside is not None:
        generate_id, width = inside
        if length is not None and length != width:
            raise ConfigError(f"{LENGTH_KWARG}={length} is not the width of the input generate was given "
                              f"({width}); pass {width} or leave it out (generate's own width is used)",
                              field=LENGTH_KWARG)
        chunked, cache_id = state.chunked, id(cache) if cache is not None else None
        if offset == 0:                            # the prefill's first (or only) call, or a no-cache step
            state.chunked = (ChunkedPrefill(generate_id, cache_id, width, q)
                             if cache_id is not None and q < width else None)
            return width
        if offset >= width:                        # a decoding step with a cache
            state.chunked = None
            return None
        if (chunked is not None and (chunked.generate_id, chunked.cache_id, chunked.next_offset)
                == (generate_id, cache_id, offset)):
            state.chunked = ChunkedPrefill(generate_id, cache_id, width, offset + q) if offset + q < width else None
            return width                            # the next chunk of the prompt
        state.chunked = None
        if q == 1:                                 # a decoding step after all
            return None
        state.warn_once("continuation",
                        f"attn_transition: generate continues {offset} cached tokens it was given; the "
                        f"{width - offset} new prompt tokens are not edited (the schedule's positions are "
                        f"relative to one whole prompt, and the cached part was computed before)", stacklevel=6)
        return None
    if length is not None:
        if offset < length < offset + q and offset == 0:
            raise ConfigError(f"{LENGTH_KWARG}={length} is smaller than this call's {q} input tokens; it is "
                              f"the width of the whole prompt (>= {q})", field=LENGTH_KWARG)
        if offset < length < offset + q:
            raise ConfigError(f"{LENGTH_KWARG}={length} ends inside this call (cached {offset} + {q} new "
                              f"tokens): a chunk of a prompt must end at or before the prompt's width",
                              field=LENGTH_KWARG)
        return length if offset < length else None
    if offset == 0:
        return WHOLE                               # a whole prompt: each row's own real tokens
    if q == 1:                                     # a decoding step fed by hand
        return None
    state.warn_once("continuation",
                    f"attn_transition: a {q}-token input continues {offset} cached tokens without "
                    f"{LENGTH_KWARG}; it is not edited. If the cached tokens were the first chunk of one "
                    f"longer prompt, that chunk was edited as a whole {offset}-token prompt and the result "
                    f"is neither stock nor the transition: pass {LENGTH_KWARG}=<width of the whole prompt> "
                    f"with every chunk (a chat's next turn needs nothing)", stacklevel=6)
    return None


def plan_call(state: Any, args: tuple, kwargs: dict) -> CallPlan:
    """Build the :class:`CallPlan` of one decoder call and pop the library's own kwargs."""
    switch = kwargs.pop(SWITCH_KWARG, None)
    length = _check_length(kwargs.pop(LENGTH_KWARG, None))
    config = resolve_switch(switch, state.config, state.active)
    x = kwargs.get("input_ids", args[0] if args else None)
    if x is None:
        x = kwargs.get("inputs_embeds")
    if x is None:                                  # an input this hook does not know: nothing edited
        return CallPlan(None, 0, 0, 0, ())
    batch, q = int(x.shape[0]), int(x.shape[1])
    # A stock call, or a decoding step: no tensor work. One token can still be the end of a
    # prompt fed in chunks (transformers 4.57's generate prefills the last prompt token alone).
    if config is None or (q <= 1 and state.chunked is None):
        return CallPlan(None, batch, q, 0, ())
    offset, mask, cache = _offset_and_mask(args, kwargs, q)
    width = _prompt_width(state, length, offset, q, cache)
    if width is None:
        return CallPlan(None, batch, q, offset, ())
    spans = _spans(mask) if mask is not None else [(0, offset + q, True)] * batch
    rows = []
    for first, count, contiguous in spans:
        if not contiguous:
            state.warn_once("packed", "attn_transition: a batch row's real tokens are not contiguous (packed "
                            "sequences?); that row is left unedited", stacklevel=4)
            rows.append(RowPrompt(first, first + count, 0))
            continue
        rows.append(RowPrompt(first, first + count, count if width == WHOLE else max(width - first, 0)))
    return CallPlan(config, batch, q, offset, tuple(rows))


def plan_from_mask(config: TransitionConfig, attention_mask: Optional[torch.Tensor], batch: int,
                   n: int) -> CallPlan:
    """A one-shot prefill read from a layer's own 4D mask (for a layer called without its decoder)."""
    if attention_mask is None:
        return CallPlan(config, batch, n, 0, (RowPrompt(0, n, n),) * batch)
    diag = bool_mask(attention_mask[:, 0]).diagonal(dim1=-2, dim2=-1).expand(batch, n)                 # (batch, n) real tokens
    rows = []
    for first, count, contiguous in _spans(diag):
        rows.append(RowPrompt(first, first + count, count if contiguous else 0))
    return CallPlan(config, batch, n, 0, tuple(rows))
