"""In-place operations on rows of post-softmax attention that the built-in schedules share.

``rows`` is a ``(..., r, C)`` float32 or float64 tensor of weights; nothing here allocates a
tensor of the rows' size.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["below", "eliminate_", "region_weights"]


@functools.lru_cache(maxsize=256)
def below(threshold: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` value under ``threshold`` as ``dtype`` rounds it: ``x > below(t)``
    holds exactly when ``x < t`` does not, as torch compares a ``dtype`` tensor with ``t``."""
    t = torch.tensor(threshold, dtype=dtype)
    return torch.nextafter(t, torch.tensor(float("-inf"), dtype=dtype)).item()


def eliminate_(rows: torch.Tensor, threshold: float) -> torch.Tensor:
    """Zero, in place, the entries below ``threshold`` (``masked_fill_(rows < threshold, 0)``
    in one pass over memory instead of two)."""
    return torch.nn.functional.threshold_(rows, below(threshold, rows.dtype), 0.0)


def region_weights(like: torch.Tensor, strong: float, weak: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The two region weights as 0-d tensors of ``like``'s dtype (python scalars would make
    ``torch.where`` compute in the default float32 even on float64 rows)."""
    return like.new_tensor(strong), like.new_tensor(weak)
