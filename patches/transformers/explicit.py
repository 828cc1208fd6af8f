"""Plain attention computed explicitly in float32, returning its weights: for
``output_attentions=True`` on an sdpa model (sdpa returns none), and as the eager base of a
family whose modeling file has no eager function."""

from __future__ import annotations

from typing import Optional

import torch

from attn_transition.kernel import attention_weights, needs_grad, weighted_values

__all__ = ["plain_attention", "sinks_of"]


def sinks_of(module: torch.nn.Module, kwargs: dict) -> Optional[torch.Tensor]:
    """The layer's attention-sink logits (heads,), or None. gpt-oss passes them as ``s_aux``
    (its eager function reads ``module.sinks``)."""
    sinks = kwargs.get("s_aux")
    return sinks if sinks is not None else getattr(module, "sinks", None)


def plain_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: Optional[torch.Tensor], dropout: float = 0.0,
                    scaling: Optional[float] = None, softcap: Optional[float] = None,
                    **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Unedited attention with its weights; transformers' attention-function signature."""
    batch, heads, q, d = query.shape                                     # (batch, heads, q, d)
    k_len = key.shape[2]
    scaling = d ** -0.5 if scaling is None else scaling
    sinks = sinks_of(module, kwargs)
    out = query.new_zeros(batch, q, heads, value.shape[-1])             # (batch, q, heads, dv)
    weights = query.new_zeros(batch, heads, q, k_len)                    # (batch, heads, q, k)
    for b in range(batch):
        if attention_mask is None:                                       # causal, queries are the last keys
            mask_rows = torch.ones(q, k_len, dtype=torch.bool, device=query.device).tril_(k_len - q)
        else:
            mask_rows = attention_mask[b if attention_mask.shape[0] > 1 else 0, 0, :, :k_len]   # (q, k)
        w, _ = attention_weights(query[b], key[b], 0, mask_rows, scaling, softcap, sinks=sinks,
                                 inplace=not needs_grad(query, key, value))
        if dropout > 0:
            w = torch.nn.functional.dropout(w, p=dropout, training=True)
        out[b] = weighted_values(w, value[b]).transpose(0, 1).to(out.dtype)   # (q, heads, dv)
        weights[b] = w.to(weights.dtype)
    return out, weights
