"""How much mass the classic edit adds back, as the specification computes it.

A row of a block ``[s, e)`` (width ``I``) loses ``R`` (elimination, halved first token). The
spec then adds ``7 a m`` onto the nearer block ``[s-I, s)`` and ``3 a m`` onto ``[s-2I, s-I)``,
with ``m`` = 1 on entries still ``>= alpha / e`` and 0.01 elsewhere and ``a = beta R / sum(m)``.
The added mass is therefore ``beta R (7 f + 3 (1 - f))``, ``f`` the nearer block's share of
``sum(m)``: between 3 and 7 times ``beta R``, not ``beta R`` (the README says so; this pins it on
the attention of tiny models).
"""

import pytest
import torch

import attn_transition as at
from attn_transition.schedules import classic_block_, layer_plan
from tiny_models import ids, tiny_model

pytestmark = pytest.mark.patch          # part of the floor suite (make test-floor)


def _blocks_of(model, config, n=150, seed=5):
    """(stock rows of one block, block) for every classic block of every layer, on the model's own attention."""
    with torch.no_grad():
        attentions = model(ids(1, n, seed=seed), output_attentions=True).attentions
    layers = model.config.num_hidden_layers
    for layer, weights in enumerate(attentions):
        for block in layer_plan(config, layer, layers, n):
            yield weights[0, :, block.start:block.end].float(), block      # (heads, I, n)


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
@pytest.mark.parametrize("config", [at.ClassicConfig(min_length=0),
                                    at.ClassicConfig(min_length=0, alpha=1.5, beta=1.0)], ids=["default", "strong"])
def test_added_mass_is_three_to_seven_times_beta_times_removed(family, config):
    model = tiny_model(family, attn_implementation="eager")
    ratios, nearer_shares = [], []
    for stock, block in _blocks_of(model, config):
        s, e, width, t = block.start, block.end, block.end - block.start, block.threshold
        edited = stock.clone()
        classic_block_(edited, s, e, t, block.beta, block.strategy)
        kept = stock[..., :e] * (stock[..., :e] >= t)                     # steps 1-2 of the spec
        kept[..., 0] *= 0.5
        removed = 1.0 - kept.sum(-1)                                       # (heads, I)
        added = edited[..., :e] - kept
        assert added[..., s - 2 * width:s].min() > -1e-6                   # float32 rounding only
        assert not added[..., :s - 2 * width].any() and not added[..., s:].any()   # only the two blocks
        m = torch.where(kept[..., s - 2 * width:s] >= t, 1.0, 0.01)       # (heads, I, 2I)
        f = m[..., width:].sum(-1) / m.sum(-1)                              # nearer block's share of m
        rows = removed > 1e-4
        ratio = added.sum(-1)[rows] / (block.beta * removed[rows])
        assert torch.allclose(ratio, (3 + 4 * f)[rows], rtol=1e-3), "added = beta * R * (7 f + 3 (1 - f))"
        ratios.append(ratio)
        nearer_shares.append(added[..., s - width:s].sum(-1)[rows] / added.sum(-1)[rows])
    ratio, share = torch.cat(ratios), torch.cat(nearer_shares)
    assert ratio.numel() > 100
    assert ratio.min() >= 3 - 1e-4 and ratio.max() <= 7 + 1e-4
    assert 4.5 < ratio.median() < 6.0
    # the nearer block gets 7f / (3 + 4f) of it: 0.7 only when both blocks weigh the same
    assert share.min() < 0.65 and share.max() > 0.75
