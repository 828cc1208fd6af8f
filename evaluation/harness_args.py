"""What the lm-evaluation-harness models ``attn-transition`` (:mod:`.harness_model`) and
``attn-transition-vllm`` (:mod:`.harness_vllm`) share, read without importing lm_eval: their own
model arguments (``transition=``, checked by :func:`check_model_args`) and the meaning of a
loglikelihood request, which is the same on both engines.

A loglikelihood request ``(context, continuation)`` is scored with the *context* as the edited
prompt: the rows of its tokens are edited with ``n = len(context)`` (what a ``generate_until`` of
the same task is given), and the continuation's rows are not edited, as generated tokens are
not. lm_eval's two models forward different tokens (HFLM drops the continuation's last token,
vLLM sends all of them as the prompt); :func:`scored_row` says what each forwards and how many
of those tokens are the context, and :class:`BatchRecorder` notes which requests each of their
loglikelihood batches holds, so the model call can pass each row's context width.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from dataclasses import dataclass, fields
from typing import Any, Iterator, Optional, Sequence

import attn_transition as at
from attn_transition.config import SCHEDULES, ClassicConfig, TransitionConfig, format_config, schedule_class
from attn_transition.errors import ConfigError, UsageError

__all__ = ["MODEL_NAME", "parse_transition", "stray_config_items", "check_model_args", "ScoredRow",
           "scored_row", "BatchRecorder", "check_rows", "warn_rolling"]

MODEL_NAME = "attn-transition"

_STOCK = ("none", "off", "stock", "false")


def _config_fields(transition: Any = None) -> frozenset[str]:
    """The field names of every schedule registered now, and of the one ``transition`` names (a
    config, or a spec whose schedule an installed package declares): a model_arg with one of these
    names is a piece of a transition value that lm_eval's comma splitting cut off."""
    classes = list(SCHEDULES.values())
    if isinstance(transition, TransitionConfig):
        classes.append(type(transition))
    elif isinstance(transition, str) and transition.strip().lower() not in _STOCK:
        with contextlib.suppress(ConfigError):          # a bad name is parse_transition's to report
            classes.append(schedule_class(transition.partition(":")[0]))
    return frozenset(f.name for cls in classes for f in fields(cls))


def parse_transition(value: Any) -> Optional[TransitionConfig]:
    """The config a ``transition=`` model argument names; None means the stock model.

    Accepts a config object, ``True`` (the default classic config), ``None`` / ``False`` /
    ``"none"`` (stock), or a config string whose items are separated by ``,`` or ``;``.
    """
    if isinstance(value, TransitionConfig):
        return value
    if value is None or value is False:
        return None
    if value is True:
        return ClassicConfig()
    if not isinstance(value, str):
        raise ConfigError(f"transition must be a config string like 'classic', 'sra', "
                          f"'classic:alpha=1,beta=0.5' or 'none' (or any registered schedule's spec), got {value!r}")
    text = value.strip()
    if text.lower() in _STOCK:
        return None
    try:
        return at.parse_config(text.replace(";", ","))
    except ConfigError as exc:
        raise ConfigError(f"transition={value!r}: {exc}") from None


def stray_config_items(kwargs: dict) -> list[str]:
    """The model arguments in ``kwargs`` named like a field (``beta``, ``threshold``...) of a registered
    schedule or of the one ``kwargs["transition"]`` names."""
    names = _config_fields(kwargs.get("transition"))
    return sorted(k for k in kwargs if k in names)


def check_model_args(kwargs: dict) -> None:
    """ConfigError (one line, naming ``transition`` and both fixes) if a model argument is an item
    of a ``transition=`` value that lm_eval's comma splitting of ``model_args`` cut off."""
    stray = stray_config_items(kwargs)
    if stray:
        raise ConfigError(
            f"model_args {', '.join(stray)} look like items of transition cut off at a comma; "
            f"quote the value (transition='classic:alpha=1,beta=0.5') or separate its items "
            f"with ';' (transition=classic:alpha=1;beta=0.5)", field="transition")


# -- loglikelihood requests: the context is the edited prompt ------------------------------------

@dataclass(frozen=True)
class ScoredRow:
    """One loglikelihood request as a model forwards it.

    Attributes:
        tokens: The token ids forwarded (one row of the batch, before padding).
        context: How many of them, from the first, are the context: the edited prompt's width.
    """

    tokens: tuple[int, ...]
    context: int


def scored_row(context: Sequence[int], continuation: Sequence[int], window: int,
               drop_last: bool) -> ScoredRow:
    """What lm_eval forwards for ``(context, continuation)`` and the context's width in it.

    lm_eval keeps the last ``window`` tokens of ``context + continuation`` (truncating the context
    on the left), and HFLM then drops the last one (``drop_last``: its logits predict nothing
    scored). ``window`` is ``max_length + 1`` for HFLM (``HFLM._loglikelihood_tokens`` in
    lm_eval/models/huggingface.py) and ``max_length - 1`` for vLLM (``VLLM._loglikelihood_tokens``
    in lm_eval/models/vllm_causallms.py). UsageError if no context token is left in the window.
    """
    whole = (list(context) + list(continuation))[-window:]
    width = len(whole) - len(continuation)
    if width < 1:
        raise UsageError(f"a loglikelihood continuation of {len(continuation)} tokens leaves no context "
                         f"token within the model's {window}-token window; raise max_length or shorten it")
    return ScoredRow(tuple(whole[:-1] if drop_last else whole), width)


def _bound(original: type, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The arguments of ``original(*args, **kwargs)`` by name, defaults included."""
    bound = inspect.signature(original).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _mixed_context_widths(requests: Sequence, group_fn: Any) -> bool:
    """True if two requests that lm_eval's one-token-continuation cache would answer with one
    forward (the same ``group_fn`` key: ``context + continuation[:-1]``) have contexts of
    different lengths, so their edited prompts differ."""
    widths: dict[tuple, int] = {}
    for request in requests:
        key = tuple(group_fn(request))
        if widths.setdefault(key, len(request[1])) != len(request[1]):
            return True
    return False


class BatchRecorder:
    """Notes the requests of each loglikelihood batch lm_eval's loop takes from its ``Collator``.

    lm_eval's ``_loglikelihood_tokens`` (both models) sorts its requests with a ``Collator``, takes
    batches from ``get_batched`` and makes one model call per batch. While :meth:`recording` is
    active, the module's ``Collator`` is a subclass whose batches are noted as they are handed out;
    :meth:`take` returns the noted batch once, for the model call it belongs to. Where HFLM's
    one-token-continuation cache would answer requests of different context lengths with one
    forward (``group_by="contexts"``), the subclass sorts without that cache: each is forwarded.
    """

    def __init__(self) -> None:
        self._batch: Optional[list[tuple[list[int], list[int]]]] = None

    @contextlib.contextmanager
    def recording(self, module: Any) -> Iterator[None]:
        """While active, ``module.Collator`` (lm_eval's, as ``module`` imported it) records batches."""
        original = module.Collator
        recorder = self

        class RecordingCollator(original):                     # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                named = _bound(original, args, kwargs)
                if named.get("group_by") == "contexts" and _mixed_context_widths(named["arr"], named["group_fn"]):
                    named["group_by"] = None
                super().__init__(**named)

            def get_batched(self, *args: Any, **kwargs: Any) -> Iterator:
                for batch in super().get_batched(*args, **kwargs):
                    recorder._batch = [(list(req[1]), list(req[2])) for req in batch]
                    yield batch

        module.Collator = RecordingCollator
        try:
            yield
        finally:
            module.Collator = original
            self._batch = None

    def take(self, window: int, drop_last: bool) -> Optional[list[ScoredRow]]:
        """The batch noted last, as :func:`scored_row` rows, or None if none is waiting."""
        batch, self._batch = self._batch, None
        if batch is None:
            return None
        return [scored_row(context, continuation, window, drop_last) for context, continuation in batch]


def check_rows(rows: Sequence[ScoredRow], forwarded: Sequence[Sequence[int]]) -> None:
    """UsageError unless ``forwarded`` (the rows a model call was given, padding cut off) are the
    recorded batch's tokens: if lm_eval built its batches otherwise, no width can be trusted."""
    if len(rows) != len(forwarded) or any(tuple(f) != r.tokens for r, f in zip(rows, forwarded)):
        raise UsageError("this lm_eval version builds loglikelihood batches differently from the one "
                         "the attn-transition models read; run with transition=none or another lm_eval")


_ROLLING = ("attn_transition: loglikelihood_rolling (perplexity tasks) scores each window of a text as "
            "the continuation of a one-token context; only the context is an edited prompt, so under "
            "transition={config} these scores are the stock model's")


def warn_rolling(config: Optional[TransitionConfig]) -> None:
    """Warn that a rolling loglikelihood under ``config`` scores what the stock model scores
    (lm_eval's windows have a one-token context: ``get_rolling_token_windows`` with
    ``context_len=1`` in lm_eval/utils.py); nothing if ``config`` is None."""
    if config is not None:
        warnings.warn(_ROLLING.format(config=format_config(config)), stacklevel=3)
