"""Every setting a model is put in: the per-call switch, compile, gradients, copies, an
implementation changed by hand, train mode with attention dropout.

Every comparison of two computational paths of edited results runs in float64 (TOL): the
schedules' thresholds are discontinuous, so in float32 two paths that round differently by
1e-7 (compiled vs eager, sdpa vs eager base) can flip an entry and move the logits by 1e-3;
in float64 a flip needs a 1e-16 coincidence. Same-path repeats are compared bitwise."""

import copy
import pickle
import warnings

import pytest
from skips import need
import torch

import attn_transition as at
from tiny_models import N, edit_configs, logits as _logits, ids, reweight64, tiny_model

pytestmark = pytest.mark.patch          # part of the floor suite (make test-floor)

CLASSIC, SRA = edit_configs()
TOL = 1e-9
F64 = torch.float64


def _edited(config, x, family="llama", dtype=None):
    model = tiny_model(family, dtype=dtype)
    at.enable(model, config)
    return _logits(model, x)


# --- the per-call switch -------------------------------------------------------------------

def test_inactive_patch_is_stock_until_a_call_asks():
    model = tiny_model("llama")
    x = ids(2, N, seed=1)
    stock = _logits(model, x)
    at.enable(model, CLASSIC, active=False)
    assert at.is_enabled(model)
    assert torch.equal(_logits(model, x), stock)
    on = _logits(model, x, attn_transition=True)
    assert torch.equal(on, _edited(CLASSIC, x))
    assert not torch.allclose(on, stock, atol=1e-4)
    assert torch.equal(_logits(model, x), stock), "the next call without the switch is stock again"
    at.disable(model)


def test_per_call_config_object_and_string():
    model = tiny_model("llama")
    x = ids(1, N, seed=2)
    at.enable(model, CLASSIC)
    assert torch.equal(_logits(model, x, attn_transition=SRA), _edited(SRA, x))
    assert torch.equal(_logits(model, x, attn_transition="sra:begin_length=4,threshold_len=24"), _edited(SRA, x))
    assert torch.equal(_logits(model, x), _edited(CLASSIC, x)), "the model's own config is unchanged"
    with pytest.raises(at.ConfigError, match="attn_transition must be"):
        _logits(model, x, attn_transition=3)
    at.disable(model)


def test_generate_can_switch_the_edit_on():
    model = tiny_model("llama")
    x = ids(2, N, seed=3)
    gen = dict(max_new_tokens=4, do_sample=False, pad_token_id=0, return_dict_in_generate=True, output_logits=True)
    at.enable(model, CLASSIC)
    want = model.generate(x, **gen)
    want_sra = model.generate(x, attn_transition=SRA, **gen)
    at.enable(model, CLASSIC, active=False)
    stock = model.generate(x, **gen)
    on = model.generate(x, attn_transition=True, **gen)
    sra = model.generate(x, attn_transition=SRA, **gen)
    at.disable(model)
    assert not torch.allclose(stock.logits[0], want.logits[0], atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(on.logits, want.logits))
    assert all(torch.equal(a, b) for a, b in zip(sra.logits, want_sra.logits))


# --- torch.compile -------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compiled_model_is_right_and_follows_config_changes(backend):
    torch._dynamo.reset()
    model = tiny_model("llama", dtype=F64)
    x = ids(1, N, seed=4)
    stock = _logits(model, x)
    compiled = torch.compile(model, backend=backend)
    for config in (CLASSIC, SRA):
        at.enable(model, config)
        got = _logits(compiled, x)
        want = _logits(model, x)
        assert (got - want).abs().max() < TOL, (backend, config)
        assert not torch.allclose(got, stock, atol=1e-4)
    at.disable(model)
    assert (_logits(compiled, x) - stock).abs().max() < TOL
    at.enable(model, CLASSIC)
    assert (_logits(compiled, x) - _edited(CLASSIC, x, dtype=F64)).abs().max() < TOL, "re-enabled after disable"
    at.disable(model)


# --- gradients -----------------------------------------------------------------------------

@pytest.mark.parametrize("config", [CLASSIC, SRA], ids=["classic", "sra"])
def test_backward_through_an_enabled_model(config):
    """loss.backward() works, the gradient is the edited model's (not stock's) and equals the
    full-matrix path's."""
    x = ids(1, N, seed=5)

    def grads(full_matrix=None):
        model = tiny_model("llama").double()
        if full_matrix is not None:
            at.enable(model, config, full_matrix=full_matrix)
        model(x).logits.pow(2).mean().backward()
        return torch.cat([p.grad.flatten() for n, p in model.named_parameters() if "self_attn" in n])

    rows, full, stock = grads(False), grads(True), grads(None)
    assert torch.isfinite(rows).all() and rows.abs().max() > 0
    assert (rows - full).abs().max() <= 1e-8 * full.abs().max(), "rows path and full-matrix path disagree"
    assert (rows - stock).abs().max() > 1e-3 * stock.abs().max(), "the edit must be differentiated"


@pytest.mark.parametrize("config", [CLASSIC, SRA], ids=["classic", "sra"])
@pytest.mark.parametrize("budget", [None, 1e-9], ids=["whole", "one-row-chunks"])
def test_attention_gradient_matches_finite_differences(config, budget):
    """float64 queries, keys, values through the registered function: autograd equals a central
    difference along random directions (the edit is piecewise smooth; eps keeps off the kinks)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = tiny_model("llama").double()
    at.enable(model, config, max_chunk_mib=budget)
    module = model.model.layers[2].self_attn
    fn = ALL_ATTENTION_FUNCTIONS[model.config._attn_implementation]
    g = torch.Generator().manual_seed(3)
    inputs = [(torch.randn(1, h, N, 8, generator=g, dtype=torch.float64) * 2).requires_grad_() for h in (4, 2, 2)]

    def loss(q, k, v):
        out, _ = fn(module, q, k, v, None, scaling=1.0)
        return out.pow(2).sum()

    loss(*inputs).backward()
    assert inputs[0].grad.abs().max() > 0
    at.enable(model, config, max_chunk_mib=budget)      # a fresh plan: the function is called on its own
    for trial in range(3):
        dirs = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in inputs]
        analytic = sum((t.grad * d).sum() for t, d in zip(inputs, dirs))
        eps = 1e-6
        with torch.no_grad():
            plus = loss(*[t + eps * d for t, d in zip(inputs, dirs)])
            minus = loss(*[t - eps * d for t, d in zip(inputs, dirs)])
        numeric = (plus - minus) / (2 * eps)
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(float(analytic))), (trial, float(numeric), float(analytic))
    at.disable(model)


def test_lora_training_step_on_an_enabled_model():
    peft = need("peft", "make setup; not in the floor environment")
    model = tiny_model("llama")
    at.enable(model, CLASSIC)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    x = ids(2, N, seed=6)
    opt = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(3):
        out = lora(input_ids=x, labels=x)
        losses.append(out.loss.detach().item())
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < losses[0], losses


# --- copies --------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_is_enabled_for_real(how):
    model = tiny_model("llama")
    x = ids(1, N, seed=7)
    stock = _logits(model, x)
    at.enable(model, CLASSIC)
    edited = _logits(model, x)
    twin = copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model))
    assert at.is_enabled(twin)
    assert torch.equal(_logits(twin, x), edited)
    at.disable(twin)
    assert torch.equal(_logits(twin, x), stock)
    assert torch.equal(_logits(model, x), edited), "disabling the copy leaves the original enabled"
    at.enable(twin, SRA)
    assert torch.equal(_logits(twin, x), _edited(SRA, x))
    assert torch.equal(_logits(model, x), edited)
    at.disable(model)


def test_implementation_changed_by_hand_is_detected():
    model = tiny_model("llama", dtype=F64)
    x = ids(1, N, seed=8)
    at.enable(model, CLASSIC)
    edited = _logits(model, x)
    model.set_attn_implementation("eager")
    assert not at.is_enabled(model)
    with pytest.warns(UserWarning, match="changed by hand"):
        at.enable(model, CLASSIC)
    assert at.is_enabled(model) and model.config._attn_implementation == "attn_transition_eager"
    # Now on the eager base: the same as a model enabled on eager from the start. (Not compared
    # with ``edited``: eager rounds its softmax to float32 in the unedited layers, so the edited
    # layers' inputs differ from the sdpa base's by 1e-8 even in float64.)
    reference = tiny_model("llama", attn_implementation="eager", dtype=F64)
    stock_eager = _logits(reference, x)
    at.enable(reference, CLASSIC)
    assert (_logits(model, x) - _logits(reference, x)).abs().max() < TOL
    assert not torch.allclose(_logits(model, x), stock_eager, atol=1e-4), "the edit acts"
    at.disable(model)
    assert model.config._attn_implementation == "eager", "the implementation chosen by hand comes back"
    at.enable(model, CLASSIC)
    model.set_attn_implementation("sdpa")
    with pytest.warns(UserWarning, match="changed by hand"):
        at.disable(model)
    assert model.config._attn_implementation == "sdpa" and at.get_state(model) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(_logits(model, x), _logits(tiny_model("llama", dtype=F64), x))


# --- train mode ----------------------------------------------------------------------------

def test_train_mode_with_attention_dropout_still_edits():
    """Edited rows get the edit, then dropout, like the model's own eager attention."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = tiny_model("llama", attention_dropout=0.3, dtype=F64)
    at.enable(model, CLASSIC)
    model.train()
    module = model.model.layers[2].self_attn
    fn = ALL_ATTENTION_FUNCTIONS[model.config._attn_implementation]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, N, 8, generator=g, dtype=F64) * 2 for h in (4, 2, 2))
    torch.manual_seed(0)
    with torch.no_grad():
        _, weights = fn(module, q, k, v, None, dropout=0.3, scaling=1.0, output_attentions=True)
    at.disable(model)
    scores = q @ k.repeat_interleave(2, 1).transpose(-1, -2)
    plain = torch.softmax(scores.masked_fill(~torch.ones(N, N, dtype=torch.bool).tril(), float("-inf")), -1)
    want = reweight64(plain, 2, model.config.num_hidden_layers, CLASSIC)
    edited_rows = (want - plain).abs().amax(dim=(0, 1, 3)) > 1e-6          # rows the schedule changed
    assert edited_rows.sum() > 10
    kept = weights[0][:, edited_rows] != 0
    target = want[0][:, edited_rows] / 0.7
    assert (weights[0][:, edited_rows][kept] - target[kept]).abs().max() < TOL
    dropped = 1 - kept[want[0][:, edited_rows] > 0].float().mean()
    assert 0.2 < dropped < 0.4, float(dropped)
