"""vLLM's CPU attention (``CPU_ATTN``) with the transition.

``CPUAttentionBackendImpl.forward`` (vllm/v1/attention/backends/cpu_attn.py) runs one fused C++
kernel (``ops.cpu_attention_with_kv_cache``) over every row of the step; the subclass lets it run,
then overwrites the edited rows (:mod:`.rows`).

The paged cache of a layer is ``(num_blocks, kv_heads, block_size, 2 * head_size)``; the kernel's
writer (``ops.cpu_attn_reshape_and_cache``) lays each (block, head) out as the block's keys
transposed, ``(head_size, block_size)``, followed by its values, ``(block_size, head_size)``, for
the ``vec`` and ``vec16`` instruction sets (float32, bfloat16, float16 without AMX). The reader
below checks that layout once per process against the writer itself (:func:`layout_matches`);
other layouts (``amx``) are refused at engine start unless prompts are never split into chunks.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import torch
from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend, CPUAttentionBackendImpl, _get_attn_isa

from attn_transition.errors import ConfigError

from .backends import TransitionBackend, TransitionImpl
from .rows import CacheReader

__all__ = ["TransitionCPUBackend", "TransitionCPUImpl", "read_cache", "layout_matches", "check_cpu_engine"]

# Instruction sets whose cache layout :func:`read_cache` reads (``_get_attn_isa`` in cpu_attn.py).
READABLE_ISAS = ("vec", "vec16")


def read_cache(kv_cache: torch.Tensor, blocks: torch.Tensor, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of positions ``[start, end)`` of the sequence whose block-table row is
    ``blocks``: ``(kv_heads, end - start, head_size)`` each (copies)."""
    num_blocks, kv_heads, block_size, fused = kv_cache.shape
    head_size = fused // 2
    first, last = start // block_size, -(-end // block_size)
    held = kv_cache[blocks[first:last].long()]                       # (b, kv_heads, block_size, 2 * hs) copy
    b = held.shape[0]
    halves = held.view(b, kv_heads, 2, block_size * head_size)       # (b, kv_heads, K | V, bs * hs)
    keys = halves[:, :, 0].view(b, kv_heads, head_size, block_size)  # (b, kv_heads, hs, bs): transposed
    keys = keys.permute(1, 0, 3, 2).reshape(kv_heads, b * block_size, head_size)    # (kv_heads, b * bs, hs)
    values = halves[:, :, 1].view(b, kv_heads, block_size, head_size)
    values = values.permute(1, 0, 2, 3).reshape(kv_heads, b * block_size, head_size)  # (kv_heads, b * bs, hs)
    cut = slice(start - first * block_size, end - first * block_size)
    return keys[:, cut], values[:, cut]


@functools.lru_cache(maxsize=None)
def layout_matches(isa: str, dtype: torch.dtype, block_size: int, head_size: int) -> bool:
    """Whether :func:`read_cache` reads back what vLLM's cache writer wrote (a small random cache)."""
    from vllm import _custom_ops as ops

    kv_heads, tokens, blocks = 2, block_size + 3, 3
    g = torch.Generator().manual_seed(0)
    k = torch.randn(tokens, kv_heads, head_size, generator=g).to(dtype)      # (tokens, kv_heads, hs)
    v = torch.randn(tokens, kv_heads, head_size, generator=g).to(dtype)
    kv_cache = torch.zeros(blocks, kv_heads, block_size, 2 * head_size, dtype=dtype)
    key_cache, value_cache = kv_cache.view(blocks, kv_heads, 2 * block_size, head_size).chunk(2, dim=2)
    table = torch.tensor([2, 0, 1], dtype=torch.int32)
    slots = table.long()[torch.arange(tokens) // block_size] * block_size + torch.arange(tokens) % block_size
    ops.cpu_attn_reshape_and_cache(k, v, key_cache, value_cache, slots, isa, k_scale=1.0, v_scale=1.0,
                                   kv_cache_dtype="auto")
    got_k, got_v = read_cache(kv_cache, table, 1, tokens)
    return torch.equal(got_k, k[1:].transpose(0, 1)) and torch.equal(got_v, v[1:].transpose(0, 1))


class TransitionCPUImpl(TransitionImpl, CPUAttentionBackendImpl):
    """vLLM's CPU attention, then the edited rows of the step's prompts overwritten."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._readable: Optional[bool] = None
        super().__init__(*args, **kwargs)

    def attention_window(self) -> Optional[int]:
        """``CPUAttentionBackendImpl.__init__`` stores the width, or -1 for none."""
        return self.sliding_window if self.sliding_window > 0 else None

    def cache_reader(self, layer: Any, kv_cache: torch.Tensor) -> CacheReader:
        """:func:`read_cache` once the cache's layout is known to be the one it reads (checked at
        the first step with prompt rows: ``layer.isa`` is set by vLLM's metadata builder)."""
        if self._readable is None:
            isa = getattr(layer, "isa", None)
            self._readable = isa in READABLE_ISAS and layout_matches(isa, kv_cache.dtype, kv_cache.shape[2],
                                                                     self.head_size)
        return read_cache if self._readable else _unreadable


def _unreadable(*args: Any) -> Any:
    # Unreachable where check_cpu_engine ran: it refuses chunked prefill and turns prefix caching
    # off on a layout read_cache does not read, so every prompt row's keys are in its own step.
    raise RuntimeError("attn_transition: a prompt arrived in chunks (or after cached blocks), and this CPU's "
                       "attention cache layout cannot be read back; restart the engine with "
                       "enable_chunked_prefill=False and enable_prefix_caching=False")


class TransitionCPUBackend(TransitionBackend, CPUAttentionBackend):
    """``CPU_ATTN`` whose layers get :class:`TransitionCPUImpl` when the engine asks for the transition."""

    transition_impl = TransitionCPUImpl
    stock_impl = CPUAttentionBackendImpl


def check_cpu_engine(vllm_config: Any) -> None:
    """Where the cache layout is not one :func:`read_cache` reads: turn prefix caching off (a
    cache hit starts a prompt's rows after cached ones, whose keys the edit reads back) and refuse
    chunked prefill.

    Raises:
        ConfigError: chunked prefill on such a layout (field ``enable_chunked_prefill``).
    """
    model_config = vllm_config.model_config
    block_size = vllm_config.cache_config.block_size or 128
    isa = _get_attn_isa(model_config.dtype, block_size, model_config.get_head_size())
    chunked = getattr(vllm_config.scheduler_config, "enable_chunked_prefill", True)
    if isa not in READABLE_ISAS:
        vllm_config.cache_config.enable_prefix_caching = False
    if isa not in READABLE_ISAS and chunked:
        raise ConfigError(f"attn_transition: prompts split into chunks need the earlier chunks' keys from the "
                          f"cache, whose {isa!r} layout the plugin cannot read; pass enable_chunked_prefill=False "
                          f"(or dtype='float32')", field="enable_chunked_prefill")
