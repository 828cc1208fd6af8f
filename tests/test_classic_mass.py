"""How much mass the classic edit adds back, as the specification computes it.

A row of a block ``[s, e)`` (width ``I``) loses ``R`` (elimination, halved first token). The
spec then adds ``7 a m`` onto the nearer block ``[s-I, s)`` and ``3 a m`` onto ``[s-2I, s-I)``,
with ``m`` = 1 on entries still ``>= alpha / e`` and 0.01 elsewhere and ``a = beta R / sum(m)``.
The added mass is therefore ``beta R (7 f + 3 (1 - f))``, ``f`` the nearer block's share of
``sum(m)``: between 3 and 7 times ``beta R``, not ``beta R`` (the README says so; this pins it on
the attention of tiny models).

In float64 (the model and the edit): the spec's derivation below compares the weights with the
threshold itself, so a float32 weight within rounding of ``alpha / e`` could be judged on the
other side of it than the library judges it; in float64 that needs a 1e-16 coincidence, and the
identity holds to the rounding of the library's float32 ``m`` (see below).
"""

import pytest
import torch

import attn_transition as at
from attn_transition.schedules import classic_block_, layer_plan
from tiny_models import ids, tiny_model

pytestmark = pytest.mark.patch          # part of the floor suite (make test-floor)


def _blocks_of(model, config, n=150, seed=5):
    """(stock rows of one block, block) for every classic block of every layer, on the model's own attention."""
    # Unedited float64 weights, as the library computes them (a config with nothing to edit):
    # transformers' eager attention rounds its softmax to float32, rows then sum to 1 only to 1e-7.
    at.enable(model, at.ClassicConfig(min_length=10 * n))
    with torch.no_grad():
        attentions = model(ids(1, n, seed=seed), output_attentions=True).attentions
    at.disable(model)
    layers = model.config.num_hidden_layers
    for layer, weights in enumerate(attentions):
        for block in layer_plan(config, layer, layers, n):
            yield weights[0, :, block.start:block.end].double(), block     # (heads, I, n)


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
@pytest.mark.parametrize("config", [at.ClassicConfig(min_length=0),
                                    at.ClassicConfig(min_length=0, alpha=1.5, beta=1.0)], ids=["default", "strong"])
def test_added_mass_is_three_to_seven_times_beta_times_removed(family, config):
    model = tiny_model(family, attn_implementation="eager", dtype=torch.float64)
    ratios, nearer_shares = [], []
    for stock, block in _blocks_of(model, config):
        s, e, width, t = block.start, block.end, block.end - block.start, block.threshold
        edited = stock.clone()
        classic_block_(edited, s, e, t, block.beta, block.strategy)
        kept = stock[..., :e] * (stock[..., :e] >= t)                     # steps 1-2 of the spec
        kept[..., 0] *= 0.5
        removed = 1.0 - kept.sum(-1)                                       # (heads, I)
        added = edited[..., :e] - kept
        assert added[..., s - 2 * width:s].min() > -1e-12                  # rounding only
        assert not added[..., :s - 2 * width].any() and not added[..., s:].any()   # only the two blocks
        m = torch.where(kept[..., s - 2 * width:s] >= t, 1.0, 0.01).double()   # (heads, I, 2I)
        f = m[..., width:].sum(-1) / m.sum(-1)                              # nearer block's share of m
        rows = removed > 1e-4
        ratio = added.sum(-1)[rows] / (block.beta * removed[rows])
        # The library forms m in float32 even on float64 rows (0.01 as float32 rounds it, its
        # 2I-term sum in float32): a relative error of at most (2I + 2) float32 steps. A wrong
        # split of the mass is off by 1e-2 and more.
        rtol = (2 * width + 2) * 2.0 ** -24
        assert torch.allclose(ratio, (3 + 4 * f)[rows], rtol=rtol, atol=0), "added = beta * R * (7 f + 3 (1 - f))"
        ratios.append(ratio)
        nearer_shares.append(added[..., s - width:s].sum(-1)[rows] / added.sum(-1)[rows])
    ratio, share = torch.cat(ratios), torch.cat(nearer_shares)
    assert ratio.numel() > 100
    assert ratio.min() >= 3 * (1 - rtol) and ratio.max() <= 7 * (1 + rtol)
    assert 4.5 < ratio.median() < 6.0
    # the nearer block gets 7f / (3 + 4f) of it: 0.7 only when both blocks weigh the same
    assert share.min() < 0.65 and share.max() > 0.75
