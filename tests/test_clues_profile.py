"""Attention profile: equals a direct computation from output_attentions, is not a function of
position alone, keeps the model's outputs, restores the attention implementation."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from attn_transition.errors import UsageError
from attn_transition.evaluation.clues import profile as P
from test_clues_support import char_tokenizer, tiny_llama


def _attentions(model, ids):
    """Every layer's (heads, n, n) weights from a plain eager forward with output_attentions."""
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_attentions=True)
    return torch.stack([a[0] for a in out.attentions]).double(), out.logits   # (L, H, n, n)


def _direct(A, layers=None, heads=None, reduce="mean"):
    """profile[j] = mean_{l,h} mean_{i>j} A[l,h,i,j] (or max over (l,h)), by a plain loop."""
    L, H, n, _ = A.shape
    layers = range(L) if layers is None else layers
    heads = range(H) if heads is None else heads
    out = []
    for j in range(n):
        if j == n - 1:
            out.append(math.nan)
            continue
        per_pair = [A[l, h, j + 1:, j].mean().item() for l in layers for h in heads]
        out.append(sum(per_pair) / len(per_pair) if reduce == "mean" else max(per_pair))
    return out


def _ids(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 90, (n,), generator=g).tolist()


@pytest.mark.parametrize("config, layers, heads", [
    (P.ProfileConfig(), None, None),
    (P.ProfileConfig(layers="1:3"), range(1, 3), None),
    (P.ProfileConfig(layers="-1", heads=(0, 3)), range(3, 4), (0, 3)),
    (P.ProfileConfig(reduce="max", query_chunk=7), None, None),
])
def test_profile_equals_direct_computation_from_output_attentions(config, layers, heads):
    model = tiny_llama(97, seed=1)
    ids = _ids(41, seed=2)
    A, _ = _attentions(model, ids)
    expected = _direct(A, layers, heads, config.reduce)
    got = P.profile_ids(model, ids, config)
    assert len(got) == len(ids)
    assert math.isnan(got[-1]) and math.isnan(expected[-1])
    diffs = [abs(a - b) for a, b in zip(got[:-1], expected[:-1])]
    assert max(diffs) < 1e-6, f"largest difference {max(diffs)} at token {diffs.index(max(diffs))}"


def test_profile_is_not_a_function_of_position_alone():
    """The trap: a statistic of each token's *row* is 1/(i+1)-like for every text and model.
    The profile must differ between texts and between models at the same positions."""
    model_a, model_b = tiny_llama(97, seed=1), tiny_llama(97, seed=5)
    ids_1, ids_2 = _ids(30, seed=3), _ids(30, seed=4)
    p_a1 = P.profile_ids(model_a, ids_1)
    p_a2 = P.profile_ids(model_a, ids_2)
    p_b1 = P.profile_ids(model_b, ids_1)
    text_gap = max(abs(x - y) for x, y in zip(p_a1[:-1], p_a2[:-1]))
    model_gap = max(abs(x - y) for x, y in zip(p_a1[:-1], p_b1[:-1]))
    assert text_gap > 1e-3, f"profiles of two texts agree at every position (max gap {text_gap})"
    assert model_gap > 1e-3, f"profiles of two models agree at every position (max gap {model_gap})"
    # The row-based statistic really is position-only (so the test above can tell them apart):
    A1, _ = _attentions(model_a, ids_1)
    A2, _ = _attentions(model_b, ids_2)
    assert torch.allclose(A1.sum(-1), A2.sum(-1), atol=1e-6)


def test_profiling_keeps_outputs_and_restores_the_implementation():
    model = tiny_llama(97, seed=1, attn_implementation="sdpa")
    ids = torch.tensor([_ids(25, seed=6)])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    P.register()
    P._ACTIVE = P._Collector(25, range(4), None, "mean")
    try:
        with P.profiling(model):
            assert model.config._attn_implementation == P.IMPLEMENTATION
            with torch.no_grad():
                during = model(input_ids=ids).logits
    finally:
        P._ACTIVE = None
    assert model.config._attn_implementation == "sdpa"
    assert torch.allclose(before, during, atol=1e-5), (before - during).abs().max()
    # also after an error inside the block
    with pytest.raises(RuntimeError):
        with P.profiling(model):
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    assert not model.training


def test_attention_profile_from_text_and_truncation():
    tok = char_tokenizer()
    model = tiny_llama(len(tok), seed=2)
    prof = P.attention_profile(model, tok, "Ann was born in Leeds.")
    assert prof.tokens[0] == "A" and len(prof.profile) == len(prof.input_ids) == len(prof.offsets)
    assert not prof.truncated and math.isnan(prof.profile[-1])
    assert all(v > 0 for v in prof.profile[:-1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        short = P.attention_profile(model, tok, "Ann was born in Leeds.", P.ProfileConfig(max_length=5))
    assert short.truncated and len(short.profile) == 5
    assert any("truncated" in str(w.message) or "longer than" in str(w.message) for w in caught)
    with pytest.raises(UsageError, match="empty"):
        P.attention_profile(model, tok, "   ")


@pytest.mark.parametrize("kwargs, match", [
    ({"reduce": "median"}, "reduce"), ({"heads": (-1,)}, "heads"), ({"heads": (1, 1)}, "repeated"),
    ({"max_length": 1}, "max_length"), ({"query_chunk": 0}, "query_chunk"), ({"layers": "1:x"}, "start:stop"),
])
def test_profile_config_validation(kwargs, match):
    with pytest.raises(UsageError, match=match):
        P.ProfileConfig(**kwargs)


def test_parse_layers_and_bad_heads():
    assert list(P.parse_layers(None, 6)) == list(range(6))
    assert list(P.parse_layers("2:4", 6)) == [2, 3]
    assert list(P.parse_layers(":-2", 6)) == [0, 1, 2, 3]
    assert list(P.parse_layers("-1", 6)) == [5]
    with pytest.raises(UsageError, match="selects no layer"):
        P.parse_layers("7:9", 6)
    with pytest.raises(UsageError, match="start:stop"):
        P.parse_layers("a:b", 6)
    model = tiny_llama(97, seed=1)
    with pytest.raises(UsageError, match="out of range"):
        P.profile_ids(model, _ids(10, 1), P.ProfileConfig(heads=(9,)))
    assert model.config._attn_implementation == "eager"        # restored after the error
