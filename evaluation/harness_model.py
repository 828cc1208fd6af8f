"""The lm-evaluation-harness model ``attn-transition``: lm_eval's ``HFLM`` with attention
transition enabled (see :mod:`.harness` for its arguments and the padding it passes).

Needs lm_eval (``pip install "attn-transition[lm-eval]"``); importing this module registers the
model in lm_eval's model registry. :mod:`.harness` imports it when lm_eval is installed.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import lm_eval.models.huggingface as _hf
import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

import attn_transition as at
from attn_transition.errors import ConfigError, UsageError

from .harness_args import MODEL_NAME, parse_transition, stray_config_items
from .models import EMBEDDED, resolve_model

__all__ = ["AttnTransitionLM"]


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
        stray = stray_config_items(kwargs)
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
