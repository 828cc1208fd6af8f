"""``attn-transition generate --engine vllm``: the XSum loop on vLLM with the transition plugin.

The same loop as :func:`~attn_transition.evaluation.xsum.runner.generate_records` (one pass per
output key, plain first; keys already present are never regenerated; ``on_batch`` after every
batch, so an interrupted run resumes), with the model given by name or folder instead of a loaded
model: each pass runs on a vLLM engine started for its config (``additional_config``; none for the
plain pass), one engine alive at a time. Prompts are tokenised by the run's own tokenizer (the
token ids go to the engine as they are), and the new tokens decoded by it, as the transformers loop
does. Needs vLLM and this package's plugin in the running environment (``make setup-vllm``).
"""

from __future__ import annotations

import gc
import time
from typing import Any, Callable, Optional, Sequence

from attn_transition.config import TransitionConfig, format_config
from attn_transition.errors import UsageError

from .runner import plan_passes

__all__ = ["VLLMEngines", "generate_records"]


class VLLMEngines:
    """One vLLM engine at a time for a model folder, started for a config when first asked."""

    def __init__(self, folder: str, *, dtype: str, max_model_len: int, **engine_kwargs: Any) -> None:
        self.folder = folder
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.engine_kwargs = engine_kwargs
        self._config: Optional[str] = None
        self._llm: Any = None

    def engine(self, config: Optional[TransitionConfig]) -> Any:
        """The engine of ``config`` (None: stock), starting it and stopping the previous one if needed."""
        try:
            from vllm import LLM

            from attn_transition.keywords import ADDITIONAL_CONFIG_KEY
        except ImportError:
            raise UsageError("--engine vllm needs vLLM in this environment (make setup-vllm; run "
                             ".venv-vllm/bin/attn-transition generate ...)", field="engine") from None
        spec = None if config is None else format_config(config)
        if self._llm is None or spec != self._config:
            self.close()
            extra = {} if spec is None else {"additional_config": {ADDITIONAL_CONFIG_KEY: spec}}
            self._llm = LLM(model=self.folder, dtype=self.dtype, max_model_len=self.max_model_len, seed=0,
                            skip_tokenizer_init=True, **extra, **self.engine_kwargs)
            self._config = spec
        return self._llm

    def generate(self, config: Optional[TransitionConfig], token_ids: Sequence[list[int]],
                 max_new_tokens: int) -> list[list[int]]:
        """Greedy new tokens of each prompt (stopping at the model's end-of-sequence tokens)."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0, detokenize=False)
        outputs = self.engine(config).generate([{"prompt_token_ids": ids} for ids in token_ids], params,
                                               use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs]

    def close(self) -> None:
        if self._llm is not None:
            self._llm.llm_engine.engine_core.shutdown()
            self._llm = None
            gc.collect()


def _size_cpu_kv_cache(folder: str, max_len: int, batch_size: int, dtype: str) -> None:
    """On vLLM's CPU platform, size the KV cache for this run (``VLLM_CPU_KVCACHE_SPACE``, GiB) unless
    it is set: vLLM's default reserves a fixed share of the machine's memory and refuses to start
    when less is free (this process also holds the run's tokenizer and model)."""
    import math
    import os

    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or "VLLM_CPU_KVCACHE_SPACE" in os.environ:
        return
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    config = getattr(config, "text_config", None) or config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * heads * head_dim * (4 if dtype == "float32" else 2)   # K and V
    gib = per_token * max_len * batch_size * 1.25 / 2**30
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, math.ceil(gib)))


def generate_records(model: str, tokenizer: Any, records: list[dict], prompts: Sequence[str],
                     configs: dict[str, TransitionConfig] | Sequence[TransitionConfig], *,
                     add_special_tokens: bool, max_new_tokens: int = 50, batch_size: int = 4,
                     include_plain: bool = True, lengths: Optional[Sequence[int]] = None,
                     on_batch: Optional[Callable[[], None]] = None, progress: bool = True,
                     timings: Optional[dict[str, dict]] = None, dtype: str = "float32",
                     cache: Any = None) -> dict[str, dict]:
    """:func:`~attn_transition.evaluation.xsum.runner.generate_records` on vLLM engines; ``model``
    is an embedded name, a folder or a hub id (resolved as ``--model`` is), ``dtype`` the engines'."""
    from ..models import resolve_model

    passes, lengths, todo = plan_passes(tokenizer, records, prompts, configs, add_special_tokens=add_special_tokens,
                                        max_new_tokens=max_new_tokens, batch_size=batch_size,
                                        include_plain=include_plain, lengths=lengths)
    timings = {} if timings is None else timings
    if not passes:
        return timings
    folder = resolve_model(model, cache)
    _size_cpu_kv_cache(folder, max(lengths) + max_new_tokens, batch_size, dtype)
    # Eager: no compilation at each engine's start (one engine per config; a short pass would wait
    # longer for the compiler than for its generations).
    engines = VLLMEngines(folder, dtype=dtype, max_model_len=max(lengths) + max_new_tokens,
                          enforce_eager=True)
    try:
        for key, cfg in passes:
            started = time.perf_counter()
            indices = todo[key]
            for start in range(0, len(indices), batch_size):
                batch = indices[start:start + batch_size]
                ids = [tokenizer(prompts[i], add_special_tokens=add_special_tokens).input_ids for i in batch]
                new = engines.generate(cfg, ids, max_new_tokens)
                for i, tokens in zip(batch, new):
                    records[i][key] = tokenizer.decode(tokens, skip_special_tokens=True)
                if on_batch is not None:
                    on_batch()
            timings[key] = {"seconds": round(time.perf_counter() - started, 3), "documents": len(indices)}
            if progress:
                print(f"attn-transition generate: {key} on vLLM, {len(indices)} documents in "
                      f"{timings[key]['seconds']:.1f} s", flush=True)
    finally:
        engines.close()
    return timings
