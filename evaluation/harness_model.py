"""The lm-evaluation-harness model ``attn-transition``: lm_eval's ``HFLM`` with attention
transition enabled (see :mod:`.harness` for its arguments). A loglikelihood request is edited
with its context as the prompt and its continuation's rows not edited, as on
``attn-transition-vllm`` (:mod:`.harness_args`); padded batches pass their padding mask.

Needs lm_eval (``pip install "attn-transition[lm-eval]"``); importing this module registers the
model in lm_eval's model registry. :mod:`.harness` imports it when lm_eval is installed.
"""

from __future__ import annotations

from typing import Any, Optional

import lm_eval.models.huggingface as _hf
import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

import attn_transition as at
from attn_transition.errors import UsageError
from attn_transition.keywords import LENGTH_KWARG

from .harness_args import MODEL_NAME, BatchRecorder, check_model_args, check_rows, parse_transition, warn_rolling
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
        check_model_args({**kwargs, "transition": transition})
        config = parse_transition(transition)       # before loading anything: a typo fails fast
        if isinstance(pretrained, str):        # embedded names, folders without config.json, offline hub ids
            pretrained = resolve_model(pretrained)
        tokenizer = kwargs.get("tokenizer")
        if isinstance(tokenizer, str) and tokenizer in EMBEDDED:
            kwargs["tokenizer"] = resolve_model(tokenizer)
        self._batches = BatchRecorder()
        super().__init__(pretrained=pretrained, **kwargs)
        self.transition_config = config
        if config is not None:
            options = {} if max_chunk_mib is None else {"max_chunk_mib": max_chunk_mib}
            at.enable(self.model, config, **options)

    # -- loglikelihood: the context is the edited prompt; right padding is masked ---------------

    def _loglikelihood_tokens(self, *args: Any, **kwargs: Any):
        """HFLM's, with each batch's model call given its rows' context widths (see
        :mod:`.harness_args`): a request is edited as its context alone would be as a prompt."""
        if not self._edits() or self.backend != "causal":
            return super()._loglikelihood_tokens(*args, **kwargs)
        if not hasattr(_hf, "Collator"):                              # pragma: no cover - other lm_eval
            raise UsageError("this lm_eval version builds loglikelihood batches differently; "
                             "run the attn-transition model with transition=none or another lm_eval")
        with self._batches.recording(_hf):
            return super()._loglikelihood_tokens(*args, **kwargs)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        if self._edits():                          # the config in effect: enable by hand counts too
            warn_rolling(at.get_state(self.model).settings().config)
        return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

    def _edits(self) -> bool:
        return isinstance(self.model, torch.nn.Module) and bool(at.is_enabled(self.model))

    def _model_call(self, inps: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                    labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """HFLM's model call; for a recorded loglikelihood batch, with its padding mask and each
        row's context width (``attn_transition_prompt_length``): the rows from the context's end
        on (the continuation) are not edited.

        HFLM right-pads the batch (``pad_and_concat(..., padding_side="right")`` in
        ``HFLM._loglikelihood_tokens``) and calls the model without a mask; the mask makes a
        padded row edited as it is alone. Calls outside a recorded batch (lm_eval's batch size
        detection) are HFLM's own.
        """
        rows = self._batches.take(window=self.max_length + 1, drop_last=True)
        if rows is None:
            return super()._model_call(inps, attn_mask, labels)
        lengths = [len(row.tokens) for row in rows]
        shaped = (attn_mask is None and labels is None and inps.dim() == 2 and inps.shape[0] == len(rows)
                  and inps.shape[1] == max(lengths))
        check_rows(rows, [inps[i, :n].tolist() for i, n in enumerate(lengths)] if shaped else [])
        options: dict[str, Any] = {LENGTH_KWARG: [row.context for row in rows]}
        if min(lengths) < inps.shape[1]:                                # right padding in this batch
            positions = torch.arange(inps.shape[1], device=inps.device)
            options["attention_mask"] = (positions[None, :]
                                         < torch.tensor(lengths, device=inps.device)[:, None]).long()
        with (torch.no_grad(),
              torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                             enabled=self.mixed_precision_dtype is not None)):
            return self.model(inps, **options).logits

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["attn_transition"] = "none" if self.transition_config is None else repr(self.transition_config)
        return info
