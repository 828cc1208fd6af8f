"""What one forward call of an enabled model edits: read once per call, before the layers run.

A forward pre-hook on the model's decoder (the module that owns the layers) reads the
call's inputs once: the per-call switch and prompt length, the 2D padding mask, how many
tokens the cache already holds, and whether the call is made by this model's ``generate``
(:mod:`.generation`). From them it builds a :class:`CallGeometry` that every layer's attention
function then uses (each layer asks the schedule for its own edits, ``layer_plan``, from it); no layer has to rediscover the geometry from its 4D mask, and decoding
steps (one new token) cost no tensor work and no device sync.

Positions are absolute key positions of the sequence (cache included); a row's prompt
starts at its first real token (left padding). The schedule needs each row's whole prompt
width ``n``, and the rules are:

- ``attn_transition_prompt_length=<width>`` given (outside ``generate``): one int is the
  width of the prompt, left padding included (a row's ``n`` is the part of it from the row's
  first real token); a sequence of ints or a 1D integer tensor gives each row its own ``n``,
  counted from its first real token. Every call edits the prompt rows it holds exactly as the
  one-shot prefill does (each edited row needs only the keys before it, which the cache
  holds); rows past a row's prompt are never edited. So a one-shot call with a width smaller
  than its input is a prompt followed by continuation rows (a loglikelihood request: the
  context is edited, the continuation rows see it as a cached decoding step would). A chunk
  that continues a cache and ends past the prompt's width is an error.
- Inside this model's ``generate``: the width is ``generate``'s input (a declared width must be
  that one). The prefill, whole or in chunks (``prefill_chunk_size``), is edited like the
  one-shot prefill; decoding steps are never edited: with a cache they are left alone, with
  ``use_cache=False`` the prompt rows of each full forward are edited as in the prefill and
  the generated rows are not. A ``generate`` that continues a cache it was given edits its new
  prompt tokens when the width is declared (the cache was filled with that width), and
  otherwise edits nothing (a chat's next turn; warned once).
- Outside ``generate`` (a call by hand, or by another model's ``generate``: a scorer in a
  logits processor): a call with an empty cache is a whole prompt. A segment continuing a
  cached sequence without a declared width edits nothing, with a warning once per model that
  says what that means for a prompt fed in chunks.

A row's real tokens come from what every row of the call sees: the call's own 2D mask; else,
inside ``generate``, the 2D mask ``generate`` was given (static caches and compiled generate
pass the layers a prepared 4D mask, which on a sliding-window model shows each row only its
window); else the keys some row of a prepared 4D mask sees. Where that cannot say where a row
starts (cached keys beyond every row's window), a declared width is a ConfigError naming the
2D mask to pass, never an edit with a guessed ``n``.

Continuous batching (``generate_batch``) packs several requests into one row; an edited call
refuses it (:data:`~.compat.CONTINUOUS_BATCHING_REFUSAL`).

A schedule that is not ``continuous`` (:class:`~attn_transition.protocol.TransitionConfig`: its
edits need all their rows at once) edits only a call that holds each row's whole prompt from
position 0: a chunk of a prompt (``prefill_chunk_size``, chunks fed by hand with a declared
width) is a ConfigError naming the schedule.
"""

from __future__ import annotations

import os
import sys
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Union

import torch

from attn_transition.config import TransitionConfig, format_config, parse_config
from attn_transition.errors import ConfigError, UsageError
from attn_transition.kernel import Scratch, bool_mask
from attn_transition.keywords import LENGTH_KWARG, SWITCH_KWARG
from attn_transition.schedules import token_spans

from .compat import CONTINUOUS_BATCHING_REFUSAL
from .generation import GenerateCall, generate_call

__all__ = ["RowPrompt", "CallGeometry", "ChunkedPrefill", "read_call", "geometry_from_mask", "resolve_switch"]


@dataclass(frozen=True)
class RowPrompt:
    """One batch row of a call. Positions are absolute key positions.

    Attributes:
        first: Position of the row's first real token.
        real_end: End of the row's real tokens seen so far (this call included).
        n: The prompt width of the schedule (``layer_plan``'s ``n``), counted from ``first``;
            0 means "edit nothing".
    """

    first: int
    real_end: int
    n: int


@dataclass(frozen=True)
class CallGeometry:
    """The geometry of one forward call, shared by all its layers (each layer's edits are
    ``layer_plan(config, layer, num_layers, row.n)`` per row).

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

    Both references are weak, so the record is tied to the ``generate`` call that made it: once
    that call is over (also when it raised) the record is dead, and it can never match another
    call (a live object's identity is not reused).

    Attributes:
        generate: The ``generate`` call that started it (:attr:`.GenerateCall.marker`).
        cache: The cache the chunks fill.
        width: The prompt's width.
        next_offset: Where the next chunk starts.
    """

    generate: weakref.ref
    cache: weakref.ref
    width: int
    next_offset: int

    @property
    def alive(self) -> bool:
        """Whether the ``generate`` call and its cache still exist."""
        return self.generate() is not None and self.cache() is not None


class CallState(Protocol):
    """What planning a call reads of the model's state (:class:`~.state.TransitionState` is one):
    the settings in effect for this call, and this thread's prefill in chunks and ``generate``."""

    @property
    def config(self) -> TransitionConfig: ...

    @property
    def active(self) -> bool: ...

    chunked: Optional[ChunkedPrefill]

    @property
    def in_generate(self) -> bool: ...

    def generate_seen(self, marker: Optional[weakref.ref]) -> None: ...

    def warn_once(self, key: str, message: str, stacklevel: int = 2) -> None: ...


def resolve_switch(switch: Any, default: Optional[TransitionConfig], active: bool) -> Optional[TransitionConfig]:
    """The config a call runs with, from its ``attn_transition=`` value (library boundary check)."""
    if switch is None:
        return default if active else None
    if switch is False:
        return None
    if switch is True:
        return default
    if isinstance(switch, TransitionConfig):
        return switch
    if isinstance(switch, str):
        return None if switch.strip().lower() in ("none", "off", "stock") else parse_config(switch)
    raise ConfigError(f"{SWITCH_KWARG} must be True, False, None, a schedule config (ClassicConfig, SRAConfig or a "
                      f"registered one) or a config string like 'classic:alpha=1', got {switch!r} "
                      f"({type(switch).__name__})", field=SWITCH_KWARG)


def _check_length(length: Any, batch: int) -> Union[None, int, tuple[int, ...]]:
    """The declared width: None, one int (the prompt's width, left padding included) or one int
    per batch row (that row's prompt tokens, counted from its first real token)."""
    if length is None:
        return None
    if isinstance(length, torch.Tensor):
        if length.dim() == 0:
            length = int(length.item())
        elif length.dim() == 1 and not length.is_floating_point() and length.dtype != torch.bool:
            length = length.tolist()                   # one sync, only where a width is declared
        else:
            raise ConfigError(f"{LENGTH_KWARG} as a tensor must be an integer scalar or a 1D integer tensor of "
                              f"{batch} per-row widths, got shape {tuple(length.shape)} {length.dtype}",
                              field=LENGTH_KWARG)
    if isinstance(length, (list, tuple)):
        if len(length) != batch or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0
                                            for w in length):
            raise ConfigError(f"{LENGTH_KWARG} as a sequence must hold one int >= 0 per batch row ({batch} rows: "
                              f"each row's prompt tokens from its first real token), got {list(length)!r}",
                              field=LENGTH_KWARG)
        return tuple(length)
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigError(f"{LENGTH_KWARG} must be an int >= 1 (the width of the whole prompt) or one int per "
                          f"batch row, got {length!r}", field=LENGTH_KWARG)
    return length


def _inputs(args: tuple, kwargs: dict, q: int) -> tuple[int, Any, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Tokens already cached, the cache, the call's own 2D padding mask (batch, offset + q) if it
    has one, and otherwise its prepared 4D mask (the ``full_attention`` one of a per-layer-type dict
    where there is one)."""
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if isinstance(mask, dict):                     # prepared per layer type (e.g. Gemma 3 under generate)
        mask = mask.get("full_attention", next(iter(mask.values()), None))
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return int(mask.shape[1]) - q, cache, mask, None   # generate passes the mask of the whole sequence so far
    offset = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
    prepared = mask if isinstance(mask, torch.Tensor) and mask.dim() == 4 else None
    return offset, cache, None, prepared


def _real_from_prepared(prepared: torch.Tensor, offset: int, q: int) -> torch.Tensor:
    """The (batch, offset + q) real-token mask read from a prepared 4D mask, from what the rows
    see together: a padding key is masked for every row, a real one is seen by its own row at
    least. With cached keys a sliding window can hide real keys from every row of the call; where
    that leaves a row's start unknown this is a ConfigError naming the 2D mask to pass."""
    total = offset + q
    fix = (f"pass the 2D (batch, {total}) padding mask as attention_mask (or leave "
           f"{LENGTH_KWARG} out: the call is then not edited)")
    if prepared.shape[-1] < total:
        raise ConfigError(f"attention_mask: a prepared 4D mask over {prepared.shape[-1]} keys on a call continuing "
                          f"{offset} cached tokens does not say where each row's real tokens start; {fix}",
                          field="attention_mask")
    allowed = bool_mask(prepared[:, 0, :, :total])                             # (batch, q, total)
    seen = allowed.any(1)                                                      # (batch, total)
    if offset == 0:
        return seen
    start = seen.int().argmax(-1)                                              # (batch,)
    first_row, last_row = allowed[:, 0].int().argmax(-1), allowed[:, -1].int().argmax(-1)   # (batch,)
    # A row's start is known where the first key is seen, or where the first and the last query
    # rows start at the same key (no window cuts between them: the cut is the padding).
    known = (start == 0) | ((first_row == last_row) & (q > 1) & seen.any(-1))
    if not bool(known.all()):
        raise ConfigError(f"attention_mask: a prepared 4D mask on a call continuing {offset} cached tokens does not "
                          f"say where each row's real tokens start (a sliding window hides the first keys); {fix}",
                          field="attention_mask")
    return seen


def _real_mask(inside: Optional[GenerateCall], mask2d: Optional[torch.Tensor], prepared: Optional[torch.Tensor],
               batch: int, offset: int, q: int) -> Optional[torch.Tensor]:
    """The (batch, offset + q) real-token mask of the call (None: every token is real): its own
    2D mask; else, inside ``generate``, the 2D mask ``generate`` was given (the tokens generated
    after the prompt are real); else what its prepared 4D mask shows every row."""
    if mask2d is not None:
        return mask2d
    total = offset + q
    if inside is not None and inside.width is not None:
        given = inside.mask                                                    # (batch, width) or None
        if given is None:
            return None
        if given.shape[0] == batch and given.shape[1] == inside.width:
            if total <= inside.width:
                return given[:, :total]
            return torch.cat([given, given.new_ones(batch, total - inside.width)], dim=1)   # (batch, total)
    if prepared is not None:
        return _real_from_prepared(prepared, offset, q)
    return None


_LIBRARY_DIRS: tuple[str, ...] = ()


def _stacklevel() -> int:
    """``warn_once``'s stacklevel that names the first frame outside this library, torch,
    transformers and the wrappers around them (1 is the caller of this function)."""
    global _LIBRARY_DIRS
    if not _LIBRARY_DIRS:
        names = ("torch", "transformers", "peft", "accelerate", "attn_transition")
        dirs = [os.path.dirname(os.path.abspath(__file__))]
        dirs += [os.path.dirname(getattr(sys.modules[n], "__file__", None) or "") for n in names if n in sys.modules]
        _LIBRARY_DIRS = tuple(d + os.sep for d in dirs if d)
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level


WHOLE = -1   # the call is one whole prompt: a row's n is its own real tokens (right padding included)
Width = Union[None, int, tuple[int, ...]]


def _chunk(call: GenerateCall, cache: Any, width: int, next_offset: int) -> Optional[ChunkedPrefill]:
    """The record of a prefill in chunks that goes on at ``next_offset`` (None: it is complete)."""
    if next_offset >= width or cache is None or call.marker is None:
        return None
    try:
        cache_ref = weakref.ref(cache)
    except TypeError:
        return None
    return ChunkedPrefill(call.marker, cache_ref, width, next_offset)


def _in_generate(state: CallState, call: GenerateCall, declared: Width, offset: int, q: int, cache: Any) -> Width:
    """The width of a call made by this model's ``generate``, or None when it edits nothing."""
    width = call.width
    if width is None:
        if declared is None:
            state.warn_once("generate-width", f"attn_transition: generate holds no prompt width here; the call is "
                            f"not edited (pass {LENGTH_KWARG}=<width of the prompt>)", stacklevel=_stacklevel())
        return declared
    if isinstance(declared, int) and declared != width:
        raise ConfigError(f"{LENGTH_KWARG}={declared} is not the width of the input generate was given "
                          f"({width}); pass {width} or leave it out (generate's own width is used)",
                          field=LENGTH_KWARG)
    chunked = state.chunked
    if offset == 0:                                # the prefill's first (or only) call, or a no-cache step
        state.chunked = _chunk(call, cache, width, q)
        return width
    if offset >= width:                            # a decoding step with a cache
        state.chunked = None
        return None
    if chunked is not None and call.is_call(chunked.generate) and chunked.next_offset == offset \
            and chunked.cache() is cache:
        state.chunked = _chunk(call, cache, width, offset + q)
        return width                               # the next chunk of the prompt
    state.chunked = None
    if declared is not None:
        # generate continues a cache filled with the same declared width (chunks fed by hand, then
        # generate): the remaining prompt rows are edited as the one-shot prefill edits them.
        state.chunked = _chunk(call, cache, width, offset + q)
        return width
    state.warn_once("continuation",
                    f"attn_transition: generate continues {offset} cached tokens it was given; the "
                    f"{width - offset} new prompt tokens are not edited (the schedule's positions are "
                    f"relative to one whole prompt, and the cached part was computed before; if it was "
                    f"prefilled with {LENGTH_KWARG}={width}, pass it to generate too)", stacklevel=_stacklevel())
    return None


def _by_hand(state: CallState, declared: Width, offset: int, q: int) -> Width:
    """The width of a call not made by this model's ``generate``, or None when it edits nothing."""
    if isinstance(declared, int):
        if 0 < offset < declared < offset + q:
            raise ConfigError(f"{LENGTH_KWARG}={declared} ends inside this call (cached {offset} + {q} new "
                              f"tokens): a chunk of a prompt must end at or before the prompt's width",
                              field=LENGTH_KWARG)
        return declared if offset < declared else None
    if declared is not None:
        return declared                            # per row: checked against each row's start
    if offset == 0:
        return WHOLE                               # a whole prompt: each row's own real tokens
    if q == 1:                                     # a decoding step fed by hand
        return None
    state.warn_once("continuation",
                    f"attn_transition: a {q}-token input continues {offset} cached tokens without "
                    f"{LENGTH_KWARG}; it is not edited. If the cached tokens were the first chunk of one "
                    f"longer prompt, that chunk was edited as a whole {offset}-token prompt and the result "
                    f"is neither stock nor the transition: pass {LENGTH_KWARG}=<width of the whole prompt> "
                    f"with every chunk (a chat's next turn needs nothing)", stacklevel=_stacklevel())
    return None


def _row_lengths(width: Width, spans: list[tuple[int, int, bool]], offset: int, q: int) -> list[int]:
    """``n`` per batch row (0: edit nothing): its real tokens (``WHOLE``), the part of the prompt's
    width from its first real token (one int), or its own declared width (one per row)."""
    if width == WHOLE:
        return [count for _, count, _ in spans]
    if isinstance(width, int):
        return [max(width - first, 0) for first, _, _ in spans]
    for b, ((first, _, _), n) in enumerate(zip(spans, width)):
        if 0 < offset < first + n < offset + q:
            raise ConfigError(f"{LENGTH_KWARG}[{b}]={n} ends inside this call (row {b}: cached {offset} + {q} new "
                              f"tokens, prompt from position {first}): a chunk of a prompt must end at or before "
                              f"the prompt's width", field=LENGTH_KWARG)
    return list(width)


def _refuse_packed_batching(kwargs: dict) -> None:
    """Continuous batching packs several requests into one sequence (``cu_seq_lens_q``); the
    schedule's positions belong to one prompt per row, so an edited call refuses it."""
    if "cu_seq_lens_q" in kwargs:
        raise UsageError(CONTINUOUS_BATCHING_REFUSAL)


def _refuse_chunks(config: TransitionConfig, offset: int, q: int, lengths: list[int]) -> None:
    """A schedule that is not continuous edits only whole prompts: ConfigError for a call that holds
    part of a row's prompt (it continues a cache, or the prompt goes on past this call)."""
    if config.continuous:
        return
    if offset > 0 or any(n > q for n in lengths):
        raise ConfigError(f"schedule {config.schedule!r} ({format_config(config)}) is not continuous (each edit needs "
                          f"all its rows at once), and this call holds part of a prompt (cached {offset} + {q} new "
                          f"tokens); give the prompt in one call (no prefill_chunk_size, no chunks by hand)",
                          field=SWITCH_KWARG)


def read_call(state: CallState, args: tuple, kwargs: dict) -> CallGeometry:
    """Build the :class:`CallGeometry` of one decoder call and pop the library's own kwargs."""
    switch = kwargs.pop(SWITCH_KWARG, None)
    declared = kwargs.pop(LENGTH_KWARG, None)
    config = resolve_switch(switch, state.config, state.active)
    x = kwargs.get("input_ids", args[0] if args else None)
    if x is None:
        x = kwargs.get("inputs_embeds")
    if x is None:                                  # an input this hook does not know: nothing edited
        return CallGeometry(None, 0, 0, 0, ())
    batch, q = int(x.shape[0]), int(x.shape[1])
    if config is not None:
        _refuse_packed_batching(kwargs)
    widths = _check_length(declared, batch)
    # A stock call, or a decoding step of the generate under way: no tensor work, no look at the
    # stack. One token can still be the end of a prompt: fed by hand with a declared width, in
    # chunks by generate (transformers 4.57's generate prefills the last prompt token alone), or
    # the first call of a generate that continues a cache it was given.
    if config is None or (q <= 1 and widths is None and state.chunked is None and state.in_generate):
        return CallGeometry(None, batch, q, 0, ())
    inside = generate_call(state)
    state.generate_seen(None if inside is None else inside.marker)
    if inside is None and q <= 1 and widths is None:
        return CallGeometry(None, batch, q, 0, ())    # a decoding step fed by hand
    offset, cache, mask2d, prepared = _inputs(args, kwargs, q)
    width = (_in_generate(state, inside, widths, offset, q, cache) if inside is not None
             else _by_hand(state, widths, offset, q))
    if width is None:
        return CallGeometry(None, batch, q, offset, ())
    real = _real_mask(inside, mask2d, prepared, batch, offset, q)             # (batch, offset + q) or None
    spans = token_spans(real) if real is not None else [(0, offset + q, True)] * batch
    lengths = _row_lengths(width, spans, offset, q)
    _refuse_chunks(config, offset, q, [first + n for (first, _, _), n in zip(spans, lengths) if n > 0])
    if inside is not None and isinstance(widths, tuple) and widths != tuple(lengths):
        b = next(i for i, (w, n) in enumerate(zip(widths, lengths)) if w != n)
        raise ConfigError(f"{LENGTH_KWARG}[{b}]={widths[b]} is not row {b}'s prompt in the input generate was given "
                          f"({lengths[b]} tokens from its first real one); leave it out (generate's own width is "
                          f"used)", field=LENGTH_KWARG)
    rows = []
    for (first, count, contiguous), n in zip(spans, lengths):
        if not contiguous:
            state.warn_once("packed", "attn_transition: a batch row's real tokens are not contiguous (packed "
                            "sequences?); that row is left unedited", stacklevel=_stacklevel())
            n = 0
        rows.append(RowPrompt(first, first + count, n))
    return CallGeometry(config, batch, q, offset, tuple(rows))


def geometry_from_mask(config: TransitionConfig, attention_mask: Optional[torch.Tensor], batch: int,
                       n: int) -> CallGeometry:
    """A one-shot prefill read from a layer's own 4D mask (for a layer called without its decoder)."""
    if attention_mask is None:
        return CallGeometry(config, batch, n, 0, (RowPrompt(0, n, n),) * batch)
    diag = bool_mask(attention_mask[:, 0]).diagonal(dim1=-2, dim2=-1).expand(batch, n)                 # (batch, n) real tokens
    rows = []
    for first, count, contiguous in token_spans(diag):
        rows.append(RowPrompt(first, first + count, count if contiguous else 0))
    return CallGeometry(config, batch, n, 0, tuple(rows))
