"""The patch on every supported family, on tiny random models built here (no downloads).

For each ``model_type`` in ``attn_transition/families.py``: disabled equals stock bitwise; enabled
changes the logits by a real amount; enable -> disable -> enable reproduces; the
edited-rows path equals the full-matrix path; both equal an independent reference (the
family's attention recomputed here from the query/key/value the model passes, with
``at.reweight`` applied to its post-softmax weights), which itself is checked to equal the
family's own eager attention when nothing is edited; a left-padded row equals the row alone;
batched ``generate`` works. Then the schedule layout of hybrids, the refusals with their reasons,
and multimodal wrappers (refused with the way out; their text decoder edited alone).
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import pytest
import torch

import attn_transition as at
from attn_transition.patches import FAMILIES, STATE_ATTR
from attn_transition.patches.transformers.calls import CallGeometry, RowPrompt
from attn_transition.families import REFUSED, family_for, num_decoder_layers, schedule_layout
from tiny_models import N, VOCAB, all_family_configs, edit_configs, family_model, greedy, ids, left_padded, sharpen

pytestmark = pytest.mark.usefixtures("one_thread")     # tiny models: one thread (conftest)

CLASSIC, SRA = edit_configs()
SCHEDULES = [pytest.param(CLASSIC, id="classic"), pytest.param(SRA, id="sra")]
PAD = 37
# The edit must move the logits by at least this fraction of their largest magnitude.
MIN_EFFECT = 0.04

CONFIGS = all_family_configs()
FAMILY_TYPES = sorted(CONFIGS)

# (family, check) -> why it is expected to fail until the patch does its part (none today).
XFAIL: dict[tuple[str, str], str] = {}


def _families(check: str):
    out = []
    for f in FAMILY_TYPES:
        reason = XFAIL.get((f, check))
        out.append(pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=reason)) if reason else f)
    return out


_MODELS: dict = {}


def _model(family: str):
    """One tiny model per family for the whole module; every test leaves it disabled."""
    if family not in _MODELS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _MODELS[family] = family_model(family)
    model = _MODELS[family]
    assert not at.is_enabled(model)
    return model


def _logits(model, x, **kw):
    with torch.no_grad():
        return model(x, **kw).logits.float()


# ----------------------------------------------------------------------------- the reference

def _allowed(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2


class Reference:
    """Attention recomputed from what the model passes to the attention function: scores =
    q k^T * scaling, the family's softcap, the layer's mask, the sink logits joining the
    softmax (then dropped), and, with ``config`` set, ``at.reweight`` on the post-softmax
    weights of a prefill at the layer's schedule position (``families.schedule_layout``).
    For unpadded inputs (padding is checked end to end, row against row alone)."""

    # Tensor arguments that carry nothing the attention math depends on: the mask already
    # encodes windows, chunks and causality.
    IGNORED = {"position_ids", "cache_position", "position_embeddings"}

    def __init__(self, model_config, config=None):
        self.config = config
        self.num_layers, self.layout = schedule_layout(model_config)

    def __call__(self, module, query, key, value, attention_mask, dropout=0.0, scaling=None, softcap=None,
                 s_aux=None, **kwargs):
        unknown = {k for k, v in kwargs.items() if k not in self.IGNORED and isinstance(v, torch.Tensor)}
        assert not unknown, f"the reference does not know the attention arguments {sorted(unknown)}"
        b, h, n, d = query.shape
        c = key.shape[2]
        groups = h // key.shape[1]
        k = key.float().repeat_interleave(groups, 1)                    # (b, h, c, d)
        v = value.float().repeat_interleave(groups, 1)                  # (b, h, c, dv)
        scaling = d ** -0.5 if scaling is None else scaling
        scores = (query.float() * scaling) @ k.transpose(-1, -2)        # (b, h, n, c)
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        if attention_mask is None:                                      # plain causal
            allowed = torch.ones(n, c, dtype=torch.bool, device=query.device).tril(c - n)[None, None]
        else:
            allowed = _allowed(attention_mask[:, :, :, :c])
            if attention_mask.dtype != torch.bool:                      # additive biases (0 / min elsewhere)
                scores = scores + attention_mask[:, :, :, :c].float().masked_fill(~allowed, 0.0)
        scores = scores.masked_fill(~allowed, float("-inf"))
        if s_aux is not None:                                           # sinks: one logit per head
            sink = s_aux.float().reshape(1, h, 1, 1).expand(b, h, n, 1)
            weights = torch.softmax(torch.cat([scores, sink], -1), -1)[..., :-1]
        else:
            weights = torch.softmax(scores, -1)
        weights = weights.nan_to_num(0.0)                                # fully masked (padding) rows
        if self.config is not None and n == c and module.layer_idx in self.layout:
            allowed = allowed.expand(b, h, n, c)
            position = self.layout[module.layer_idx]
            if s_aux is None:                                           # (inputs are unpadded)
                weights = at.reweight(weights, position, self.num_layers, self.config, allowed=allowed)
            else:
                weights = _reweight_with_sinks(weights, position, self.num_layers, self.config, allowed)
        out = (weights @ v).transpose(1, 2).to(query.dtype)              # (b, n, h, dv)
        return out, weights.to(query.dtype)


def _reweight_with_sinks(weights, position, num_layers, config, allowed):
    """``at.reweight`` for rows whose softmax also fed a sink: the same plan, with each row's
    mass before the edit (1 - the sink's share) as the total the edit conserves, so the
    sink's share is never handed out as "removed" mass."""
    from attn_transition.schedules import apply_edit_, layer_plan

    b, h, n, _ = weights.shape
    out = weights.detach().float().clone()
    total = out.sum(-1, keepdim=True)                                   # (b, h, n, 1)
    for edit in layer_plan(config, position, num_layers, n):
        rows = slice(edit.start, edit.end)
        block = out[:, :, rows].clone()
        for i in range(b):
            apply_edit_(block[i], edit, total=total[i, :, rows])
        out[:, :, rows] = block * allowed[:, :, rows]
    return out.to(weights.dtype)


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@contextlib.contextmanager
def _registered(name: str, function, mask_function=None):
    """``function`` under ``name`` in transformers' AttentionInterface inside the block (and
    ``mask_function`` under the same name), the previous entries restored after it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    previous = AttentionInterface._global_mapping.get(name)
    previous_mask = AttentionMaskInterface._global_mapping.get(name)
    AttentionInterface.register(name, function)
    if mask_function is not None:
        AttentionMaskInterface.register(name, mask_function)
    try:
        yield
    finally:
        for interface, old in ((AttentionInterface, previous), (AttentionMaskInterface, previous_mask)):
            if old is None:
                interface._global_mapping.pop(name, None)
            else:
                interface.register(name, old)


_REFERENCE_NAME = "attn_transition_test_reference"


def reference_vs_eager(model, x):
    """Run ``model`` once; at every attention call compare the unedited :class:`Reference`
    with the family's own ``eager_attention_forward`` on the same inputs (eager masks).
    Returns ``[(layer_idx, output diff)]`` (outputs: families differ in which weights they return,
    e.g. with or without a sink's share)."""
    import sys

    from transformers.masking_utils import eager_mask

    ref, calls = Reference(model.config), []

    def compare(module, query, key, value, attention_mask, **kwargs):
        eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward")
        out, weights = eager(module, query, key, value, attention_mask, **kwargs)
        mine, _ = ref(module, query, key, value, attention_mask, **kwargs)
        calls.append((module.layer_idx, _diff(out, mine)))
        return out, weights

    impl = model.config._attn_implementation
    with _registered(_REFERENCE_NAME, compare, eager_mask):
        model.set_attn_implementation(_REFERENCE_NAME)
        try:
            _logits(model, x)
        finally:
            model.set_attn_implementation(impl)
    return calls


_PER_LAYER: dict = {}


def patch_vs_reference(family, config):
    """Run the enabled model once; at every attention call also compute, on the same inputs,
    the full-matrix path and :class:`Reference` with and without the edit. Returns
    ``[(layer_idx, rows vs reference, full vs reference, rows vs full, edited)]`` (cached)."""
    key = (family, type(config).__name__)
    if key in _PER_LAYER:
        return _PER_LAYER[key]
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = _model(family)
    ref, plain, calls = Reference(model.config, config), Reference(model.config), []
    at.enable(model, config)
    state = at.get_state(model)
    name = model.config._attn_implementation
    patched = ALL_ATTENTION_FUNCTIONS[name]

    def compare(module, query, key, value, attention_mask, **kwargs):
        rows, weights = patched(module, query, key, value, attention_mask, **kwargs)
        # The same call, every row explicit: a call runs with the options it began with (pinned
        # per thread by the decoder's pre-hook), so the inner ones go on top of that stack.
        state._pins.stack.append(state.with_options(full_matrix=True))
        try:
            full, _ = patched(module, query, key, value, attention_mask, **kwargs)
        finally:
            state._pins.stack.pop()
        want, _ = ref(module, query, key, value, attention_mask, **kwargs)
        unedited, _ = plain(module, query, key, value, attention_mask, **kwargs)
        calls.append((module.layer_idx, _diff(rows, want), _diff(full, want), _diff(rows, full),
                      _diff(want, unedited) > 1e-4))
        return rows, weights

    try:
        with _registered(name, compare):
            _logits(model, ids(2, N, seed=4))
    finally:
        at.disable(model)
    _PER_LAYER[key] = calls
    return calls


# ----------------------------------------------------------------------------- the checks

def test_every_family_has_a_tiny_model_and_no_family_is_also_refused():
    assert len(FAMILIES) >= 30
    assert set(CONFIGS) <= set(FAMILIES)
    missing = set(FAMILIES) - set(CONFIGS)
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    assert not {t for t in missing if t in CONFIG_MAPPING}, "every family the installed transformers has is tested"
    assert not set(FAMILIES) & set(REFUSED)


@pytest.mark.parametrize("family", _families("stock"))
def test_disabled_is_stock_and_enabled_has_a_real_effect(family):
    model = _model(family)
    x = ids(2, N)
    impl = model.config._attn_implementation
    stock = _logits(model, x)
    for config in (CLASSIC, SRA):
        try:
            at.enable(model, config)
            first = _logits(model, x)
            at.disable(model)
            assert model.config._attn_implementation == impl and not hasattr(model, STATE_ATTR)
            assert torch.equal(_logits(model, x), stock), "disable must restore the stock logits bitwise"
            at.enable(model, config)
            assert torch.equal(_logits(model, x), first), "re-enabling must reproduce the same logits"
        finally:
            if at.is_enabled(model):
                at.disable(model)
        effect = (first - stock).abs().max() / stock.abs().max()
        assert effect > MIN_EFFECT, f"{family} {type(config).__name__}: logits moved by {effect:.4f} only"


@pytest.mark.parametrize("family", _families("rows_vs_full"))
@pytest.mark.parametrize("config", SCHEDULES)
def test_rows_path_equals_full_matrix_path(family, config):
    """Layer by layer, on the same inputs (an end-to-end comparison would also measure the
    elimination thresholds' discontinuity, see the README)."""
    calls = patch_vs_reference(family, config)
    worst = max(calls, key=lambda c: c[3])
    assert worst[3] < 1e-5, f"layer {worst[0]}: rows and full-matrix outputs differ by {worst[3]:.2e}"


@pytest.mark.parametrize("family", _families("eager"))
def test_reference_is_the_family_eager_attention(family):
    """The reference below, unedited, reproduces the family's own eager attention (mask,
    scaling, softcap, sinks), and the schedule layout names exactly the layers that call it."""
    calls = reference_vs_eager(_model(family), ids(2, N, seed=4))
    worst = max(calls, key=lambda c: c[1])
    assert worst[1] < 1e-5, f"layer {worst[0]}: the reference is off the family's eager attention by {worst[1]:.2e}"
    _, layout = schedule_layout(_model(family).config)
    assert sorted({c[0] for c in calls}) == sorted(layout), "schedule_layout must name the attention layers"


@pytest.mark.parametrize("family", _families("reference"))
@pytest.mark.parametrize("config", SCHEDULES)
def test_equals_the_family_attention_with_reweight_applied(family, config):
    calls = patch_vs_reference(family, config)
    assert any(c[4] for c in calls), "the reference edited nothing: the check would be vacuous"
    for layer, rows, full, _, _ in calls:
        assert rows < 1e-5 and full < 1e-5, f"layer {layer}: rows {rows:.2e}, full matrix {full:.2e}"


def _float64_model(family: str):
    """A float64 copy of the family's tiny model, or None where the family does not compute in
    float64 (grouped expert products, kernels with float32 internals: the stock padded row is
    then already off the row alone by more than float64 rounding)."""
    model = copy.deepcopy(_model(family)).double()
    try:
        long_, short = ids(1, N, seed=1), ids(1, N - PAD, seed=2)
        batch, mask, positions = _padded_pair(long_, short)
        stock = _logits(model, batch, attention_mask=mask, position_ids=positions)
        premise = (stock[1, PAD:] - _logits(model, short)[0]).abs().max()
    except RuntimeError:
        return None
    return model if premise < 1e-10 else None


def _padded_pair(long_, short):
    batch = torch.cat([long_, torch.cat([torch.zeros(1, PAD, dtype=torch.long), short], 1)])
    mask = torch.ones_like(batch)
    mask[1, :PAD] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)      # as generate does (absolute-position families)
    return batch, mask, positions


@pytest.mark.parametrize("family", _families("padding"))
@pytest.mark.parametrize("config", SCHEDULES)
def test_left_padded_row_equals_row_alone(family, config):
    """The whole model: a left-padded row goes through the masked kernel, the row alone through
    the causal one. In float32 their ~1e-7 rounding difference can flip an SRA threshold on some
    CPUs and not on others; in float64 a flip needs a 1e-16 coincidence, so the rows must agree
    to 1e-8. Families that do not compute in float64 are checked layer by layer below."""
    model = _float64_model(family)
    if model is None:
        pytest.skip("the family does not compute in float64; see test_padded_row_equals_row_alone_per_layer")
    long_, short = ids(1, N, seed=1), ids(1, N - PAD, seed=2)
    batch, mask, positions = _padded_pair(long_, short)
    stock = _logits(model, batch, attention_mask=mask, position_ids=positions)
    at.enable(model, config)
    try:
        both = _logits(model, batch, attention_mask=mask, position_ids=positions)
        alone_long, alone_short = _logits(model, long_), _logits(model, short)
    finally:
        at.disable(model)
    assert torch.isfinite(both).all()
    assert not torch.allclose(both[1, PAD:], stock[1, PAD:], atol=1e-4), "the padded row must be edited"
    assert (both[0] - alone_long[0]).abs().max() < 1e-8
    assert (both[1, PAD:] - alone_short[0]).abs().max() < 1e-8


@pytest.mark.parametrize("family", _families("padding"))
@pytest.mark.parametrize("config", SCHEDULES)
def test_padded_row_equals_row_alone_per_layer(family, config):
    """Every family, at every attention call of a padded batch (the family's own query, key,
    value, mask, window, sinks and softcap, as the model hands them over): the library's
    attention function on the padded row equals it on the row alone, both in float64, and the
    edit acts on some layer."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = _model(family)
    batch, mask, positions = _padded_pair(ids(1, N, seed=1), ids(1, N - PAD, seed=2))
    at.enable(model, config)
    name = model.config._attn_implementation
    patched, seen = ALL_ATTENTION_FUNCTIONS[name], []

    def compare(module, query, key, value, attention_mask, **kwargs):
        result = patched(module, query, key, value, attention_mask, **kwargs)
        if attention_mask is not None and query.shape[2] == key.shape[2] == N:
            wide = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                    for k, v in kwargs.items()}
            q, k, v = (t.double() for t in (query, key, value))
            # An additive mask goes float64 too (sdpa mixes a float32 mask with float64 queries badly).
            mask64 = attention_mask.double() if attention_mask.is_floating_point() else attention_mask
            padded, _ = patched(module, q, k, v, mask64, **wide)                      # (2, N, heads, dv)
            alone_mask = mask64[1:, :, PAD:, PAD:]                                    # (1, heads or 1, n, n)
            state, n = at.get_state(model), N - PAD
            state.begin_call(CallGeometry(config, 1, n, 0, (RowPrompt(0, n, n),)))   # as the decoder plans it
            try:
                alone, _ = patched(module, q[1:, :, PAD:], k[1:, :, PAD:], v[1:, :, PAD:], alone_mask, **wide)
            finally:
                state.end_call()
            state.begin_call(CallGeometry(None, 1, n, 0, ()))                            # a stock call: unedited
            try:                                                                      # same inputs
                stock, _ = patched(module, q[1:, :, PAD:], k[1:, :, PAD:], v[1:, :, PAD:], alone_mask, **wide)
            finally:
                state.end_call()
            seen.append((module.layer_idx, float((padded[1, PAD:] - alone[0]).abs().max()),
                         float((alone - stock).abs().max())))
        return result

    try:
        with _registered(name, compare):
            _logits(model, batch, attention_mask=mask, position_ids=positions)
    finally:
        at.disable(model)
    assert seen, "no attention call of the padded batch was seen"
    worst = max(seen, key=lambda s: s[1])
    assert worst[1] < 1e-9, f"layer {worst[0]}: the padded row is off the row alone by {worst[1]:.2e}"
    assert max(s[2] for s in seen) > 1e-4, "the edit must act on some layer"


@pytest.mark.parametrize("family", _families("generate"))
def test_batched_generate(family):
    model = _model(family)
    x, mask = left_padded(2, N, row=1, pad=20, seed=7)
    gen = greedy(mask, 4)
    with torch.no_grad():
        stock = model.generate(x, **gen)
        at.enable(model, CLASSIC)
        try:
            off = model.generate(x, attn_transition=False, **gen)
            on = model.generate(x, **gen)
        finally:
            at.disable(model)
    assert torch.equal(off.sequences, stock.sequences)
    assert on.sequences.shape == stock.sequences.shape == (2, N + 4)
    assert not torch.allclose(on.logits[0], stock.logits[0], atol=1e-4), "the prefill must be edited"


# ----------------------------------------------------------------------------- layouts, refusals

def test_schedule_layout_counts_softmax_attention_layers_only():
    from transformers import LlamaConfig, Qwen3NextConfig

    llama = LlamaConfig(num_hidden_layers=7, hidden_size=32, num_attention_heads=4)
    assert schedule_layout(llama) == (7, {i: i for i in range(7)})
    types = ["linear_attention", "full_attention", "linear_attention", "linear_attention", "full_attention",
             "full_attention"]
    hybrid = Qwen3NextConfig(num_hidden_layers=6, layer_types=types, hidden_size=32, num_attention_heads=4)
    assert schedule_layout(hybrid) == (3, {1: 0, 4: 1, 5: 2})
    assert num_decoder_layers(hybrid) == 6


def test_schedule_layout_reads_each_hybrids_own_layer_pattern():
    from transformers import FalconH1Config, JambaConfig, LongcatFlashConfig, NemotronHConfig

    jamba = JambaConfig(num_hidden_layers=8, attn_layer_period=4, attn_layer_offset=2)
    assert schedule_layout(jamba) == (2, {2: 0, 6: 1})
    nemotron = NemotronHConfig(layers_block_type=["linear_attention", "mlp", "full_attention", "moe",
                                                  "full_attention"], num_hidden_layers=5)
    assert schedule_layout(nemotron) == (2, {2: 0, 4: 1})
    assert schedule_layout(FalconH1Config(num_hidden_layers=3)) == (3, {0: 0, 1: 1, 2: 2})
    # two attention sublayers per decoder layer, layer_idx 2i and 2i + 1
    assert schedule_layout(LongcatFlashConfig(num_layers=3)) == (6, {i: i for i in range(6)})


def test_a_hybrid_layer_type_nobody_knows_is_refused():
    from transformers import Qwen3NextConfig

    config = Qwen3NextConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4)
    config.layer_types = ["full_attention", "retention"]
    with pytest.raises(at.UnsupportedModelError, match="retention"):
        schedule_layout(config)
    config.layer_types = ["linear_attention", "linear_attention"]
    with pytest.raises(at.UnsupportedModelError, match="no softmax-attention layer"):
        schedule_layout(config)


@pytest.mark.parametrize("family", sorted(f for f in FAMILY_TYPES if FAMILIES[f].hybrid))
def test_hybrid_tiny_models_mix_layer_kinds(family):
    """Each hybrid's tiny model has both kinds of layer, so the layout is not the identity
    (Falcon-H1 runs attention in every layer and is the exception)."""
    config = CONFIGS[family]
    count, layout = schedule_layout(config)
    total = len(config.layer_types)
    assert count >= 4 and sorted(layout.values()) == list(range(count))
    assert (count == total) == (family == "falcon_h1")


@pytest.mark.parametrize("model_type, reason", [("bloom", "AttentionInterface"), ("mamba", "no softmax"),
                                                ("deepseek_v32", "sparse"), ("zamba2", "shared"),
                                                ("bert", "decoder-only"), ("hrm_text", "looped"),
                                                ("deepseek_v4", "compressed"), ("inkling_text", "position bias")])
def test_refused_families_say_why(model_type, reason):
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    with pytest.raises(at.UnsupportedModelError, match=reason) as info:
        family_for(config)
    assert repr(model_type) in str(info.value)


def test_an_unknown_family_lists_the_supported_ones():
    from transformers import MoshiConfig

    with pytest.raises(at.UnsupportedModelError, match="'moshi'") as info:
        family_for(MoshiConfig())
    assert all(f in str(info.value) for f in ("llama", "gpt_oss", "jamba"))


# ----------------------------------------------------------------------------- multimodal models

def _gemma3_multimodal():
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                image_size=28, patch_size=14)
    config = Gemma3Config(text_config=CONFIGS["gemma3_text"].to_dict(), vision_config=vision.to_dict(),
                          mm_tokens_per_image=4, boi_token_index=VOCAB - 3, eoi_token_index=VOCAB - 2,
                          image_token_index=VOCAB - 1)
    return Gemma3ForConditionalGeneration(config), [VOCAB - 3] + [VOCAB - 1] * 4 + [VOCAB - 2]


def _llava():
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=28, patch_size=14, projection_dim=32)
    config = LlavaConfig(text_config=CONFIGS["llama"].to_dict(), vision_config=vision.to_dict(),
                         image_token_index=VOCAB - 1, vision_feature_layer=-1)
    return LlavaForConditionalGeneration(config), [VOCAB - 1] * 4


@pytest.mark.parametrize("build", [_gemma3_multimodal, _llava], ids=["gemma3", "llava"])
def test_multimodal_model_edits_its_text_decoder_only(build):
    """A multimodal wrapper is refused with the way out in the message; enabling its text
    decoder edits the prompt (image tokens included) and leaves the vision tower bitwise alone."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, image_tokens = build()
    model.eval()
    with pytest.raises(at.UnsupportedModelError, match=r"at\.enable\(model\.get_decoder\(\)\)"):
        at.enable(model)
    assert not at.is_enabled(model)
    decoder = model.get_decoder()
    sharpen(decoder)
    g = torch.Generator().manual_seed(0)
    text = torch.randint(3, VOCAB - 3, (1, N), generator=g)
    x = torch.cat([text[:, :60], torch.tensor([image_tokens]), text[:, 60:]], 1)
    pixels = torch.randn(1, 3, 28, 28, generator=g)
    tower = model.model.vision_tower
    gen = dict(max_new_tokens=3, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        stock = model(input_ids=x, pixel_values=pixels).logits
        stock_vision = tower(pixel_values=pixels).last_hidden_state
        stock_gen = model.generate(input_ids=x, pixel_values=pixels, **gen)
        at.enable(decoder, CLASSIC)
        try:
            edited = model(input_ids=x, pixel_values=pixels).logits
            vision = tower(pixel_values=pixels).last_hidden_state
            off = model.generate(input_ids=x, pixel_values=pixels, attn_transition=False, **gen)
        finally:
            at.disable(decoder)
        after = model(input_ids=x, pixel_values=pixels).logits
    assert (edited - stock).abs().max() / stock.abs().max() > MIN_EFFECT
    assert torch.equal(vision, stock_vision), "the vision tower must not change"
    assert torch.equal(off, stock_gen) and torch.equal(after, stock)


def test_a_multimodal_refusal_names_the_engines_way_out_only_in_that_engine():
    """The core's refusal (read by the vLLM plugin too) says what to edit; only the transformers
    integration's names at.enable(model.get_decoder())."""
    from transformers import AutoConfig

    from attn_transition.patches.transformers.families import family_for as transformers_family_for

    config = AutoConfig.for_model("gemma3")
    with pytest.raises(at.UnsupportedModelError, match="'gemma3_text' model\\) is supported") as core:
        family_for(config)
    assert "at.enable" not in str(core.value)
    with pytest.raises(at.UnsupportedModelError, match=r"at\.enable\(model\.get_decoder\(\)\)"):
        transformers_family_for(config)
    assert transformers_family_for(CONFIGS["llama"]) is family_for(CONFIGS["llama"])


def test_multimodal_model_with_an_unsupported_text_decoder_says_so():
    from transformers import AutoConfig

    with pytest.raises(at.UnsupportedModelError, match="qwen2_5_vl_text.*not supported"):
        family_for(AutoConfig.for_model("qwen2_5_vl"))
