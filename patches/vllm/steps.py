"""The prompt rows of one engine step, attached to its attention metadata.

vLLM's attention metadata says where each request's query rows are in the flattened batch
(``query_start_loc``) and how long its sequence is, but not how long its *prompt* is, and the
schedule needs that length for every prompt row (its blocks move with n). The model runner knows
it: ``GPUModelRunner._build_attention_metadata`` (vllm/v1/worker/gpu_model_runner.py; the CPU
runner inherits it) builds the step's metadata from ``self.input_batch`` (``num_prompt_tokens``,
``num_computed_tokens_cpu``) and ``self.query_start_loc`` (the CPU copy ``.np``), filled by
``_prepare_inputs`` for the same step. A wrapper reads them there and sets :data:`STEP_ATTR` on
every metadata object it returns, so each layer finds its step's rows on the metadata it is
handed, whatever else runs in between.

Rows at positions past the prompt (decoding, or output tokens recomputed after a preemption)
are never edited; a step without prompt rows carries an empty tuple, and so do the runner's
dummy batches (``GPUModelRunner._dummy_run``: warm-up, profiling, idle data-parallel ranks), whose
input batch does not describe the rows they run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

__all__ = ["PromptRows", "STEP_ATTR", "step_rows", "install_step_rows"]

STEP_ATTR = "attn_transition_rows"
_WRAPPED = "_attn_transition_wrapped"
_IN_DUMMY = "_attn_transition_in_dummy_run"


@dataclass(frozen=True)
class PromptRows:
    """The prompt rows one request computes in this step.

    ``request``: its index in the batch (the row of ``block_table``); ``token_start``: the index
    of its first row in the step's flattened tokens; rows ``[first, end)`` are prompt positions
    (``first`` = tokens already in the cache, ``end <= prompt_len``).
    """

    request: int
    token_start: int
    first: int
    end: int
    prompt_len: int


def step_rows(query_start_loc: Any, num_computed: Any, num_prompt: Any, num_reqs: int) -> tuple[PromptRows, ...]:
    """The prompt rows of a step from the runner's CPU arrays (sequences of ints)."""
    rows = []
    for i in range(num_reqs):
        first, prompt_len = int(num_computed[i]), int(num_prompt[i])
        if first >= prompt_len:
            continue                                     # decoding: nothing to edit
        start, stop = int(query_start_loc[i]), int(query_start_loc[i + 1])
        end = min(first + (stop - start), prompt_len)
        if end > first:
            rows.append(PromptRows(i, start, first, end, prompt_len))
    return tuple(rows)


def _attach(attn_metadata: Any, rows: tuple[PromptRows, ...]) -> None:
    groups = attn_metadata if isinstance(attn_metadata, list) else [attn_metadata]
    for group in groups:
        if isinstance(group, dict):
            for metadata in group.values():
                setattr(metadata, STEP_ATTR, rows)


def _wrap_build(build: Any) -> Any:
    @functools.wraps(build)
    def _build_attention_metadata(self, num_tokens: int, num_reqs: int, *args: Any, **kwargs: Any) -> Any:
        result = build(self, num_tokens, num_reqs, *args, **kwargs)
        if getattr(self, _IN_DUMMY, False):
            rows: tuple[PromptRows, ...] = ()
        else:
            batch = self.input_batch
            rows = step_rows(self.query_start_loc.np, batch.num_computed_tokens_cpu, batch.num_prompt_tokens,
                             num_reqs)
        _attach(result[0], rows)
        return result

    setattr(_build_attention_metadata, _WRAPPED, True)
    return _build_attention_metadata


def _wrap_dummy_run(dummy_run: Any) -> Any:
    @functools.wraps(dummy_run)
    def _dummy_run(self, *args: Any, **kwargs: Any) -> Any:
        setattr(self, _IN_DUMMY, True)
        try:
            return dummy_run(self, *args, **kwargs)
        finally:
            setattr(self, _IN_DUMMY, False)

    setattr(_dummy_run, _WRAPPED, True)
    return _dummy_run


def install_step_rows() -> None:
    """Wrap the model runner's metadata builder (once per process, in the worker that needs it)."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    if not getattr(GPUModelRunner._build_attention_metadata, _WRAPPED, False):
        GPUModelRunner._build_attention_metadata = _wrap_build(GPUModelRunner._build_attention_metadata)
    if not getattr(GPUModelRunner._dummy_run, _WRAPPED, False):
        GPUModelRunner._dummy_run = _wrap_dummy_run(GPUModelRunner._dummy_run)
