"""vLLM's FlashAttention backend (CUDA) with the transition.

``FlashAttentionImpl.forward`` (vllm/v1/attention/backends/flash_attn.py) computes every row of the
step with the flash kernel; the subclass lets it run, then overwrites the edited rows (:mod:`.rows`).
Its paged cache is ``(num_blocks, kv_heads, block_size, 2 * head_size)``, each slot's key then value
(the forward's own ``kv_cache.transpose(1, 2).split(head_size, -1)``).

Written for the CUDA platform and checked there by the ``gpu``-marked tests
(``tests/test_vllm_gpu.py``, ``benchmarks/gpu_check.sh``); this module is imported only on CUDA.
Attention runs outside CUDA graphs in vLLM's default piecewise mode, so the Python loop of the
edited rows runs for every step with prompt rows; steps of decode rows only (the ones vLLM may
capture whole) have nothing to edit.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from vllm.v1.attention.backends.flash_attn import FlashAttentionBackend, FlashAttentionImpl
from vllm.v1.attention.backends.registry import AttentionBackendEnum

from attn_transition.errors import ConfigError

from .backends import TransitionBackend, TransitionImpl
from .rows import CacheReader

__all__ = ["TransitionFlashAttentionBackend", "TransitionFlashAttentionImpl", "read_cache", "check_cuda_engine"]


def read_cache(kv_cache: torch.Tensor, blocks: torch.Tensor, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of positions ``[start, end)`` of the sequence whose block-table row is
    ``blocks``: ``(kv_heads, end - start, head_size)`` each (copies)."""
    num_blocks, kv_heads, block_size, fused = kv_cache.shape
    head_size = fused // 2
    first, last = start // block_size, -(-end // block_size)
    held = kv_cache[blocks[first:last].long()]                       # (b, kv_heads, block_size, 2 * hs) copy
    b = held.shape[0]
    held = held.permute(1, 0, 2, 3).reshape(kv_heads, b * block_size, fused)   # (kv_heads, b * bs, 2 * hs)
    cut = slice(start - first * block_size, end - first * block_size)
    return held[:, cut, :head_size], held[:, cut, head_size:]


class TransitionFlashAttentionImpl(TransitionImpl, FlashAttentionImpl):
    """vLLM's FlashAttention, then the edited rows of the step's prompts overwritten."""

    def attention_window(self) -> Optional[int]:
        """``FlashAttentionImpl.__init__`` stores ``(window - 1, 0)``, or ``(-1, -1)`` for none."""
        left = self.sliding_window[0]
        return left + 1 if left >= 0 else None

    def cache_reader(self, layer: Any, kv_cache: torch.Tensor) -> CacheReader:
        return read_cache


class TransitionFlashAttentionBackend(TransitionBackend, FlashAttentionBackend):
    """``FLASH_ATTN`` whose layers get :class:`TransitionFlashAttentionImpl` when the engine asks."""

    transition_impl = TransitionFlashAttentionImpl
    stock_impl = FlashAttentionImpl


def check_cuda_engine(vllm_config: Any) -> None:
    """Select FlashAttention (the backend the plugin overrides); refuse another one chosen by hand.

    Raises:
        ConfigError: another attention backend was chosen (field ``attention_backend``).
    """
    attention = vllm_config.attention_config
    if attention.backend is None:
        attention.backend = AttentionBackendEnum.FLASH_ATTN
    elif attention.backend != AttentionBackendEnum.FLASH_ATTN:
        raise ConfigError(f"attn_transition: on CUDA the plugin edits FlashAttention's rows; pass "
                          f"attention_backend='FLASH_ATTN' (got {attention.backend.name})", field="attention_backend")
