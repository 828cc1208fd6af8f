"""The schedules against an independent loop-by-loop reading of the specification.

The library edits float32 weights (``reweight`` computes in float32) and the reading computes in
float64. Their elimination decisions are the same (the library compares as the float32 tensor
rounds the threshold, ``_below``), but the ``m`` weights and SRA's selection compare a float32
tensor with the threshold rounded to float32, where the reading compares with the threshold
itself: a weight within one float32 step of a threshold may be judged on either side, and its
row may then differ by much more than rounding. Such rows are located (``_near_threshold``) and
are the only ones allowed off ATOL; every other row must agree to ATOL (float32 rounding of the
sums). Comparisons of two library paths run in float64 instead.
"""

import math

import pytest
import torch

import attn_transition as at
from attn_transition.schedules import (ClassicBlock, SpanRedistribution, apply_edit_, classic_block_, layer_plan,
                                      redistribute_)
from spec_oracle import (classic_block_row, classic_blocks, oracle_reweight, random_causal_attention, redistribute_row,
                         sra_steps)

ATOL = 2e-6
NEAR = 1e-6          # relative distance to a threshold within which float32 and float64 may judge differently

pytestmark = pytest.mark.patch          # part of the floor suite (make test-floor)


def _near(w: torch.Tensor, t: float) -> torch.Tensor:
    """Entries of ``w`` (or its halved first column, which classic compares too) within NEAR of ``t``
    (none when float32 holds ``t`` exactly: both readings then judge every weight alike)."""
    if float(torch.tensor(t, dtype=torch.float32)) == t:
        return torch.zeros(w.shape, dtype=torch.bool)
    close = (w - t).abs() <= NEAR * t
    close[..., 0] |= (w[..., 0] / 2 - t).abs() <= NEAR * t
    return close


def _near_threshold(w: torch.Tensor, cfg, layer: int, L: int) -> torch.Tensor:
    """(batch, heads, n): rows holding a weight a float32 comparison may put on the other side
    of one of their edit's thresholds than a float64 one."""
    near = torch.zeros(w.shape[:-1], dtype=torch.bool)
    for edit in layer_plan(cfg, layer, L, w.shape[-1]):
        near[..., edit.start:edit.end] |= _near(w[..., edit.start:edit.end, :edit.end], edit.threshold).any(-1)
    return near


def _assert_equal_but_flips(got, want, near, what) -> None:
    """``got`` equals ``want`` to ATOL on every row, except rows ``near`` a threshold (located)."""
    off = (got - want).abs().amax(-1) >= ATOL                                    # (..., rows)
    stray = off & ~near
    assert not stray.any(), (f"{what}: rows off by more than {ATOL} with no weight near a threshold: "
                             f"{stray.nonzero().tolist()[:5]}, max error {(got - want).abs().max().item()}")
    assert near.float().mean() < 0.01, f"{what}: {int(near.sum())} rows near a threshold (a flip test, not a check)"


def _check(cfg, n, L, layers=None, *, batch=1, heads=2, seed=0, peaky=3.0):
    w = random_causal_attention(batch, heads, n, seed=seed, peaky=peaky)
    edited_any = False
    for layer in (range(L) if layers is None else layers):
        got = at.reweight(w, layer, L, cfg)
        want = oracle_reweight(w, layer, L, cfg).float()
        assert got.dtype == w.dtype and got.shape == w.shape
        _assert_equal_but_flips(got, want, _near_threshold(w, cfg, layer, L), f"{cfg} n={n} L={L} layer={layer}")
        edited_any |= not torch.equal(got, w)
    return edited_any


CLASSIC_CASES = [
    # (config kwargs, n, L)
    (dict(min_length=0), 200, 8),
    (dict(min_length=0, alpha=1.0, beta=0.5, intervals_per_layer=1), 173, 6),
    (dict(min_length=0, alpha=1.5, beta=1.2, intervals_per_layer=3), 256, 7),
    (dict(min_length=0, alpha=0.5, beta=0.8, intervals_per_layer=4), 311, 9),
    (dict(min_length=0, strategy="multi"), 200, 8),
    (dict(min_length=0, strategy="multi", alpha=1.5, intervals_per_layer=1), 150, 5),
    (dict(), 400, 6),                         # exactly the default min_length: edited
    (dict(alpha=1.0, beta=1.5, intervals_per_layer=2), 405, 6),
]


@pytest.mark.parametrize("kwargs,n,L", CLASSIC_CASES)
def test_classic_matches_spec(kwargs, n, L):
    assert _check(at.ClassicConfig(**kwargs), n, L), "the case should edit at least one layer"


SRA_CASES = [
    (dict(begin_length=5, threshold_len=20), 120, 6),
    (dict(begin_length=5, threshold_len=50, elimi_factor_outer=0.5, strengthen_factor_inter=5.0,
          strengthen_factor_outer=5.0), 260, 8),                    # the reference demo's settings
    (dict(begin_length=10, threshold_len=30, inter=False), 150, 5),
    (dict(begin_length=10, threshold_len=30, outer=False), 150, 5),
    (dict(begin_length=3, dynamic_threshold=True, dyna_div=7), 140, 6),
    (dict(begin_length=0, threshold_len=10, elimi_factor_inter=0.0, elimi_factor_outer=0.1), 90, 4),
    (dict(), 340, 6),                          # reference defaults on a prompt long enough for both steps
]


@pytest.mark.parametrize("kwargs,n,L", SRA_CASES)
def test_sra_matches_spec(kwargs, n, L):
    assert _check(at.SRAConfig(**kwargs), n, L, peaky=2.0), "the case should edit at least one layer"


@pytest.mark.parametrize("alpha,beta,strategy", [(0.5, 0.1, "adding"), (1.0, 0.8, "adding"), (1.5, 0.3, "multi")])
def test_block_with_start_equal_to_width(alpha, beta, strategy):
    """The ``s == I`` branch (never reached by the schedule itself) against the spec."""
    w = random_causal_attention(1, 3, 60, seed=4)
    s, e = 20, 40
    got = w[0, :, s:e, :].clone()
    classic_block_(got, s, e, alpha / e, beta, strategy)
    want = w[0, :, s:e, :].double().numpy().copy()
    for h in range(3):
        for i in range(e - s):
            classic_block_row(want[h, i], s, e, alpha, beta, strategy)
    near = _near(w[0, :, s:e, :e], alpha / e).any(-1)                           # (heads, rows)
    _assert_equal_but_flips(got, torch.from_numpy(want).float(), near, (alpha, beta, strategy))


def test_classic_blocks_reduce_to_the_32_layer_reference():
    """For L = 32: 31 + k intervals, layers 1..29 edited, interval a multiple of 5."""
    cfg = at.ClassicConfig()                     # k = 2
    n = 1200
    interval = (n // 33) - (n // 33) % 5         # 36 -> 35
    assert interval == 35
    edited = [layer for layer in range(32) if layer_plan(cfg, layer, 32, n)]
    assert edited == list(range(1, 30))
    plan = layer_plan(cfg, 29, 32, n)
    assert [(b.start, b.end) for b in plan] == [(30 * 35, 31 * 35), (31 * 35, 32 * 35)]
    assert all(isinstance(b, ClassicBlock) and b.threshold == pytest.approx(0.5 / b.end) for b in plan)
    for layer in range(32):
        assert [(b.start, b.end) for b in layer_plan(cfg, layer, 32, n)] == classic_blocks(n, layer, 32, 0.5, 0.1, 2, 400)


@pytest.mark.parametrize("n,expect_edit", [(399, False), (400, True)])
def test_classic_min_length_boundary(n, expect_edit):
    cfg = at.ClassicConfig()
    w = random_causal_attention(1, 1, n, seed=1)
    assert bool(layer_plan(cfg, 3, 12, n)) is expect_edit
    got = at.reweight(w, 3, 12, cfg)
    assert torch.equal(got, w) is (not expect_edit)


def test_classic_interval_rounding_to_zero_leaves_layer_alone():
    cfg = at.ClassicConfig(min_length=0)
    # n // (L - 1 + k) = 4 -> rounds down to 0
    L, k = 8, 2
    n = 4 * (L - 1 + k) + 3
    assert layer_plan(cfg, 2, L, n) == ()
    assert layer_plan(cfg, 2, L, 5 * (L - 1 + k)) != ()


def test_sra_inter_boundary():
    cfg = at.SRAConfig(begin_length=10, threshold_len=20, outer=False)
    limit = 10 + 20 + 3
    L = 6
    assert all(layer_plan(cfg, layer, L, limit) == () for layer in range(L))
    # one token more: c = 1, the inter span has width 1 for the layers whose span still fits
    plans = [layer_plan(cfg, layer, L, limit + 1) for layer in range(L)]
    spans = [(p[0].start, p[0].end) for p in plans if p]
    assert spans == [((layer + 3) + 13, (layer + 3) + 14) for layer in range(L - 1) if (layer + 3) + 14 <= limit + 1 - 20]
    # and those are exactly the spec's spans
    for layer in range(L):
        assert [(s.start, s.end) for s in layer_plan(cfg, layer, L, limit + 1)] == \
            [(r0, r1) for r0, r1, *_ in sra_steps(limit + 1, layer, L, cfg)]


def test_sra_outer_boundary_and_layers():
    cfg = at.SRAConfig(begin_length=0, threshold_len=20, inter=False)
    L = 6
    assert all(layer_plan(cfg, layer, L, 23) == () for layer in range(L))      # n <= thr + 3
    edited = [layer for layer in range(L) if layer_plan(cfg, layer, L, 200)]
    assert edited == [1, 2, 3, 4]                 # never layer 0 (outer) nor the last layer
    step = layer_plan(cfg, 2, L, 200)[0]
    assert isinstance(step, SpanRedistribution) and (step.start, step.end) == (180, 200)
    c = math.ceil((200 - 20 - 3) / (L + 3))
    assert (step.target_start, step.target_end) == (4 * c + 3, min(5 * c + 3, 180))
    assert step.threshold == pytest.approx(0.3 / 180)


def test_dynamic_threshold_uses_current_input():
    cfg = at.SRAConfig(begin_length=0, dynamic_threshold=True, dyna_div=10, inter=False)
    for n in (100, 300):
        step = layer_plan(cfg, 1, 6, n)[0]
        assert step.start == n - n // 10


def test_padding_mask_rows_match_unpadded():
    cfg = at.ClassicConfig(min_length=0)
    n, pad = 180, 37
    w = random_causal_attention(1, 2, n, seed=9)
    padded = torch.zeros(1, 2, n + pad, n + pad)
    padded[..., pad:, pad:] = w
    mask = torch.zeros(1, n + pad, dtype=torch.long)
    mask[:, pad:] = 1
    batch_w = torch.cat([padded, random_causal_attention(1, 2, n + pad, seed=3)])
    batch_mask = torch.cat([mask, torch.ones_like(mask)])
    got = at.reweight(batch_w, 2, 6, cfg, padding_mask=batch_mask)
    alone = at.reweight(w, 2, 6, cfg)
    assert torch.equal(got[0, :, pad:, pad:], alone[0])
    assert torch.equal(got[0, :, :pad], batch_w[0, :, :pad])                # padding rows untouched
    want_full = oracle_reweight(batch_w, 2, 6, cfg, lengths=[n, n + pad]).float()
    near = torch.zeros(got.shape[:-1], dtype=torch.bool)                        # (batch, heads, rows)
    near[0, :, pad:] = _near_threshold(w, cfg, 2, 6)[0]
    near[1] = _near_threshold(batch_w[1:], cfg, 2, 6)[0]
    _assert_equal_but_flips(got, want_full, near, "padded batch")


def test_allowed_mask_keeps_weights_inside_window():
    cfg = at.ClassicConfig(min_length=0, beta=1.0)
    n, window = 240, 30
    w = random_causal_attention(1, 2, n, seed=5)
    i = torch.arange(n)
    allowed = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window)
    w = w * allowed
    w = w / w.sum(-1, keepdim=True)
    got = at.reweight(w, 2, 6, cfg, allowed=allowed)
    assert not torch.equal(got, w)
    assert got[..., ~allowed].abs().max() == 0


@pytest.mark.parametrize("args, kwargs, field", [
    ((torch.rand(1, 1, 4, 5), 1, 6), {}, "weights"),                       # not square
    ((torch.rand(1, 4, 4), 1, 6), {}, "weights"),                          # not 4D
    ((torch.ones(1, 1, 4, 4, dtype=torch.int64), 1, 6), {}, "weights"),    # not probabilities
    ((torch.rand(1, 1, 4, 4), -1, 6), {}, "layer_idx"),
    ((torch.rand(1, 1, 4, 4), 6, 6), {}, "layer_idx"),
    ((torch.rand(1, 1, 4, 4), 1.0, 6), {}, "layer_idx"),
    ((torch.rand(1, 1, 4, 4), 0, 0), {}, "num_layers"),
    ((torch.rand(2, 1, 4, 4), 1, 6), {"padding_mask": torch.ones(1, 4)}, "padding_mask"),
    ((torch.rand(2, 1, 4, 4), 1, 6), {"allowed": torch.ones(3, 4, dtype=torch.bool)}, "allowed"),
])
def test_reweight_names_the_bad_argument(args, kwargs, field):
    """Library errors, not asserts (which ``python -O`` removes): each names its argument."""
    with pytest.raises(at.InputError, match=rf"reweight: {field} ") as err:
        at.reweight(*args, at.ClassicConfig(), **kwargs)
    assert err.value.field == field and isinstance(err.value, at.AttnTransitionError)
    with pytest.raises(at.ConfigError, match="config must be"):
        at.reweight(torch.rand(1, 1, 4, 4), 1, 6, {"alpha": 1})


def test_reweight_bfloat16_is_edited_in_float32():
    cfg = at.ClassicConfig(min_length=0)
    w = random_causal_attention(1, 2, 160, seed=2)
    got = at.reweight(w.bfloat16(), 2, 6, cfg)
    assert got.dtype == torch.bfloat16
    want = at.reweight(w.bfloat16().float(), 2, 6, cfg).bfloat16()
    assert torch.equal(got, want)


def test_sra_unselected_rows_are_bitwise_unchanged():
    """A (head, row) pair with nothing above the threshold in the target is not edited at all."""
    w = random_causal_attention(1, 4, 120, seed=6, peaky=2.0)[0, :, 80:100]     # (heads, 20, 120)
    rows = w.clone()
    t = 0.05
    redistribute_(rows, 10, 30, t, 4.0)
    selected = (w[..., 10:30] > t).any(-1)                                       # (heads, 20)
    assert selected.any() and (~selected).any(), "the case needs both kinds of rows"
    assert torch.equal(rows[~selected], w[~selected])
    want = w.double().numpy().copy()
    for h in range(w.shape[0]):
        for i in range(w.shape[1]):
            redistribute_row(want[h, i], 10, 30, t, 4.0)
    _assert_equal_but_flips(rows, torch.from_numpy(want).float(), _near(w, t).any(-1), "redistribute_")


@pytest.mark.parametrize("config", [at.ClassicConfig(min_length=0, beta=0.8), at.SRAConfig(begin_length=5,
                                                                                         threshold_len=30)])
def test_each_edit_needs_only_the_keys_before_its_end(config):
    """The patch computes an edit's rows over keys [0, end) only; on causal rows that is the same edit
    (two library paths: in float64, to rounding)."""
    n, L = 240, 8
    w = random_causal_attention(1, 2, n, seed=8)[0].double()                     # (heads, n, n)
    edited = 0
    for layer in range(L):
        for edit in layer_plan(config, layer, L, n):
            full = w[:, edit.start:edit.end].clone()                             # (heads, I, n)
            short = w[:, edit.start:edit.end, :edit.end].clone()                 # (heads, I, end)
            apply_edit_(full, edit)
            apply_edit_(short, edit)
            # equal up to the order of the row sums' additions
            assert (full[..., :edit.end] - short).abs().max() < 1e-12, edit
            assert not full[..., edit.end:].any()                              # causal zeros stay zero
            edited += 1
    assert edited > 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_elimination_boundary_is_exact(dtype):
    """Weights exactly at the threshold (as the tensor's dtype rounds it) stay, one step below goes:
    the one-pass elimination keeps the spec's strict ``w < threshold``."""
    s, e = 8, 12
    t = 1.0 / 3.0 / e                                    # alpha / e, not exactly representable
    at_t = torch.tensor(t, dtype=dtype)
    below = torch.nextafter(at_t, torch.tensor(0.0, dtype=dtype))
    above = torch.nextafter(at_t, torch.tensor(1.0, dtype=dtype))
    rows = torch.zeros(1, 4, e, dtype=dtype)             # (heads, r, e): rows [8, 12) of the block
    rows[..., 0] = 0.5
    rows[..., 1], rows[..., 2], rows[..., 3] = at_t, below, above
    classic_block_(rows, s, e, t, 0.0)                   # beta = 0: elimination and halving only
    assert rows[0, :, 1].eq(at_t).all() and rows[0, :, 3].eq(above).all(), rows[0, 0, :4]
    assert rows[0, :, 2].eq(0).all(), rows[0, 0, :4]
    # SRA: the same boundary in a selected row; an unselected row keeps its weak weights.
    rows = torch.zeros(2, 1, e, dtype=dtype)             # (heads, 1, e)
    rows[..., 0], rows[..., 5], rows[..., 6] = at_t, below, above
    rows[1, 0, 6] = below                                # head 1: nothing strictly above t in the target
    redistribute_(rows, 6, 8, float(at_t), 0.0)
    assert rows[0, 0, 0].eq(at_t) and rows[0, 0, 5].eq(0) and rows[0, 0, 6].eq(above), rows[0, 0, :8]
    assert rows[1, 0, 0].eq(at_t) and rows[1, 0, 5].eq(below) and rows[1, 0, 6].eq(below), rows[1, 0, :8]
