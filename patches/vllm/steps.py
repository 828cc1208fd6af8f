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

Each request has its own transition: its config and prompt width ``n``, resolved in the caller's
process and written into its ``SamplingParams.extra_args`` (:mod:`.requests`). The runner keeps
each request's params (``GPUModelRunner.requests[req_id].sampling_params``, a
``CachedRequestState``; vllm/v1/worker/gpu_input_batch.py); the wrapper reads them once per
request, the first time it has prompt rows, and keeps the result on that state. A request that is
not edited (config ``"none"``) and rows at positions ``>= n`` (the prompt's tail past its declared
width, decoding, output tokens recomputed after a preemption) are never edited; a step without
rows to edit carries an empty tuple, and so do the runner's dummy batches
(``GPUModelRunner._dummy_run``: warm-up, profiling, idle data-parallel ranks), whose input batch
does not describe the rows they run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from attn_transition.config import TransitionConfig

from .asked import default_config, engine_transition
from .requests import resolve_request

__all__ = ["PromptRows", "STEP_ATTR", "step_rows", "install_step_rows", "request_plan"]

STEP_ATTR = "attn_transition_rows"
_WRAPPED = "_attn_transition_wrapped"
_IN_DUMMY = "_attn_transition_in_dummy_run"
_PLAN = "_attn_transition_plan"                  # on a CachedRequestState: (config or None, width)
_DEFAULT = "_attn_transition_default"            # on the runner: the engine's default config or None

# A request's transition: its config (None: not edited) and prompt width n.
Plan = tuple[Optional[TransitionConfig], int]


@dataclass(frozen=True)
class PromptRows:
    """The prompt rows one request computes in this step.

    ``request``: its index in the batch (the row of ``block_table``); ``token_start``: the index
    of its first row in the step's flattened tokens; rows ``[first, end)`` are prompt positions
    (``first`` = tokens already in the cache, ``end <= prompt_len``); ``prompt_len``: the width
    ``n`` the schedule is planned with; ``config``: the request's config.
    """

    request: int
    token_start: int
    first: int
    end: int
    prompt_len: int
    config: TransitionConfig


def step_rows(query_start_loc: Any, num_computed: Any, num_prompt: Any, num_reqs: int,
              plan: Callable[[int, int], Plan]) -> tuple[PromptRows, ...]:
    """The rows to edit of a step from the runner's CPU arrays (sequences of ints);
    ``plan(i, prompt_len)`` is request ``i``'s config and width (asked only for a request whose
    prompt is not yet all in the cache)."""
    rows = []
    for i in range(num_reqs):
        first, prompt_len = int(num_computed[i]), int(num_prompt[i])
        if first >= prompt_len:
            continue                                     # decoding: nothing to edit
        config, width = plan(i, prompt_len)
        if config is None or first >= width:
            continue                                     # not edited, or past its declared width
        start, stop = int(query_start_loc[i]), int(query_start_loc[i + 1])
        end = min(first + (stop - start), width)
        if end > first:
            rows.append(PromptRows(i, start, first, end, width, config))
    return tuple(rows)


def request_plan(state: Any, default: Optional[TransitionConfig], prompt_len: int) -> Plan:
    """Request ``state``'s (a ``CachedRequestState``) config and width, read once from its
    ``sampling_params.extra_args`` (:func:`~.requests.resolve_request`) and kept on the state."""
    plan = getattr(state, _PLAN, None)
    if plan is None:
        params = state.sampling_params
        plan = resolve_request(getattr(params, "extra_args", None), default, prompt_len)
        setattr(state, _PLAN, plan)
    return plan


def _engine_default(runner: Any) -> Optional[TransitionConfig]:
    """The engine's default config (None for ``"none"``), read once per runner."""
    if not hasattr(runner, _DEFAULT):
        setattr(runner, _DEFAULT, default_config(engine_transition(runner.vllm_config.additional_config)))
    return getattr(runner, _DEFAULT)


def _runner_rows(runner: Any, num_reqs: int) -> tuple[PromptRows, ...]:
    batch = runner.input_batch
    req_ids: Sequence[Optional[str]] = batch.req_ids
    default = _engine_default(runner)

    def plan(i: int, prompt_len: int) -> Plan:
        return request_plan(runner.requests[req_ids[i]], default, prompt_len)

    return step_rows(runner.query_start_loc.np, batch.num_computed_tokens_cpu, batch.num_prompt_tokens,
                     num_reqs, plan)


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
        rows = () if getattr(self, _IN_DUMMY, False) else _runner_rows(self, num_reqs)
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
