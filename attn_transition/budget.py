"""The memory budget of the edited rows: the ``max_chunk_mib`` setting made into a
:class:`~attn_transition.kernel.Budget` for one layer call.

``max_chunk_mib="auto"`` (the default): on the CPU, chunks of ``AUTO_CPU_ROWS`` query rows,
but never under ``AUTO_CPU_MIN_MIB`` and never over ``AUTO_CHUNK_MIB["cpu"]``. The stock model's
own activations grow with the prompt like one row over all keys does, so a fixed row count
keeps the extra memory a fixed small share of stock's on long prompts. On short ones a chunk of
32 rows is small (2.4 MiB of weights at 2048 tokens on SmolLM2's 9 heads) and each chunk pays a
fixed cost in its ~40 tensor operations and in threads that split small products poorly:
measured at 2048 tokens (sra, 30 layers), chunks of 100-200 rows made the edited rows 15-20%
faster than chunks of 32. The floor costs at most ``AUTO_CPU_MIN_MIB`` (a few MiB of float32
weights) where the prompt is short. On an accelerator: a larger fixed budget, where one chunk
of a few rows would be launch-bound.
A number is MiB per chunk; None is no bound (one piece per edit).
"""

from __future__ import annotations

from typing import Union

import torch

from attn_transition.kernel import BYTES_PER_ENTRY, Budget

__all__ = ["DEFAULT_MAX_CHUNK_MIB", "AUTO_CHUNK_MIB", "AUTO_CPU_ROWS", "AUTO_CPU_MIN_MIB", "ChunkSetting",
           "chunk_budget"]

ChunkSetting = Union[float, str, None]
DEFAULT_MAX_CHUNK_MIB: ChunkSetting = "auto"
AUTO_CHUNK_MIB = {"cpu": 64.0, "accelerator": 512.0}
AUTO_CPU_ROWS = 32
AUTO_CPU_MIN_MIB = 16.0


def chunk_budget(setting: ChunkSetting, device: torch.device, heads: int, keys: int) -> Budget:
    """The budget in effect for rows over at most ``keys`` keys: the number given, no bound
    (None), or "auto" by device."""
    if setting != "auto":
        return Budget(setting)
    if device.type != "cpu":
        return Budget(AUTO_CHUNK_MIB["accelerator"])
    mib = AUTO_CPU_ROWS * BYTES_PER_ENTRY * heads * max(keys, 1) / 2**20   # AUTO_CPU_ROWS rows' worth
    return Budget(min(AUTO_CHUNK_MIB["cpu"], max(AUTO_CPU_MIN_MIB, mib)))


