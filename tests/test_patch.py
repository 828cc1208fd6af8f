"""The runtime patch on tiny random models of every supported family.

Every comparison of two computational paths of edited results runs in float64 (TOL): the
schedules' thresholds are discontinuous, so in float32 two paths that round differently by
1e-7 can flip an entry and move the logits by 1e-3; in float64 a flip needs a 1e-16
coincidence, and a wrongly edited row (1e-3 and more) cannot pass 1e-9.
"""

import warnings

import pytest
import torch

import attn_transition as at
from attn_transition.patches import STATE_ATTR
from hf_compat import cache_kwarg, cache_of
from tiny_models import (N, edit_configs, family_configs, greedy, ids, left_padded, logits as _logits, reweight64,
                         tiny_model)

pytestmark = pytest.mark.patch          # part of the floor suite (make test-floor)

FAMILIES = list(family_configs())
CLASSIC, SRA = edit_configs()
TOL = 1e-9
F64 = torch.float64


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("config", [CLASSIC, SRA], ids=["classic", "sra"])
def test_disable_restores_exactly_and_enable_reproduces(family, config):
    model = tiny_model(family)
    x = ids(2, N)
    stock = _logits(model, x)
    impl = model.config._attn_implementation
    at.enable(model, config)
    first = _logits(model, x)
    assert not torch.allclose(first, stock, atol=1e-4), "the transition should change the logits"
    at.disable(model)
    assert model.config._attn_implementation == impl
    assert not hasattr(model, STATE_ATTR)
    assert torch.equal(_logits(model, x), stock), "disable must restore the stock logits bitwise"
    at.enable(model, config)
    assert torch.equal(_logits(model, x), first), "re-enabling must reproduce the same logits"


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_path_matches_full_matrix_path(family):
    model = tiny_model(family, dtype=F64)
    x = ids(2, N, seed=3)
    for config in (CLASSIC, SRA):
        at.enable(model, config)
        rows = _logits(model, x)
        at.enable(model, config, full_matrix=True)
        full = _logits(model, x)
        assert (rows - full).abs().max() < TOL, f"{family} {config}"
    at.disable(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_output_attentions_returns_the_edited_weights(family):
    """Layer 1's inputs do not depend on any edit (layer 0 is never edited by classic), so its
    returned weights must equal ``reweight`` applied to the unedited model's layer-1 weights
    (float64 throughout; transformers' eager attention rounds its softmax to float32, so the
    unedited float64 weights are the library's own, under a config with nothing to edit)."""
    model = tiny_model(family, attn_implementation="eager", dtype=F64)
    x = ids(1, N, seed=5)
    with torch.no_grad():
        eager = model(x, output_attentions=True).attentions       # transformers' eager: softmax in float32
        # The unedited reference in float64: the library's own weights under a config that edits nothing.
        at.enable(model, at.ClassicConfig(min_length=10 * N))
        stock = model(x, output_attentions=True).attentions
    # No threshold involved: only the float32 rounding of eager's softmax.
    assert max((a - b).abs().max() for a, b in zip(stock, eager)) < 1e-6
    at.enable(model, CLASSIC)
    with torch.no_grad():
        edited = model(x, output_attentions=True).attentions
    at.disable(model)
    L = model.config.num_hidden_layers
    assert (edited[0] - stock[0]).abs().max() < TOL                # layer 0: not edited
    n = x.shape[1]
    i = torch.arange(n)
    window = getattr(model.config, "sliding_window", None)
    # Mistral windows every layer; Gemma 3 lists its layer types.
    layer_type = (getattr(model.config, "layer_types", None) or ["sliding_attention"] * L)[1]
    allowed = i[None, :] <= i[:, None]
    if window is not None and layer_type == "sliding_attention":
        allowed &= (i[:, None] - i[None, :]) < window
    want = reweight64(stock[1], 1, L, CLASSIC, allowed=allowed)
    assert not torch.allclose(want, stock[1], atol=1e-4)
    assert (edited[1] - want).abs().max() < TOL, (edited[1] - want).abs().max()


@pytest.mark.parametrize("family", ["mistral", "gemma3_text"])
def test_sliding_window_layers_keep_their_window(family):
    model = tiny_model(family)
    at.enable(model, at.ClassicConfig(min_length=0, beta=1.5))
    with torch.no_grad():
        att = model(ids(1, N), output_attentions=True).attentions
    at.disable(model)
    window = model.config.sliding_window
    types = getattr(model.config, "layer_types", None) or ["sliding_attention"] * len(att)
    i = torch.arange(N)
    outside = (i[:, None] - i[None, :]) >= window
    checked = 0
    for layer, (w, kind) in enumerate(zip(att, types)):
        if kind == "sliding_attention":
            assert w[..., outside].abs().max() == 0, f"layer {layer} put weight outside its window"
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("config", [CLASSIC, SRA], ids=["classic", "sra"])
def test_left_padded_row_equals_row_alone(family, config):
    model = tiny_model(family, dtype=F64)
    at.enable(model, config)
    long_, short = ids(1, N, seed=1), ids(1, N - 37, seed=2)
    pad = torch.zeros(1, 37, dtype=torch.long)
    batch = torch.cat([long_, torch.cat([pad, short], 1)])
    mask = torch.ones_like(batch)
    mask[1, :37] = 0
    # Positions counted from each row's first real token, as generate does: rotary tables are
    # computed in float32, so other absolute positions would round differently.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        both = model(batch, attention_mask=mask, position_ids=positions).logits
        alone_long = model(long_).logits
        alone_short = model(short).logits
    at.disable(model)
    assert torch.isfinite(both).all()
    assert (both[0] - alone_long[0]).abs().max() < TOL
    assert (both[1, 37:] - alone_short[0]).abs().max() < TOL
    assert not torch.allclose(_logits(model, short)[0], alone_short[0], atol=1e-4), "the edit acts on the row"


def test_short_prompt_is_left_unchanged():
    model = tiny_model("llama")
    x = ids(1, 120)
    stock = _logits(model, x)
    at.enable(model)                                   # default min_length = 400
    assert torch.equal(_logits(model, x), stock)
    at.enable(model, at.SRAConfig())                   # 120 <= 100 + 200 + 3: nothing to edit
    assert torch.equal(_logits(model, x), stock)
    at.disable(model)


def test_per_call_switch_and_generate_greedy_batch():
    model = tiny_model("llama")
    x, mask = left_padded(2, N, row=1, pad=20, seed=7)
    gen = greedy(mask, 6)
    stock = model.generate(x, **gen)
    at.enable(model, CLASSIC)
    off = model.generate(x, attn_transition=False, **gen)
    on = model.generate(x, **gen)
    at.disable(model)
    assert torch.equal(off.sequences, stock.sequences)
    assert all(torch.equal(a, b) for a, b in zip(off.logits, stock.logits))
    assert on.sequences.shape == stock.sequences.shape == (2, N + 6)
    assert not torch.allclose(on.logits[0], stock.logits[0], atol=1e-4), "prefill logits must be edited"


def test_generate_edits_prefill_only():
    """Prefill with the transition, then decode with the stock model from the same cache:
    the tokens equal the enabled model's own generate, so decode steps are unedited."""
    model = tiny_model("llama", dtype=F64)
    x = ids(1, N, seed=11)
    at.enable(model, CLASSIC)
    with torch.no_grad():
        generated = model.generate(x, max_new_tokens=5, do_sample=False, pad_token_id=0)
        out = model(x, use_cache=True)
    at.disable(model)
    cache, token = cache_of(out), out.logits[:, -1:].argmax(-1)
    assert cache is not None
    tokens = [token]
    with torch.no_grad():
        for _ in range(4):
            step = model(token, use_cache=True, **{cache_kwarg(model): cache})
            cache, token = cache_of(step), step.logits[:, -1:].argmax(-1)
            tokens.append(token)
    assert torch.equal(generated[:, N:], torch.cat(tokens, 1))


def test_generate_sampling_batch():
    model = tiny_model("qwen2")
    x = ids(3, N, seed=12)
    at.enable(model, SRA)
    torch.manual_seed(0)
    a = model.generate(x, max_new_tokens=5, do_sample=True, top_k=20, pad_token_id=0)
    torch.manual_seed(0)
    b = model.generate(x, max_new_tokens=5, do_sample=True, top_k=20, pad_token_id=0)
    torch.manual_seed(0)
    c = model.generate(x, max_new_tokens=5, do_sample=True, top_k=20, pad_token_id=0, attn_transition=False)
    at.disable(model)
    torch.manual_seed(0)
    d = model.generate(x, max_new_tokens=5, do_sample=True, top_k=20, pad_token_id=0)
    assert a.shape == (3, N + 5) and torch.equal(a, b)
    assert torch.equal(c, d)


def test_decode_step_goes_to_base_attention():
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = tiny_model("llama")
    at.enable(model, CLASSIC)
    module = model.model.layers[2].self_attn
    fn = ALL_ATTENTION_FUNCTIONS[model.config._attn_implementation]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, n, 8, generator=g) for h, n in ((4, 1), (2, 500), (2, 500)))
    got, _ = fn(module, q, k, v, None, scaling=0.3)
    want, _ = ALL_ATTENTION_FUNCTIONS["sdpa"](module, q, k, v, None, scaling=0.3)
    assert torch.equal(got, want)
    at.disable(model)


def test_softcap_is_honoured_by_the_edited_rows():
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = tiny_model("gemma3_text", attn_implementation="eager", dtype=F64)
    at.enable(model, CLASSIC)
    module = model.model.layers[2].self_attn
    fn = ALL_ATTENTION_FUNCTIONS[model.config._attn_implementation]
    g = torch.Generator().manual_seed(0)
    n = 120
    q, k, v = (torch.randn(1, h, n, 8, generator=g, dtype=F64) * s for h, s in ((4, 3), (2, 3), (2, 1)))
    outs = {}
    for cap in (None, 2.0):
        outs[cap], weights = fn(module, q, k, v, None, scaling=1.0, softcap=cap, output_attentions=True)
        scores = (q @ k.repeat_interleave(2, 1).transpose(-1, -2))
        if cap is not None:
            scores = torch.tanh(scores / cap) * cap
        plain = torch.softmax(scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf")), -1)
        want = reweight64(plain, 2, model.config.num_hidden_layers, CLASSIC)
        assert not torch.allclose(want, plain, atol=1e-4)
        assert (weights - want).abs().max() < TOL, (cap, (weights - want).abs().max())
    assert not torch.allclose(outs[None], outs[2.0], atol=1e-4)
    at.disable(model)


def test_eager_model_restored_to_eager():
    model = tiny_model("llama", attn_implementation="eager")
    x = ids(1, N)
    stock = _logits(model, x)
    at.enable(model, CLASSIC)
    assert model.config._attn_implementation == "attn_transition_eager"
    assert not torch.allclose(_logits(model, x), stock, atol=1e-4)
    at.disable(model)
    assert model.config._attn_implementation == "eager"
    assert torch.equal(_logits(model, x), stock)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models(dtype):
    model = tiny_model("llama").to(dtype)
    x = ids(2, N)
    mask = torch.ones_like(x)
    mask[0, :40] = 0
    stock = _logits(model, x, attention_mask=mask)
    at.enable(model, CLASSIC)
    edited = _logits(model, x, attention_mask=mask)
    with torch.no_grad():
        att = model(x, attention_mask=mask, output_attentions=True).attentions
    at.disable(model)
    assert edited.dtype == dtype and torch.isfinite(edited[:, 40:]).all()
    assert not torch.equal(edited, stock)
    assert all(torch.isfinite(a).all() for a in att), "fully padded rows must not produce NaN"


def test_fully_padded_rows_have_no_nan_weights():
    model = tiny_model("llama")
    x = ids(2, N)
    mask = torch.ones_like(x)
    mask[1, :100] = 0
    at.enable(model, CLASSIC)
    with torch.no_grad():
        out = model(x, attention_mask=mask, output_attentions=True)
    at.disable(model)
    assert all(torch.isfinite(a).all() for a in out.attentions)
    assert out.attentions[1][1, :, :100].abs().max() == 0          # padding rows carry no weight


def test_enabled_context_manager_restores_previous_state():
    model = tiny_model("llama")
    x = ids(1, N)
    stock = _logits(model, x)
    with at.enabled(model, CLASSIC):
        inside = _logits(model, x)
    assert not at.is_enabled(model) and torch.equal(_logits(model, x), stock)
    at.enable(model, SRA)
    with pytest.raises(RuntimeError, match="boom"):
        with at.enabled(model, CLASSIC):
            assert torch.equal(_logits(model, x), inside)
            raise RuntimeError("boom")
    assert at.get_state(model).config == SRA
    at.disable(model)
    assert torch.equal(_logits(model, x), stock)


def test_enable_twice_replaces_config():
    model = tiny_model("llama")
    at.enable(model, CLASSIC)
    at.enable(model, SRA)
    assert at.get_state(model).config == SRA
    assert at.get_state(model).previous_implementation == "sdpa"
    at.disable(model)
    assert model.config._attn_implementation == "sdpa"


def test_unsupported_model_is_named_and_left_alone():
    from transformers import AutoModelForCausalLM

    model = tiny_model("llama")
    model.config.model_type = "my_own_llama"                  # a type the family table does not know
    impl = model.config._attn_implementation
    with pytest.raises(at.UnsupportedModelError, match="'my_own_llama'") as info:
        at.enable(model)
    assert "llama" in str(info.value) and "gemma3_text" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert model.config._attn_implementation == impl and not hasattr(model, STATE_ATTR)
    # A refused family says why.
    from transformers import MambaConfig

    mamba = AutoModelForCausalLM.from_config(MambaConfig(num_hidden_layers=2, hidden_size=16, vocab_size=50,
                                                         state_size=4))
    with pytest.raises(at.UnsupportedModelError, match="'mamba'.*softmax"):
        at.enable(mamba)
    assert not hasattr(mamba, STATE_ATTR)


def test_not_a_model():
    with pytest.raises(at.NotACausalLMError, match="Linear"):
        at.enable(torch.nn.Linear(2, 2))


def test_disable_without_enable_warns():
    model = tiny_model("llama")
    with pytest.warns(UserWarning, match="not enabled"):
        at.disable(model)
    assert model.config._attn_implementation == "sdpa"


def test_enable_rejects_a_non_config():
    model = tiny_model("llama")
    with pytest.raises(at.ConfigError, match="ClassicConfig, an SRAConfig or a config string"):
        at.enable(model, {"alpha": 1})
    with pytest.raises(at.ConfigError, match="ClassicConfig.alpha"):
        at.enable(model, "classic:alpha=-1")
    assert not at.is_enabled(model)


def test_enable_takes_a_config_string():
    model = tiny_model("llama")
    at.enable(model, "classic:alpha=1,beta=0.5")
    assert at.get_state(model).config == at.ClassicConfig(alpha=1.0, beta=0.5)
    with at.enabled(model, "sra"):
        assert at.get_state(model).config == at.SRAConfig()
    assert at.get_state(model).config == at.ClassicConfig(alpha=1.0, beta=0.5)
    at.disable(model)


def test_other_models_are_unaffected():
    a, b = tiny_model("llama", seed=1), tiny_model("llama", seed=2)
    x = ids(1, N)
    stock_b = _logits(b, x)
    at.enable(a, CLASSIC)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(_logits(b, x), stock_b)
    at.disable(a)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = tiny_model("llama", dtype=F64)
    x = ids(2, N)
    at.enable(model, CLASSIC)
    cpu = _logits(model, x)
    gpu = _logits(model.cuda(), x.cuda()).cpu()
    at.disable(model)
    assert (cpu - gpu).abs().max() < TOL
