"""``at.reweight`` as a library function: differentiable, and refusing what it would misread.

The gradient is checked against the spec's own reading (tests/spec_oracle.py, numpy loops
sharing no code with the library) by central differences in float64 along directions that keep
every entry on its side of every threshold (the edit is piecewise linear in the weights there,
so the difference quotient is exact up to float64 rounding).
"""

import pytest
import torch

import attn_transition as at
from attn_transition.schedules import layer_plan
from spec_oracle import oracle_reweight, random_causal_attention

N, LAYER, LAYERS = 160, 2, 6
CONFIGS = {
    "classic": at.ClassicConfig(min_length=0, beta=0.5),
    "classic-multi": at.ClassicConfig(min_length=0, strategy="multi"),
    "sra": at.SRAConfig(begin_length=4, threshold_len=24),
}


def _closest_to_a_threshold(w: torch.Tensor, config) -> float:
    """The smallest relative distance of an entry the edit compares with a threshold (column 0 is
    compared after halving) to that threshold, over the layer's edited rows."""
    closest = float("inf")
    for edit in layer_plan(config, LAYER, LAYERS, w.shape[-1]):
        t = edit.threshold
        rows = w[..., edit.start:edit.end, :]                              # (batch, heads, r, n)
        closest = min(closest, float(((rows - t).abs() / t).min()), float(((rows[..., 0] / 2 - t).abs() / t).min()))
    return closest


@pytest.mark.parametrize("name", list(CONFIGS))
def test_gradients_equal_the_spec_reading_differentiated(name):
    config = CONFIGS[name]
    w = random_causal_attention(1, 2, N, seed=4).double()                  # (1, 2, n, n)
    assert layer_plan(config, LAYER, LAYERS, N), "the layer edits this prompt"
    assert _closest_to_a_threshold(w, config) > 1e-4, "an entry sits on a threshold (pick another seed)"
    g = torch.Generator().manual_seed(5)
    probe = torch.randn(w.shape, generator=g, dtype=torch.float64)         # what the loss reads of the output
    leaf = w.clone().requires_grad_(True)
    out = at.reweight(leaf, LAYER, LAYERS, config)
    assert out.grad_fn is not None and out.dtype == torch.float64
    assert torch.allclose(out.detach(), oracle_reweight(w, LAYER, LAYERS, config), rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad((out * probe).sum(), leaf)
    assert (grad - probe).abs().max() > 1e-3, "the edit's Jacobian is not the identity on its rows"

    def loss(x: torch.Tensor) -> float:
        return float((oracle_reweight(x, LAYER, LAYERS, config) * probe).sum())

    eps = 1e-7
    for seed in range(3):
        # Relative moves (entries stay >= 0, off-causal zeros stay zero), each < 1e-6 of the entry:
        # no entry crosses a threshold (all are > 1e-4 away).
        z = torch.randn(w.shape, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
        direction = w * z.clamp(-5, 5)
        want = (loss(w + eps * direction) - loss(w - eps * direction)) / (2 * eps)
        got = float((grad * direction).sum())
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9), (name, seed)


def test_gradients_reach_weights_outside_the_edited_rows_unchanged():
    config = CONFIGS["classic"]
    w = random_causal_attention(1, 2, N, seed=4).double().requires_grad_(True)
    out = at.reweight(w, LAYER, LAYERS, config)
    (grad,) = torch.autograd.grad(out.sum(), w)
    edited = torch.zeros(N, dtype=torch.bool)
    for e in layer_plan(config, LAYER, LAYERS, N):
        edited[e.start:e.end] = True
    assert torch.equal(grad[..., ~edited, :], torch.ones_like(grad[..., ~edited, :]))


def _window(n: int, width: int) -> torch.Tensor:
    i = torch.arange(n)
    return (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < width)  # (n, n)


def test_an_additive_allowed_mask_is_refused_naming_the_case():
    allowed = _window(N, 30)
    w = random_causal_attention(1, 2, N, seed=5) * allowed
    w = w / w.sum(-1, keepdim=True)
    additive = torch.zeros(N, N).masked_fill(~allowed, float("-inf"))     # transformers' format
    for mask in (additive, torch.zeros(N, N).masked_fill(~allowed, torch.finfo(torch.float32).min),
                 allowed.long(), allowed.float()):
        with pytest.raises(at.InputError, match="allowed must be a bool mask.*additive mask") as err:
            at.reweight(w, LAYER, LAYERS, CONFIGS["classic"], allowed=mask)
        assert err.value.field == "allowed"
    at.reweight(w, LAYER, LAYERS, CONFIGS["classic"], allowed=allowed)       # the bool mask is read


@pytest.mark.parametrize("case", ["scores", "negative", "scaled", "sink-share", "outside-allowed"])
def test_rows_that_are_not_distributions_are_refused(case):
    w = random_causal_attention(1, 2, N, seed=6)
    allowed = None
    if case == "scores":                                                   # pre-softmax, causal
        w = torch.randn(1, 2, N, N).masked_fill(~torch.ones(N, N, dtype=torch.bool).tril(), float("-inf"))
        w = w.nan_to_num(neginf=0.0)
    elif case == "negative":                                               # one entry below 0, mass kept
        w = w.clone()
        w[0, 1, 100, :2] = torch.tensor([-0.05, w[0, 1, 100, 1] + w[0, 1, 100, 0] + 0.05])
    elif case == "scaled":
        w = w * 1.5
    elif case == "sink-share":                                             # a sink took 10% of each row
        w = w * 0.9
    else:                                                                  # mass where the window forbids
        allowed = _window(N, 30)
    with pytest.raises(at.InputError, match="weights must be post-softmax probabilities") as err:
        at.reweight(w, LAYER, LAYERS, CONFIGS["sra"], allowed=allowed)
    assert err.value.field == "weights"


def test_padding_rows_and_bfloat16_rounding_are_distributions():
    n, pad = N, 20
    w = torch.zeros(1, 2, n + pad, n + pad)
    w[..., pad:, pad:] = random_causal_attention(1, 2, n, seed=7)           # padding rows are all zero
    mask = torch.ones(1, n + pad, dtype=torch.long)
    mask[:, :pad] = 0
    got = at.reweight(w, LAYER, LAYERS, CONFIGS["classic"], padding_mask=mask)
    assert not torch.equal(got, w) and torch.equal(got[..., :pad, :], w[..., :pad, :])
    at.reweight(w.bfloat16(), LAYER, LAYERS, CONFIGS["classic"], padding_mask=mask.bool())


def test_an_additive_padding_mask_is_refused():
    w = random_causal_attention(2, 2, N, seed=8)
    additive = torch.zeros(2, N)
    additive[0, :10] = float("-inf")
    with pytest.raises(at.InputError, match="padding_mask must hold 1/True") as err:
        at.reweight(w, LAYER, LAYERS, CONFIGS["classic"], padding_mask=additive)
    assert err.value.field == "padding_mask"
