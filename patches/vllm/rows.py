"""One layer's edited rows in a vLLM step, through the shared kernel.

A backend's ``forward`` lets vLLM's fused kernel write every row into ``output``, then calls
:meth:`LayerTransition.overwrite`: for each request with prompt rows in the step (see
:mod:`.steps`) it asks the schedule which of them this layer edits, recomputes exactly those with
:func:`attn_transition.kernel.transition_rows` and writes them over the kernel's rows.

Keys and values: a request whose whole prompt so far is in this step (a one-shot prefill, or the
first chunk of a chunked one) has them in the step's own ``key`` / ``value``. A later chunk needs
the keys of the earlier chunks too; the backend reads them from the paged cache (vLLM writes
this step's keys into the cache before the attention forward: ``unified_kv_cache_update`` in
vllm/model_executor/layers/attention/attention.py), with a :class:`CacheReader` that knows its
layout. Each edited row needs only the keys before it, so a chunk is edited exactly like the
same rows of a one-shot prefill.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

import torch

from attn_transition.kernel import Scratch, edited_spans, transition_rows
from attn_transition.schedules import layer_plan

from .steps import STEP_ATTR, PromptRows

__all__ = ["CacheReader", "LayerTransition", "layer_position"]


class CacheReader(Protocol):
    def __call__(self, kv_cache: torch.Tensor, blocks: torch.Tensor, start: int,
                 end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions ``[start, end)`` of one sequence whose block-table row is
        ``blocks``: ``(kv_heads, end - start, d)`` and ``(kv_heads, end - start, dv)``."""


def layer_position(layer_name: str, layout: dict[int, int]) -> int:
    """The schedule position of the attention layer named ``layer_name`` (vLLM's prefix, e.g.
    ``model.layers.7.self_attn.attn``), from :func:`~attn_transition.families.schedule_layout`'s map."""
    from vllm.model_executor.models.utils import extract_layer_index

    index = extract_layer_index(layer_name)
    if index not in layout:
        raise RuntimeError(f"attn_transition: attention layer {layer_name!r} (index {index}) is not a "
                           f"softmax-attention layer of the model's schedule layout {sorted(layout)}")
    return layout[index]


# One buffer for the edited chunks of every layer of the worker (a worker runs one step at a time).
_SCRATCH = Scratch()


class LayerTransition:
    """The edit of one attention layer: the layout of the model's attention layers and the layer's
    own attention settings (scaling, softcap, sinks, sliding window); each request's config and
    width come with its rows (:class:`~.steps.PromptRows`). The layer's position in the schedule
    is read from its name at its first forward."""

    def __init__(self, layout: dict[int, int], num_layers: int, *, scaling: float,
                 softcap: Optional[float], sinks: Optional[torch.Tensor], window: Optional[int],
                 budget: Callable[[torch.device, int, int], Any]) -> None:
        self.layout = layout
        self.num_layers = num_layers
        self.position: Optional[int] = None
        self.scaling = scaling
        self.softcap = softcap
        self.sinks = sinks
        self.window = window
        self.budget = budget

    def overwrite(self, layer: Any, attn_metadata: Any, query: torch.Tensor, key: torch.Tensor,
                  value: torch.Tensor, kv_cache: torch.Tensor, output: torch.Tensor,
                  read_cache: CacheReader) -> None:
        """Recompute and write this layer's edited rows of the step.

        ``query`` ``(tokens, heads, d)``, ``key`` / ``value`` ``(tokens, kv_heads, d)``: the step's;
        ``output`` ``(tokens, heads, dv)``: the fused kernel's result, overwritten in place.
        """
        requests: tuple[PromptRows, ...] = getattr(attn_metadata, STEP_ATTR, ())
        if not requests:
            return
        if self.position is None:
            self.position = layer_position(layer.layer_name, self.layout)
        for rows in requests:
            edits = layer_plan(rows.config, self.position, self.num_layers, rows.prompt_len)
            spans = edited_spans(edits, rows.first, rows.end) if edits else []
            if spans:
                self._rows(rows, edits, spans, attn_metadata, query, key, value, kv_cache, output, read_cache)

    def _rows(self, rows: PromptRows, edits, spans: list[tuple[int, int]], attn_metadata: Any,
              query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
              output: torch.Tensor, read_cache: CacheReader) -> None:
        lo, hi = spans[0][0], spans[-1][1]               # prompt positions of the rows to recompute
        key_start = 0 if self.window is None else max(0, lo - self.window + 1)
        local = slice(rows.token_start + lo - rows.first, rows.token_start + hi - rows.first)
        if rows.first <= key_start:
            # Every key the rows need is in this step: positions [key_start, hi).
            keys = slice(rows.token_start + key_start - rows.first, rows.token_start + hi - rows.first)
            k = key[keys].transpose(0, 1)                # (kv_heads, c, d)
            v = value[keys].transpose(0, 1)              # (kv_heads, c, dv)
        else:
            k, v = read_cache(kv_cache, attn_metadata.block_table[rows.request], key_start, hi)
        q = query[local].transpose(0, 1)                 # (heads, r, d)
        heads = q.shape[0]
        transition_rows(q, k, v, edits, row_start=lo, key_start=key_start, scaling=self.scaling,
                        softcap=self.softcap, sinks=self.sinks, window=self.window,
                        budget=self.budget(q.device, heads, hi - key_start), scratch=_SCRATCH,
                        prompt_length=rows.prompt_len,   # the kernel checks the edits were planned for it
                        out=output[local])               # (r, heads, dv) view of output
