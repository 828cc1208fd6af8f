"""What one forward call of an enabled model edits: read once per call, before the layers run.

A forward pre-hook on the model's decoder (the module that owns the layers) reads the
call's inputs once: the per-call switch and prompt length, the 2D padding mask, how many
tokens the cache already holds. From them it builds a :class:`CallPlan` that every layer's
attention function then uses; no layer has to rediscover the geometry from its 4D mask,
and decoding steps (one new token) cost no tensor work and no device sync.

Positions are absolute key positions of the sequence (cache included); a row's prompt
starts at its first real token (left padding). The schedule needs each row's whole prompt
length ``n``:

- a one-shot prefill (empty cache) knows it: the real tokens of the call;
- a prefill in chunks (``generate(..., prefill_chunk_size=...)``, or a prompt fed piece by
  piece with a cache) knows it only if the caller says so:
  ``attn_transition_prompt_length=<input width>``; every chunk is then edited exactly as
  the one-shot prefill edits those rows (each edited row needs only the keys before it,
  which the cache holds);
- a segment that continues a cached sequence without a declared prompt length is left
  unedited, with a warning once per model (the schedule's positions are relative to a
  prompt it cannot see);
- decoding steps (one query token) are never edited, as in the reference.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional

import torch

from attn_transition.config import ClassicConfig, SRAConfig, TransitionConfig, parse_config
from attn_transition.errors import ConfigError

from .compat import LENGTH_KWARG, SWITCH_KWARG

__all__ = ["RowPrompt", "CallPlan", "plan_call", "plan_from_mask", "resolve_switch", "bool_mask"]


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


def bool_mask(mask: torch.Tensor) -> torch.Tensor:
    """Boolean view of a transformers mask (bool, or additive float with dtype-min)."""
    return mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2


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
    if config is None or q <= 1:                   # stock call, or a decoding step: no tensor work
        return CallPlan(None, batch, q, 0, ())
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if isinstance(mask, dict):                     # prepared per layer type (e.g. Gemma 3 under generate)
        mask = mask.get("full_attention", next(iter(mask.values()), None))
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        offset = int(mask.shape[1]) - q           # generate passes the mask of the whole sequence so far
    else:
        offset = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
        if isinstance(mask, torch.Tensor) and mask.dim() == 4:
            # A prepared 4D mask (static caches, compiled generate): the last query row sees every
            # real key before it (padding masks keys, not queries).
            mask = bool_mask(mask[:, 0, -1, :offset + q])                          # (batch, offset + q)
        else:
            mask = None                            # no mask: every token is real
    if offset > 0 and (length is None or offset >= length):
        if length is None and not state.warned_continuation:
            state.warned_continuation = True
            warnings.warn(
                f"attn_transition: a {q}-token input continues {offset} cached tokens; it is left unedited. "
                f"For a prompt prefilled in chunks (prefill_chunk_size=...), pass "
                f"{LENGTH_KWARG}=<width of the whole prompt> so each chunk is edited like the one-shot "
                f"prefill", stacklevel=4)
        return CallPlan(None, batch, q, offset, ())
    spans = _spans(mask) if mask is not None else [(0, offset + q, True)] * batch
    rows = []
    for first, count, contiguous in spans:
        if not contiguous:
            if not state.warned_packed:
                state.warned_packed = True
                warnings.warn("attn_transition: a batch row's real tokens are not contiguous (packed "
                              "sequences?); that row is left unedited", stacklevel=4)
            rows.append(RowPrompt(first, first + count, 0))
            continue
        n = count if length is None else max(length - first, 0)
        rows.append(RowPrompt(first, first + count, n))
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
