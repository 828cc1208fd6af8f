"""Attention transition as an lm-evaluation-harness model, and ``attn-transition lm-eval``.

Importing this module registers the model ``attn-transition`` in lm_eval's model registry:
a thin subclass of lm_eval's ``HFLM``. Every ``HFLM`` model argument works (``pretrained``,
``dtype``, ``device``, ``batch_size``, ``parallelize``, ``peft``, ...), plus:

- ``transition=<config>``: the schedule, in the CLI's syntax (``classic``, ``sra``,
  ``classic:alpha=1,beta=0.5``) or ``none`` for the stock model (exactly lm_eval's ``hf``).
  Default ``classic``. On lm_eval's command line a value with commas must be quoted,
  ``transition='classic:alpha=1,beta=0.5'``, or its items separated with ``;``;
- ``max_chunk_mib=<MiB>``: the memory budget of the edited rows (``at.enable``'s);
- ``pretrained=smollm2-135m`` / ``gemma3-270m``: the embedded models, converted once into
  the offline cache (:mod:`attn_transition.evaluation.models`).

Padding. lm_eval right-pads loglikelihood batches and calls the model without an attention
mask; the stock causal model does not care, but the schedule's geometry depends on each
row's prompt length, which the padded width would change. For an enabled model this class
passes the padding mask of each right-padded batch, so every row is edited exactly as when
it runs alone. ``generate_until`` batches are left padded with a mask, which the patch reads.

``attn-transition lm-eval ARGS...`` registers the model and hands ``ARGS`` to lm_eval's own
command line unchanged (``--help`` included), so every lm_eval flag works.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import fields
from typing import Any, Iterator, Optional, Sequence

import torch

import attn_transition as at
from attn_transition.commands import register_command
from attn_transition.config import ClassicConfig, SRAConfig, TransitionConfig
from attn_transition.errors import ConfigError, UsageError

try:
    import lm_eval.models.huggingface as _hf
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
except ImportError as exc:                                  # pragma: no cover - depends on the install
    raise UsageError("lm-evaluation-harness is not installed: pip install 'attn-transition[lm-eval]' "
                     f"(or pip install 'lm_eval[ruler]'); {exc}") from None

from .models import EMBEDDED, resolve_model

__all__ = ["MODEL_NAME", "AttnTransitionLM", "parse_transition", "add_arguments", "run", "main",
           "EPILOG"]

MODEL_NAME = "attn-transition"

# Fields of the configs: a model_arg with one of these names is a piece of a transition value
# that lm_eval's comma splitting cut off.
_CONFIG_FIELDS = frozenset(f.name for cls in (ClassicConfig, SRAConfig) for f in fields(cls))
_STOCK = ("none", "off", "stock", "false")

EPILOG = """attn-transition lm-eval hands every argument to lm-evaluation-harness's command line, after
registering the model 'attn-transition' (HFLM plus transition=...). Examples:

  attn-transition lm-eval --model attn-transition \\
      --model_args pretrained=smollm2-135m,transition=classic \\
      --tasks niah_single_1 --metadata '{"max_seq_lengths":[1024]}' --limit 8
  attn-transition lm-eval --model attn-transition \\
      --model_args "pretrained=gemma3-270m,transition='classic:alpha=1,beta=0.5'" --tasks niah_single_1 ...
  attn-transition lm-eval --model attn-transition --model_args pretrained=smollm2-135m,transition=none ...
  attn-transition lm-eval ls tasks

model_args of attn-transition, besides HFLM's:
  transition=classic | sra | classic:alpha=1;beta=0.5 | none   (default classic; quote a value with
                       commas: transition='classic:alpha=1,beta=0.5'; none = lm_eval's hf model exactly)
  max_chunk_mib=N      memory budget of the edited rows per layer (at.enable's max_chunk_mib)
  pretrained=smollm2-135m | gemma3-270m | a folder | a hub id
"""


def parse_transition(value: Any) -> Optional[TransitionConfig]:
    """The config a ``transition=`` model argument names; None means the stock model.

    Accepts a config object, ``True`` (the default classic config), ``None`` / ``False`` /
    ``"none"`` (stock), or a config string whose items are separated by ``,`` or ``;``.
    """
    if isinstance(value, (ClassicConfig, SRAConfig)):
        return value
    if value is None or value is False:
        return None
    if value is True:
        return ClassicConfig()
    if not isinstance(value, str):
        raise ConfigError(f"transition must be a config string like 'classic', 'sra', "
                          f"'classic:alpha=1,beta=0.5' or 'none', got {value!r}")
    text = value.strip()
    if text.lower() in _STOCK:
        return None
    try:
        return at.parse_config(text.replace(";", ","))
    except ConfigError as exc:
        raise ConfigError(f"transition={value!r}: {exc}") from None


def _stray_config_items(kwargs: dict) -> list[str]:
    return sorted(k for k in kwargs if k in _CONFIG_FIELDS)


@register_model(MODEL_NAME)
class AttnTransitionLM(HFLM):
    """lm_eval's ``HFLM`` with attention transition enabled on its model.

    Args:
        pretrained: As for ``HFLM`` (a hub id, a folder or a loaded model), or an embedded
            name (``smollm2-135m``, ``gemma3-270m``) resolved to the offline cache.
        transition: A config string, a config object, or ``"none"`` for the stock model.
        max_chunk_mib: Passed to :func:`attn_transition.enable`; None keeps its default.
        **kwargs: Every other ``HFLM`` argument.
    """

    def __init__(self, pretrained: Any = "smollm2-135m", transition: Any = "classic",
                 max_chunk_mib: Any = None, **kwargs: Any) -> None:
        stray = _stray_config_items(kwargs)
        if stray:
            raise ConfigError(
                f"model_args {', '.join(stray)} look like items of transition cut off at a comma; "
                f"quote the value (transition='classic:alpha=1,beta=0.5') or separate its items "
                f"with ';' (transition=classic:alpha=1;beta=0.5)")
        config = parse_transition(transition)       # before loading anything: a typo fails fast
        if isinstance(pretrained, str):        # embedded names, folders without config.json, offline hub ids
            pretrained = resolve_model(pretrained)
        tokenizer = kwargs.get("tokenizer")
        if isinstance(tokenizer, str) and tokenizer in EMBEDDED:
            kwargs["tokenizer"] = resolve_model(tokenizer)
        self._row_lengths: Optional[list[int]] = None
        super().__init__(pretrained=pretrained, **kwargs)
        self.transition_config = config
        if config is not None:
            options = {} if max_chunk_mib is None else {"max_chunk_mib": max_chunk_mib}
            at.enable(self.model, config, **options)

    # -- loglikelihood: pass the padding mask of right-padded batches --------------------------

    @contextlib.contextmanager
    def _recording_row_lengths(self) -> Iterator[None]:
        """While HFLM builds loglikelihood batches, note each batch's real row lengths.

        HFLM pads a batch with ``pad_and_concat`` right before calling ``_model_call``; the
        lengths are read there (the function itself is called unchanged) and used by the
        next ``_model_call`` of a batch of that size.
        """
        original = _hf.pad_and_concat

        def recording(max_length: int, tensors: list, padding_side: str = "right"):
            if padding_side == "right":
                self._row_lengths = [int(t.shape[-1]) for t in tensors]
            return original(max_length, tensors, padding_side=padding_side)

        _hf.pad_and_concat = recording
        try:
            yield
        finally:
            _hf.pad_and_concat = original
            self._row_lengths = None

    def _loglikelihood_tokens(self, *args: Any, **kwargs: Any):
        if not self._edits() or self.backend != "causal":
            return super()._loglikelihood_tokens(*args, **kwargs)
        if not hasattr(_hf, "pad_and_concat"):                        # pragma: no cover - other lm_eval
            raise UsageError("this lm_eval version builds loglikelihood batches differently; "
                             "run the attn-transition model with batch_size=1")
        with self._recording_row_lengths():
            return super()._loglikelihood_tokens(*args, **kwargs)

    def _edits(self) -> bool:
        return isinstance(self.model, torch.nn.Module) and bool(at.is_enabled(self.model))

    def _model_call(self, inps: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                    labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        lengths, self._row_lengths = self._row_lengths, None
        if (lengths is None or attn_mask is not None or labels is not None or inps.dim() != 2
                or len(lengths) != inps.shape[0] or max(lengths) > inps.shape[1]
                or min(lengths) == inps.shape[1]):
            return super()._model_call(inps, attn_mask, labels)      # no padding in this batch
        positions = torch.arange(inps.shape[1], device=inps.device)
        mask = (positions[None, :] < torch.tensor(lengths, device=inps.device)[:, None]).long()
        with (torch.no_grad(),
              torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                             enabled=self.mixed_precision_dtype is not None)):
            return self.model(inps, attention_mask=mask).logits

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["attn_transition"] = "none" if self.transition_config is None else repr(self.transition_config)
        return info


# -- attn-transition lm-eval ------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Nothing of its own: every argument goes to lm_eval (a passthrough command)."""


def _split_items(text: str) -> list[str]:
    """Split ``key=value,key=value`` on commas outside quotes and brackets (as lm_eval does)."""
    items, buf, depth, quote = [], [], 0, None
    for char in text:
        if quote is not None:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[({":
            depth += 1
        elif char in "])}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            items.append("".join(buf))
            buf = []
            continue
        buf.append(char)
    items.append("".join(buf))
    return items


def _resolve_value(value: str) -> str:
    """One ``--model_args`` value with embedded model names replaced by their cached folders."""
    import json

    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in _MODEL_KEYS:
            if isinstance(parsed.get(key), str) and parsed[key] in EMBEDDED:
                parsed[key] = resolve_model(parsed[key])
        return json.dumps(parsed)
    items = []
    for item in _split_items(value):
        key, eq, text = item.partition("=")
        name = text.strip().strip("'\"")
        if eq and key.strip() in _MODEL_KEYS and name in EMBEDDED:
            item = f"{key}={resolve_model(name)}"
        items.append(item)
    return ",".join(items)


_MODEL_KEYS = ("pretrained", "tokenizer")


def resolve_embedded_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``pretrained=`` / ``tokenizer=`` embedded names in ``--model_args`` given as
    their cached folders, so the tasks that load a tokenizer by that name (RULER sizes its
    prompts with the model's tokenizer) find it offline too."""
    out: list[str] = []
    in_model_args = False
    for token in argv:
        if token in ("--model_args", "-a"):
            in_model_args = True
            out.append(token)
            continue
        if token.startswith("--model_args="):
            out.append("--model_args=" + _resolve_value(token.split("=", 1)[1]))
            in_model_args = False
            continue
        if in_model_args and not token.startswith("-"):
            out.append(_resolve_value(token))
            continue
        in_model_args = False
        out.append(token)
    return out


def main(argv: Sequence[str]) -> int:
    """Run lm_eval's command line on ``argv`` with the ``attn-transition`` model registered."""
    from lm_eval.__main__ import cli_evaluate

    argv = resolve_embedded_args(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(EPILOG)
        print("lm-eval's options (lm-eval run --help):\n", flush=True)
        argv = ["run", "--help"]
    saved = sys.argv
    sys.argv = ["attn-transition lm-eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exc:                  # argparse's --help and errors, lm_eval's own exits
        code = exc.code
        if code is None or isinstance(code, int):
            return int(code or 0)
        print(code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0


def run(args: argparse.Namespace) -> int:
    return main(getattr(args, "passthrough", []))

register_command('lm-eval', help="lm-evaluation-harness's CLI with the model 'attn-transition' registered",
                 add_arguments=add_arguments, run=run, epilog=EPILOG, passthrough=True)
