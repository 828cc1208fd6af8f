"""The engine-neutral kernel (attn_transition.kernel) on its own: no transformers, no vLLM.

``transition_rows`` against a dense reference built from the pure schedule functions, in
float64 (a threshold flip would need a 1e-16 coincidence): every geometry an engine hands it
(left padding, a window dropping keys, a sliding window, a prefill in chunks, grouped-query
heads, attention sinks, chunks of one row).
"""

import pytest
import torch

import attn_transition as at
from attn_transition.kernel import BYTES_PER_ENTRY, Budget, Scratch, edited_spans, transition_rows
from attn_transition.schedules import apply_edit_, layer_plan

pytestmark = pytest.mark.patch          # part of the floor suite (make test-floor)

HEADS, KV_HEADS, D = 4, 2, 8
N, LAYER, LAYERS = 160, 1, 6
CONFIGS = [at.ClassicConfig(min_length=0, beta=0.5), at.SRAConfig(begin_length=4, threshold_len=24)]


def _qkv(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(HEADS, n, D, generator=g, dtype=torch.float64) * 2.5      # (heads, n, d), peaked
    k = torch.randn(KV_HEADS, n, D, generator=g, dtype=torch.float64)        # (kv_heads, n, d)
    v = torch.randn(KV_HEADS, n, D, generator=g, dtype=torch.float64)
    return q, k, v


def _reference(q, k, v, edits, *, scaling, window=None, sinks=None):
    """Dense: every row's weights over the whole prompt, edited by the schedule, times values."""
    n = q.shape[1]
    kk = k.repeat_interleave(HEADS // KV_HEADS, 0)                             # (heads, n, d)
    vv = v.repeat_interleave(HEADS // KV_HEADS, 0)
    scores = q @ kk.transpose(-1, -2) * scaling                                # (heads, n, n)
    pos = torch.arange(n)
    allowed = pos[None, :] <= pos[:, None]
    if window is not None:
        allowed &= pos[None, :] > pos[:, None] - window
    scores = scores.masked_fill(~allowed, float("-inf"))
    total = None
    if sinks is None:
        w = scores.softmax(-1)
    else:
        logits = torch.cat([scores, sinks.view(HEADS, 1, 1).expand(HEADS, n, 1)], -1)
        w = logits.softmax(-1)[..., :n].clone()
        total = w.sum(-1, keepdim=True)
    for e in edits:
        apply_edit_(w[:, e.start:e.end], e, total=None if total is None else total[:, e.start:e.end])
    w = w * allowed
    return (w @ vv).transpose(0, 1)                                           # (n, heads, d)


@pytest.mark.parametrize("config", CONFIGS, ids=["classic", "sra"])
@pytest.mark.parametrize("geometry", ["whole", "left-padded", "chunks", "window", "dropped-keys", "sinks"])
def test_edited_rows_equal_the_dense_reference(config, geometry):
    q, k, v = _qkv(N, seed=1)
    layer = 3 if geometry == "dropped-keys" else LAYER          # a layer whose edits reach rows >= 100
    edits = layer_plan(config, layer, LAYERS, N)
    assert edits, "the layer edits this prompt"
    window = 50 if geometry in ("window", "dropped-keys") else None
    sinks = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64) if geometry == "sinks" else None
    want = _reference(q, k, v, edits, scaling=0.4, window=window, sinks=sinks)
    spans = edited_spans(edits, 100 if geometry == "dropped-keys" else 0, N)
    rows = torch.zeros(N, dtype=torch.bool)
    for a, c in spans:
        rows[a:c] = True
    kw = dict(scaling=0.4, window=window, sinks=sinks)
    if geometry == "left-padded":                  # 7 padding rows/keys before the prompt
        pad = 7
        qp, kp, vp = (torch.cat([t.new_zeros(t.shape[0], pad, D), t], 1) for t in (q, k, v))
        out = torch.full((N + pad, HEADS, D), float("nan"), dtype=torch.float64)
        mask = torch.ones(N + pad, N + pad, dtype=torch.bool).tril_()       # (R, C)
        mask[:, :pad] = False
        written = transition_rows(qp, kp, vp, edits, row_start=-pad, key_start=-pad, out=out, mask=mask,
                                  scaling=0.4)
        got = out[pad:]
    elif geometry == "chunks":                     # three pieces, each seeing the keys before it
        got = torch.full((N, HEADS, D), float("nan"), dtype=torch.float64)
        written = []
        for a, c in ((0, 50), (50, 101), (101, N)):
            written += transition_rows(q[:, a:c], k[:, :c], v[:, :c], edits, row_start=a, out=got[a:c],
                                       budget=Budget(BYTES_PER_ENTRY * HEADS * N / 2**20), **kw)   # one row a chunk
    elif geometry == "dropped-keys":               # a windowed cache kept only the last keys
        first_key = 50                             # row 100 sees keys (50, 100]
        got = torch.full((N, HEADS, D), float("nan"), dtype=torch.float64)
        written = transition_rows(q[:, 100:], k[:, first_key:], v[:, first_key:], edits, row_start=100,
                                  key_start=first_key, out=got[100:], **kw)
    else:
        got = torch.full((N, HEADS, D), float("nan"), dtype=torch.float64)
        written = transition_rows(q, k, v, edits, row_start=0, out=got, scratch=Scratch(), **kw)
    covered = torch.zeros(N, dtype=torch.bool)
    for a, c in written:
        covered[a:c] = True
    assert torch.equal(covered, rows), "exactly the edited rows are written"
    assert torch.isnan(got[~rows]).all(), "no other row is touched"
    err = (got[rows] - want[rows]).abs().max()
    assert err < 1e-12, f"{geometry}: {err:.2e}"
    unedited = _reference(q, k, v, (), scaling=0.4, window=window, sinks=sinks)
    assert (unedited[rows] - want[rows]).abs().max() > 1e-3, "the edit acts"


def test_every_row_mode_and_weights_out():
    q, k, v = _qkv(N, seed=2)
    edits = layer_plan(CONFIGS[1], LAYER, LAYERS, N)
    out = torch.zeros(N, HEADS, D, dtype=torch.float64)
    weights = torch.zeros(HEADS, N, N, dtype=torch.float64)
    written = transition_rows(q, k, v, edits, row_start=0, out=out, scaling=0.4, every_row=True, weights_out=weights)
    assert written == [(0, N)]
    assert (out - _reference(q, k, v, edits, scaling=0.4)).abs().max() < 1e-12
    assert torch.allclose(weights.sum(-1)[:, :edits[0].start], torch.ones(HEADS, edits[0].start, dtype=torch.float64))


def test_bad_shapes_are_named():
    q, k, v = _qkv(N, seed=3)
    out = torch.zeros(N, HEADS, D, dtype=torch.float64)
    edits = layer_plan(CONFIGS[0], LAYER, LAYERS, N)
    for kwargs, field in [(dict(value=v[:, :10]), "value"), (dict(out=out[:5]), "out"),
                          (dict(key=k[:, :100], value=v[:, :100]), "key")]:
        args = dict(query=q, key=k, value=v, out=out) | kwargs
        with pytest.raises(at.InputError, match=f"transition_rows: {field} |transition_rows: rows up to") as err:
            transition_rows(args["query"], args["key"], args["value"], edits, row_start=0, scaling=0.4, out=args["out"])
        assert err.value.field == field


def test_budget_is_one_rule_and_validates():
    assert Budget(1).rows(heads=9, keys=4096) == 2**20 // (BYTES_PER_ENTRY * 9 * 4096)
    assert Budget(1e-9).rows(9, 4096) == 1 and Budget(None).rows(9, 4096) > 10**9
    assert Budget(1).rows_for(1000) == 2**20 // 1000
    assert Budget(1).key_block(4096, 2, 64, torch.float32) == 4096                  # no up-cast needed
    assert Budget(1).key_block(4096, 2, 64, torch.bfloat16) == 2**18 // (4 * 2 * 64)
    for bad in (0, -1, float("nan"), "64", True):
        with pytest.raises(at.ConfigError, match="Budget.mib"):
            Budget(bad)


def test_kernel_knows_nothing_about_engines():
    import ast
    import inspect

    import attn_transition.kernel as kernel

    tree = ast.parse(inspect.getsource(kernel))
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.split(".")[0] in ("transformers", "vllm")} and "patches" not in str(imported)
