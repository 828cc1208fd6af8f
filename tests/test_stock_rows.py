"""The base attention skips the rows every batch row recomputes (CPU): the rows it keeps equal
the base on the whole input, and an enabled model gives the same result either way."""

import pytest
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import attn_transition as at
from attn_transition.patches.transformers import attention as A
from attn_transition.patches.transformers import base_rows as B
from attn_transition.kernel import Budget
from attn_transition.patches.transformers.calls import CallGeometry, RowPrompt
from attn_transition.schedules import ClassicBlock
from tiny_models import N, edit_configs, left_padded, tiny_model

pytestmark = pytest.mark.patch          # part of the floor suite (make test-floor)

CLASSIC, SRA = edit_configs()


class _Module(torch.nn.Module):
    is_causal = True

    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.layer_idx = 0


def _qkv(batch: int, q_len: int, k_len: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    # transformers' layout: (batch, seq, heads, d) seen through a transpose
    q = torch.randn(batch, q_len, 4, 8, generator=g).transpose(1, 2)    # (batch, 4, q, 8)
    k = torch.randn(batch, k_len, 2, 8, generator=g).transpose(1, 2)    # (batch, 2, k, 8)
    v = torch.randn(batch, k_len, 2, 8, generator=g).transpose(1, 2)    # (batch, 2, k, 8)
    return q, k, v


def _kept(skip, q):
    keep = torch.ones(q, dtype=torch.bool)
    for a, c in skip:
        keep[a:c] = False
    return keep


ALWAYS = {"merged": 1.0, "mask": 1.0}                              # skip whenever any row is saved


def _without_merge(monkeypatch):
    """The fallback: rows after a skipped span through an explicit lower-right mask."""
    monkeypatch.setattr(B, "_FLASH_LSE_PROBED", True)
    monkeypatch.setattr(B, "_FLASH_LSE", None)


def test_the_merged_kernel_is_available_here():
    assert B.flash_lse() is not None, "torch's CPU flash kernel with its log-sum-exp"


@pytest.mark.parametrize("path", ["merged", "mask"])
@pytest.mark.parametrize("budget", [None, 1e-9, 0.002])
@pytest.mark.parametrize("offset", [0, 17])
def test_kept_rows_equal_the_whole_base(monkeypatch, path, budget, offset):
    """Rows [0, 64) after ``offset`` cached keys, no mask of their own (a causal call): the rows
    the base keeps equal the whole base (given the explicit causal mask as reference)."""
    monkeypatch.setattr(B, "MASKED_ENTRY_COST", ALWAYS)
    if path == "mask":
        _without_merge(monkeypatch)
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    q_len = 64
    k_len = offset + q_len
    q, k, v = _qkv(2, q_len, k_len, seed=offset)
    causal = torch.ones(q_len, k_len, dtype=torch.bool).tril_(offset)[None, None]   # (1, 1, q, k)
    whole = sdpa(_Module(2), q, k, v, causal, scaling=0.3)[0]         # (batch, q, heads, d)
    for skip in ([(0, 10)], [(10, 20), (40, 50)], [(50, 64)], [(5, 6), (7, 9), (30, 64)]):
        got = B.base_rows(sdpa, _Module(2), q, k, v, None, skip, offset=offset, scaling=0.3, softcap=None,
                           dropout=0.0, budget=Budget(budget), base_kwargs={})
        keep = _kept(skip, q_len)
        assert (got[:, keep] - whole[:, keep]).abs().max() < 1e-6, (skip, budget, offset)


def test_a_call_with_its_own_mask_keeps_its_rows_through_the_mask(monkeypatch):
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    q, k, v = _qkv(2, 64, 64, seed=1)
    mask = torch.ones(64, 64, dtype=torch.bool).tril_()[None, None].repeat(2, 1, 1, 1)   # (batch, 1, q, k)
    mask[1, :, :, :5] = False                                        # row 1: 5 left-padding keys
    mask[0, :, 40:, :8] = False                                      # row 0: a window of its own
    whole = sdpa(_Module(2), q, k, v, mask, scaling=0.3)[0]             # (batch, q, heads, dv)
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[1].shape[2])                               # query rows of the call
        return sdpa(*args, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", counted)    # _base_rows checks the registry
    skip = [(30, 40), (50, 60)]
    got = B.base_rows(counted, _Module(2), q, k, v, mask, skip, offset=0, scaling=0.3, softcap=None,
                       dropout=0.0, budget=Budget(), base_kwargs={})
    keep = _kept(skip, 64)
    assert calls == [30, 10, 4], calls                               # only the kept rows, with their mask rows
    torch.testing.assert_close(got[:, keep], whole[:, keep], atol=1e-6, rtol=0, equal_nan=True)
    # A mask broadcast over the query rows cannot be sliced by row: the whole base.
    calls.clear()
    flat = torch.ones(2, 1, 1, 64, dtype=torch.bool)
    B.base_rows(counted, _Module(2), q, k, v, flat, skip, offset=0, scaling=0.3, softcap=None,
                 dropout=0.0, budget=Budget(), base_kwargs={})
    assert calls == [64]


def test_rows_are_skipped_only_where_that_saves_work(monkeypatch):
    _without_merge(monkeypatch)                                      # the mask path: 1.75x per entry
    # Skipping 20 rows would put the 34 rows after them on the masked path: not worth it.
    assert B.worth_skipping([(10, 30)], 64, 0, merged=False) == []
    # Late rows skipped, a few rows after them: worth it; a trailing span costs nothing.
    assert B.worth_skipping([(30, 60)], 64, 0, merged=False) == [(30, 60)]
    assert B.worth_skipping([(40, 64)], 64, 0, merged=False) == [(40, 64)]
    # An early span not worth its masked rows is run; the later ones are still left out.
    assert B.worth_skipping([(2, 4), (40, 50), (60, 64)], 64, 0, merged=False) == [(40, 50), (60, 64)]
    # merged: nearly stock price
    assert B.worth_skipping([(10, 30)], 64, 0, merged=True) == [(10, 30)]     # 410 entries saved, 81 extra
    assert B.worth_skipping([(1, 2)], 64, 0, merged=True) == []                # 2 saved, 104 extra


def test_half_precision_and_mla_rows_are_not_merged():
    q, _, v = _qkv(1, 8, 8, seed=0)
    assert B.merges(q, v) and not B.merges(q.to(torch.bfloat16), v.to(torch.bfloat16))
    assert not B.merges(q, v[..., :4])                              # values narrower than queries (MLA)


def test_whole_base_when_nothing_is_worth_skipping(monkeypatch):
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    calls = []
    monkeypatch.setattr(B, "causal_rows", lambda *a, **k: calls.append(a))
    q, k, v = _qkv(1, 64, 64, seed=3)
    whole = sdpa(_Module(2), q, k, v, None, scaling=0.3)[0]
    got = B.base_rows(sdpa, _Module(2), q, k, v, None, [(1, 2)], offset=0, scaling=0.3, softcap=None,
                       dropout=0.0, budget=Budget(), base_kwargs={})
    assert not calls and torch.equal(got, whole)


def test_rows_all_edit_is_the_intersection_over_the_batch():
    plan = (ClassicBlock(10, 20, 0.1, 0.1, "adding"), ClassicBlock(20, 30, 0.1, 0.1, "adding"))
    short = (ClassicBlock(5, 12, 0.1, 0.1, "adding"),)
    rows = (RowPrompt(0, 40, 40), RowPrompt(4, 40, 36), RowPrompt(0, 40, 40))
    call = CallGeometry(CLASSIC, 3, 40, 0, rows)
    # row 0: [10, 30); row 1 (first real token at 4): [14, 34); row 2: [5, 12)
    assert A.rows_all_edit(call, [plan, plan, plan]) == [(14, 20), (20, 24), (24, 30)]
    assert A.rows_all_edit(call, [plan, plan, short]) == []
    assert A.rows_all_edit(call, [plan, (), plan]) == []
    # A chunk of a prompt: rows before the chunk are not in it, local indices count from its start.
    chunk = CallGeometry(CLASSIC, 1, 15, 15, (RowPrompt(0, 30, 40),))
    assert A.rows_all_edit(chunk, [plan]) == [(0, 5), (5, 15)]


# One row without padding (no mask: causal kernel and merged rows; mistral's sliding window brings a
# mask of its own) and a left-padded batch (a mask on every call: the kept rows go through the
# masked kernel with their rows of the mask).
@pytest.mark.parametrize("family", ["llama", "gemma3_text", "mistral"])
@pytest.mark.parametrize("config", [CLASSIC, SRA], ids=["classic", "sra"])
@pytest.mark.parametrize("batch,pad", [(1, 0), (2, 6)], ids=["one-row", "padded"])
def test_model_equal_with_and_without_skipping(monkeypatch, family, config, batch, pad):
    model = tiny_model(family)
    x, mask = left_padded(batch, N, row=batch - 1, pad=pad, seed=4)
    skipped = []
    real = B.rows_to_skip

    def spy(*args, **kwargs):                                        # the rows the base really leaves out
        spans, masked = real(*args, **kwargs)
        skipped.append(bool(spans))
        return spans, masked

    monkeypatch.setattr(B, "rows_to_skip", spy)
    monkeypatch.setattr(B, "MASKED_ENTRY_COST", ALWAYS)             # skip wherever a row is saved
    at.enable(model, config)
    try:
        with torch.no_grad():
            skipping = model(x, attention_mask=mask).logits
            assert any(skipped), "some layer must skip rows"
            monkeypatch.setattr(A, "rows_all_edit", lambda *a: [])  # the base on every row
            whole = model(x, attention_mask=mask).logits
    finally:
        at.disable(model)
    assert torch.isfinite(skipping).all()
    assert (skipping - whole).abs().max() < 1e-5, (family, config, (skipping - whole).abs().max())
