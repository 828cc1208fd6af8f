"""A deliberately plain, loop-by-loop reading of the specification of the two schedules.

It shares no code with ``attn_transition.schedules``: every formula is typed again from
the spec, one (batch, head, row) at a time, so the conformance tests compare two
independent implementations.
"""

from __future__ import annotations

import math

import torch


def classic_block_row(row: torch.Tensor, s: int, e: int, alpha: float, beta: float, strategy: str) -> None:
    """Edit one query row (1-D float64 numpy array of all columns) of block [s, e) in place."""
    I = e - s
    t = alpha / e
    for c in range(e):                      # 1. elimination over columns 0..e-1
        if row[c] < t:
            row[c] = 0.0
    row[0] = row[0] / 2                     # 2. halve the first token
    R = 1.0 - float(row[:e].sum())          # 3. removed mass
    if strategy == "adding":
        if s != I:
            cols = list(range(s - 2 * I, e - I))
            m = [1.0 if row[c] >= t else 0.01 for c in cols]
            a = beta * R / sum(m)
            near = [row[c] + 7 * a * m[I + i] for i, c in enumerate(range(s - I, e - I))]
            far = [row[c] + 3 * a * m[i] for i, c in enumerate(range(s - 2 * I, e - 2 * I))]
            for i, c in enumerate(range(s - I, e - I)):
                row[c] = near[i]
            for i, c in enumerate(range(s - 2 * I, e - 2 * I)):
                row[c] = far[i]
        else:
            cols = list(range(0, e - I))
            m = [1.0 if row[c] >= t else 0.001 for c in cols]
            a = beta * R / sum(m)
            for i, c in enumerate(range(s - I, e - I)):
                row[c] = row[c] + 10 * a * m[len(m) - I + i]
    else:  # multi
        total = float(row[:e].sum())
        factor = R / total if total > 0 else 0.0
        for c in range(e):
            row[c] = row[c] * factor


def redistribute_row(row: torch.Tensor, t0: int, t1: int, t: float, S: float) -> None:
    if not any(float(row[c]) > t for c in range(t0, t1)):
        return                               # pair not selected
    for c in range(row.shape[0]):
        if row[c] < t:
            row[c] = 0.0
    R = 1.0 - float(row.sum())
    m = [100.0 if row[c] >= t else 5.0 for c in range(t0, t1)]
    msum = sum(m)
    for i, c in enumerate(range(t0, t1)):
        row[c] = row[c] + S * R / msum * m[i]


def classic_blocks(n: int, layer: int, L: int, alpha: float, beta: float, k: int, min_length: int):
    if n < min_length:
        return []
    interval = math.floor(n / (L - 1 + k))
    interval -= interval % 5
    if interval == 0 or not (1 <= layer <= L - 3):
        return []
    return [((layer + 1 + j) * interval, (layer + 2 + j) * interval) for j in range(k)]


def sra_steps(n: int, layer: int, L: int, cfg) -> list[tuple]:
    """[(row_start, row_end, t0, t1, threshold, strength)] in the order the spec applies them."""
    if layer > L - 2:
        return []
    thr = n // cfg.dyna_div if cfg.dynamic_threshold else cfg.threshold_len
    begin = cfg.begin_length
    steps = []
    if cfg.inter and not n <= begin + thr + 3:
        c = math.ceil((n - begin - thr - 3) / (L + 3))
        s = (layer + 3) * c + begin + 3
        e = min(s + c, n - thr)
        I = e - s
        if I > 0:
            steps.append((s, e, s - 3 * I, s - 2 * I, cfg.elimi_factor_inter / (s - begin), cfg.strengthen_factor_inter))
    if cfg.outer and layer >= 1 and not n <= thr + 3:
        cur = n - thr
        c = math.ceil((n - thr - 3) / (L + 3))
        s = (layer + 2) * c + 3
        e = min(s + c, n - thr)
        if e > s:
            steps.append((cur, n, s, e, cfg.elimi_factor_outer / cur, cfg.strengthen_factor_outer))
    return steps


def oracle_reweight(weights: torch.Tensor, layer: int, L: int, cfg, lengths=None) -> torch.Tensor:
    """Spec reading on (batch, heads, n, n); ``lengths[b]`` real tokens at the right end (left padding)."""
    from attn_transition.config import ClassicConfig

    out = weights.to(torch.float64).numpy().copy()   # numpy: fast element access in the loops
    batch, heads, n, _ = out.shape
    for b in range(batch):
        nb = n if lengths is None else lengths[b]
        p = n - nb
        for h in range(heads):
            W = out[b, h, p:, p:]               # the real tokens' square
            if isinstance(cfg, ClassicConfig):
                for s, e in classic_blocks(nb, layer, L, cfg.alpha, cfg.beta, cfg.intervals_per_layer, cfg.min_length):
                    for i in range(s, e):
                        classic_block_row(W[i], s, e, cfg.alpha, cfg.beta, cfg.strategy)
            else:
                for r0, r1, t0, t1, t, S in sra_steps(nb, layer, L, cfg):
                    for i in range(r0, r1):
                        redistribute_row(W[i], t0, t1, t, S)
    return torch.from_numpy(out)


def random_causal_attention(batch: int, heads: int, n: int, *, seed: int, peaky: float = 3.0) -> torch.Tensor:
    """Softmax of random scores under a causal mask (float32)."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, heads, n, n, generator=g) * peaky
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    return torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
