"""An enabled float32 model under ``torch.autocast("cpu", dtype=torch.bfloat16)``: it runs as the
stock model does, its edited rows are float32 rows of the autocast-dtype queries, keys and values
(what stock sdpa runs on) and its output is in the autocast dtype.

The whole model is not compared with its float32 run: the thresholds amplify bfloat16's rounding
of the inputs (on this tiny model, sra under autocast is three times as far from sra in float32
as stock under autocast is from stock in float32), which is the technique's sensitivity, not a
defect of the path.

Rounding-proof: each layer's output is compared with a float64 dense reference computed from the
very bfloat16 inputs that layer received, at bfloat16's rounding of the result; rows holding a
weight within float32's reach of an edit's threshold (where float32 and float64 may decide
differently) are located and left out, and must be rare.
"""

import pytest
import torch

import attn_transition as at
from attn_transition.schedules import layer_plan
from tiny_models import N, edit_configs, ids, tiny_model

pytestmark = pytest.mark.patch          # part of the floor suite (make test-floor)

BF16 = torch.bfloat16
EPS = 2.0 ** -8                          # bfloat16's relative rounding is 2**-9; twice that
CONFIGS = dict(zip(["classic", "sra"], edit_configs()))


@pytest.fixture()
def attention_calls(monkeypatch):
    """Every call of the registered edited attention: (layer, query, key, value, scaling, output)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from attn_transition.patches.transformers.attention import register

    register()
    calls = []
    name = "attn_transition_sdpa"
    function = ALL_ATTENTION_FUNCTIONS[name]

    def spy(module, query, key, value, attention_mask, **kwargs):
        out, weights = function(module, query, key, value, attention_mask, **kwargs)
        calls.append((module.layer_idx, query, key, value, kwargs.get("scaling"), out))
        return out, weights

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, name, spy)
    return calls


def _reference(q, k, v, scaling, config, layer, num_layers):
    """Dense float64 attention of one sequence, edited by the schedule: (n, heads, dv), the unedited
    (n, heads, dv), and (heads, n) rows with a weight near a threshold of their edit."""
    heads, n, _ = q.shape
    groups = heads // k.shape[0]
    k, v = k.repeat_interleave(groups, 0), v.repeat_interleave(groups, 0)    # (heads, n, d)
    scores = (q @ k.transpose(-1, -2)) * scaling                             # (heads, n, n)
    scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    weights = scores.softmax(-1)
    edited = at.reweight(weights[None], layer, num_layers, config)[0]        # float64 in, float64 out
    near = torch.zeros(heads, n, dtype=torch.bool)
    for e in layer_plan(config, layer, num_layers, n):
        rows = weights[:, e.start:e.end]                                       # (heads, r, n)
        close = ((rows - e.threshold).abs() < 1e-5 * e.threshold).any(-1)
        close |= (rows[..., 0] / 2 - e.threshold).abs() < 1e-5 * e.threshold
        near[:, e.start:e.end] |= close
    return (edited @ v).transpose(0, 1), (weights @ v).transpose(0, 1), near


@pytest.mark.parametrize("name", list(CONFIGS))
def test_edited_rows_under_autocast_are_float32_rows_of_the_autocast_inputs(name, attention_calls, one_thread):
    config = CONFIGS[name]
    model = tiny_model("llama")
    at.enable(model, config)
    num_layers = model.config.num_hidden_layers
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
        logits = model(ids(1, N)).logits
    assert logits.dtype == BF16 and torch.isfinite(logits).all()
    assert len(attention_calls) == num_layers
    edited_layers, near_rows = 0, 0
    for layer, q, k, v, scaling, out in attention_calls:
        assert out.dtype == BF16, f"layer {layer}: the output is in the autocast dtype"
        q64, k64, v64 = (t[0].to(BF16).double() for t in (q, k, v))          # what stock sdpa runs on
        want, stock, near = _reference(q64, k64, v64, scaling, config, layer, num_layers)
        got = out[0].double()                                                # (n, heads, dv)
        scale = v64.abs().max()
        plan = layer_plan(config, layer, num_layers, N)
        rows = torch.zeros(N, dtype=torch.bool)
        for e in plan:
            rows[e.start:e.end] = True
        ok = ~near.T                                                         # (n, heads)
        err = (got - want).abs().amax(-1)                                    # (n, heads)
        # Edited rows: one rounding of a float32 result to bfloat16.
        assert (err[rows] <= EPS * scale)[ok[rows]].all(), \
            f"{name} layer {layer}: edited rows off by {err[rows][ok[rows]].max():.3g}"
        # Stock rows: bfloat16 sdpa, which rounds its weights too.
        assert (err[~rows] <= 4 * EPS * scale).all(), f"{name} layer {layer}: stock rows off by {err[~rows].max():.3g}"
        if plan:
            edited_layers += 1
            near_rows += int(near.sum())
            assert (want - stock)[rows].abs().max() > 5 * EPS * scale, "the edit moves these rows"
    assert edited_layers >= 2 and near_rows <= 0.01 * edited_layers * N * q.shape[1]


def test_output_attentions_under_autocast_are_the_edited_weights(one_thread):
    """``output_attentions`` on an sdpa model under autocast: the rows no edit touches are
    distributions, the edited ones differ from the stock model's."""
    model = tiny_model("llama")
    at.enable(model, CONFIGS["classic"])
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
        edited = model(ids(1, N), output_attentions=True).attentions[1][0].double()     # (heads, n, n)
        stock = model(ids(1, N), output_attentions=True, attn_transition=False).attentions[1][0].double()
    rows = torch.zeros(N, dtype=torch.bool)
    for e in layer_plan(CONFIGS["classic"], 1, model.config.num_hidden_layers, N):
        rows[e.start:e.end] = True
    assert rows.any() and torch.isfinite(edited).all()
    assert (edited[:, ~rows].sum(-1) - 1).abs().max() < 2e-2
    assert (edited[:, rows] - stock[:, rows]).abs().max() > 0.01
