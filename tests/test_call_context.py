"""Every call edits with its own prompt, never one guessed from its surroundings: a static cache on
a model whose every layer slides, an enabled model called inside another model's ``generate``, a
hand-filled cache with one prompt token left, per-row and continuation widths (loglikelihood
requests), duplicate config keys, continuous batching, and a chunked ``generate`` that raised.

Every comparison of two computational paths runs the model in float64 (see tests/test_calls.py:
a wrongly edited row is off by 1e-3 and more, the tolerance is 1e-9).
"""

import gc
import warnings

import pytest
import torch

import attn_transition as at
from attn_transition.errors import UsageError
from hf_compat import cache_kwarg, cache_of
from tiny_models import N, edit_configs, ids, left_padded, tiny_model
from skips import need

pytestmark = pytest.mark.patch          # part of the floor suite (make test-floor)

CLASSIC, SRA = edit_configs()
TOL = 1e-9
GEN_TOL = 1e-6      # generate returns its logits in float32 (rounded from the float64 model's)
CONFIGS = pytest.mark.parametrize("config", [CLASSIC, SRA], ids=["classic", "sra"])


def _model(family: str = "llama", seed: int = 0):
    return tiny_model(family, seed=seed).double()


def _logits(model, x, **kw) -> torch.Tensor:
    with torch.no_grad():
        return model(x, **kw).logits


def _gen(model, x=None, new_tokens: int = 3, **kw):
    args = () if x is None else (x,)
    with torch.no_grad():
        return model.generate(*args, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                              return_dict_in_generate=True, output_logits=True, **kw)


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _ours(record) -> list[str]:
    return [str(w.message) for w in record if "attn_transition" in str(w.message)]


# -- case 1: a static cache on a model whose every layer slides ----------------------------------

@CONFIGS
def test_static_cache_on_an_all_sliding_model_edits_the_whole_prompt(config):
    """Mistral-style sliding_window (100) on a left-padded 150-token batch: generate with a static
    cache passes the layers a prepared sliding mask whose last row sees only its window; the edit
    still uses each row's whole prompt, as the dynamic cache does."""
    model = tiny_model("mistral", sliding_window=100).double()
    x, mask = left_padded(2, N, row=1, pad=30, seed=21)
    at.enable(model, config)
    dynamic = _gen(model, x, attention_mask=mask)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        static = _gen(model, x, attention_mask=mask, cache_implementation="static")
    assert not _ours(record), _ours(record)
    stock = _gen(model, x, attention_mask=mask, attn_transition=False)
    assert _diff(dynamic.logits[0], stock.logits[0]) > 1e-4, "the edit acts on this prompt"
    assert torch.equal(static.sequences, dynamic.sequences)
    for a, b in zip(static.logits, dynamic.logits):
        assert _diff(a, b) < TOL, _diff(a, b)
    at.disable(model)


def _prepared(q_from: int, q_to: int, keys: int, window=None) -> torch.Tensor:
    """A prepared additive (1, 1, q, keys) float64 causal mask, sliding when ``window`` is given."""
    pos, key = torch.arange(q_from, q_to)[:, None], torch.arange(keys)[None, :]
    allowed = key <= pos if window is None else (key <= pos) & (key > pos - window)             # (q, keys)
    mask = torch.zeros(q_to - q_from, keys, dtype=torch.float64)
    return mask.masked_fill(~allowed, torch.finfo(torch.float64).min)[None, None]            # (1, 1, q, keys)


def test_a_prepared_mask_continuing_a_cache_is_read_or_refused():
    """By hand, a piece continuing a cache with a prepared 4D mask: a causal mask shows where the
    rows start (the piece equals the one-shot prefill); a sliding one hides it (the cached keys
    before every row's window): a ConfigError naming attention_mask, not an edit with n = window."""
    for family, window in (("llama", None), ("mistral", 48)):
        model = tiny_model(family).double()
        x = ids(1, N, seed=34)
        at.enable(model, SRA)
        one_shot = _logits(model, x)[:, -1]
        cache = _prefilled(model, x, 100, N)
        piece = dict(attention_mask=_prepared(100, N, N, window), use_cache=True, attn_transition_prompt_length=N,
                     **{cache_kwarg(model): cache})
        if window is None:
            assert _diff(_logits(model, x[:, 100:], **piece)[:, -1], one_shot) < TOL
        else:
            with pytest.raises(at.ConfigError, match="pass the 2D .* padding mask") as info:
                _logits(model, x[:, 100:], **piece)
            assert info.value.field == "attention_mask"
        at.disable(model)


# -- case 2: an enabled model called inside another model's generate ------------------------------

class _Scorer:
    """A logits processor / stopping criterion that runs another (enabled) model on its own prompt."""

    def __init__(self, model, prompt: torch.Tensor) -> None:
        self.model, self.prompt, self.seen = model, prompt, []

    def _score(self) -> None:
        self.seen.append(_logits(self.model, self.prompt))

    def __call__(self, input_ids, scores):
        self._score()
        return scores


class _Criterion(_Scorer):
    def __call__(self, input_ids, scores, **kwargs):
        self._score()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


@CONFIGS
@pytest.mark.parametrize("outer", [50, N + 100], ids=["short-outer", "long-outer"])
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_a_scorer_inside_another_models_generate_edits_its_own_prompt(config, outer, use_cache):
    """The scorer's forward inside the outer model's generate (a logits processor and a stopping
    criterion) equals the scorer called alone: the outer generate's width is not its width."""
    from transformers import LogitsProcessorList, StoppingCriteriaList

    outer_model, scorer = _model(seed=0), _model(seed=1)
    at.enable(scorer, config)
    prompt = ids(1, N, seed=22)
    alone = _logits(scorer, prompt)
    assert _diff(alone, _logits(scorer, prompt, attn_transition=False)) > 1e-3, "the edit acts on this prompt"
    processor, criterion = _Scorer(scorer, prompt), _Criterion(scorer, prompt)
    _gen(outer_model, ids(1, outer, seed=23), new_tokens=2, use_cache=use_cache,
         logits_processor=LogitsProcessorList([processor]), stopping_criteria=StoppingCriteriaList([criterion]))
    assert processor.seen and criterion.seen
    for got in processor.seen + criterion.seen:
        assert _diff(got, alone) < TOL, _diff(got, alone)
    at.disable(scorer)


def test_an_enabled_model_scoring_inside_its_own_generate_is_a_call_by_hand():
    """The generating model itself called by its own logits processor: that call is not one of
    generate's (its width is its own input's), while generate's own calls keep generate's width."""
    from transformers import LogitsProcessorList

    model = _model()
    at.enable(model, CLASSIC)
    prompt, x = ids(1, N, seed=24), ids(1, 60, seed=25)
    alone, plain = _logits(model, prompt), _gen(model, x)
    processor = _Scorer(model, prompt)
    scored = _gen(model, x, logits_processor=LogitsProcessorList([processor]))
    for got in processor.seen:
        assert _diff(got, alone) < TOL, _diff(got, alone)
    for a, b in zip(scored.logits, plain.logits):
        assert _diff(a, b) < TOL
    at.disable(model)


def test_a_wrappers_generate_is_the_models_own():
    """A PEFT wrapper's generate ends in the wrapped model's generate: its calls keep the prompt's
    width (with use_cache=False the generated rows of every full forward stay unedited), as the
    model's own generate with a cache gives."""
    peft = need("peft", "make setup; not in the floor environment")
    model = _model()
    at.enable(model, SRA)
    x = ids(1, N, seed=33)
    want = _gen(model, x)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"])).double()  # B = 0: no change
    got = _gen(lora, input_ids=x, use_cache=False)
    assert torch.equal(got.sequences, want.sequences)
    for a, b in zip(got.logits, want.logits):
        assert _diff(a, b) < GEN_TOL, _diff(a, b)
    at.disable(model)


# -- case 7: a hand-filled cache with one prompt token left ---------------------------------------

def _prefilled(model, x, upto: int, width: int):
    """A cache holding ``x[:, :upto]``, filled with the declared width."""
    with torch.no_grad():
        return cache_of(model(x[:, :upto], use_cache=True, attn_transition_prompt_length=width))


# SRA edits the prompt's last row at this width (classic's intervals leave it to the earlier rows).

def test_one_prompt_token_left_by_hand_is_edited():
    """149 cached with the width 150 declared, then the last prompt token with the same width:
    its row is the one-shot prefill's last row."""
    model = _model()
    x = ids(1, N, seed=26)
    at.enable(model, SRA)
    one_shot = _logits(model, x)[:, -1]
    assert _diff(one_shot, _logits(model, x, attn_transition=False)[:, -1]) > 1e-4, "the edit acts on this row"
    cache = _prefilled(model, x, N - 1, N)
    last = _logits(model, x[:, N - 1:], **{cache_kwarg(model): cache}, use_cache=True,
                   attn_transition_prompt_length=N)[:, -1]
    assert _diff(last, one_shot) < TOL, _diff(last, one_shot)
    at.disable(model)


@pytest.mark.parametrize("left", [1, 40], ids=["one-left", "forty-left"])
def test_generate_continuing_a_cache_filled_with_the_declared_width_edits_the_rest(left):
    """generate given that cache and the same declared width: the remaining prompt rows are
    edited (the first generated token's logits are the one-shot prefill's), with no warning;
    without the width they are not edited, with a warning, however few are left."""
    model = _model()
    x = ids(1, N, seed=27)
    at.enable(model, SRA)
    one_shot = _logits(model, x)[:, -1]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = _gen(model, x, new_tokens=1, attn_transition_prompt_length=N,
                   **{cache_kwarg(model): _prefilled(model, x, N - left, N)})
    assert not _ours(record), _ours(record)
    assert _diff(one_shot, _logits(model, x, attn_transition=False)[:, -1]) > 1e-4, "the edit acts on this row"
    assert _diff(out.logits[0], one_shot) < GEN_TOL, _diff(out.logits[0], one_shot)
    model._attn_transition._warned.clear()
    with pytest.warns(UserWarning, match="continues .* cached tokens it was given"):
        _gen(model, x, new_tokens=1, **{cache_kwarg(model): _prefilled(model, x, N - left, N)})
    at.disable(model)


# -- widths: a prompt followed by continuation rows, one width per row ----------------------------

@CONFIGS
def test_a_loglikelihood_forward_edits_the_context_and_not_the_continuation(config):
    """context + continuation in one call with the context's width: the context rows equal the
    context alone, the continuation rows equal a cached step after the edited context prefill."""
    model = _model()
    x, ctx = ids(1, N, seed=28), 100
    at.enable(model, config)
    full = _logits(model, x, attn_transition_prompt_length=ctx)
    context = _logits(model, x[:, :ctx])
    assert _diff(context, _logits(model, x[:, :ctx], attn_transition=False)) > 1e-3, "the edit acts on this prompt"
    assert _diff(full[:, :ctx], context) < TOL, _diff(full[:, :ctx], context)
    with torch.no_grad():
        cache = cache_of(model(x[:, :ctx], use_cache=True))
        step = model(x[:, ctx:], **{cache_kwarg(model): cache}, use_cache=True,
                     attn_transition_prompt_length=ctx).logits
    assert _diff(full[:, ctx:], step) < TOL, _diff(full[:, ctx:], step)
    at.disable(model)


@CONFIGS
def test_per_row_widths_equal_each_row_alone(config):
    """A left-padded batch with one width per row (a list and a 1D tensor), each counted from the
    row's first real token: each row equals that row alone with its own int width."""
    model = _model()
    x, mask = left_padded(2, N, row=1, pad=20, seed=29)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    at.enable(model, config)
    widths = [100, 70]
    want = [_logits(model, x[:1], attn_transition_prompt_length=100)[0],
            _logits(model, x[1:, 20:], attn_transition_prompt_length=70)[0]]
    for declared in (widths, torch.tensor(widths)):
        got = _logits(model, x, attention_mask=mask, position_ids=position_ids,
                      attn_transition_prompt_length=declared)
        assert _diff(got[0], want[0]) < TOL, _diff(got[0], want[0])
        assert _diff(got[1, 20:], want[1]) < TOL, _diff(got[1, 20:], want[1])
    with pytest.raises(at.ConfigError, match="one int >= 0 per batch row"):
        _logits(model, x, attn_transition_prompt_length=[100])
    at.disable(model)


def test_a_width_declared_to_generate_must_be_its_own():
    """generate's own width, as one int or per row (from each row's first real token), changes
    nothing; any other width is a ConfigError naming the keyword."""
    model = _model()
    x, mask = left_padded(2, N, row=1, pad=20, seed=35)
    at.enable(model, SRA)
    plain = _gen(model, x, attention_mask=mask)
    for declared in (N, [N, N - 20], torch.tensor([N, N - 20])):
        got = _gen(model, x, attention_mask=mask, attn_transition_prompt_length=declared)
        assert torch.equal(got.sequences, plain.sequences)
        assert _diff(got.logits[0], plain.logits[0]) == 0.0
    for declared in (N - 1, [N, N]):
        with pytest.raises(at.ConfigError, match="attn_transition_prompt_length") as info:
            _gen(model, x, attention_mask=mask, attn_transition_prompt_length=declared)
        assert info.value.field == "attn_transition_prompt_length"
    at.disable(model)


# -- case 8: duplicate keys, continuous batching, an exception inside a chunked generate ----------

def test_a_duplicate_config_key_is_an_error_naming_it():
    with pytest.raises(at.ConfigError, match="'alpha' appears twice") as info:
        at.parse_config("classic:alpha=1,alpha=2")
    assert info.value.field == "alpha"
    model = _model()
    with pytest.raises(at.ConfigError, match="'beta' appears twice"):
        at.enable(model, "classic:beta=0.5,alpha=1,beta=0.8")
    assert not at.is_enabled(model)
    at.enable(model, CLASSIC)
    with pytest.raises(at.ConfigError, match="'threshold_len' appears twice"):
        _logits(model, ids(1, 20, seed=30), attn_transition="sra:threshold_len=8,threshold_len=9")
    at.disable(model)
    from attn_transition.evaluation.harness_args import parse_transition     # lm-eval's transition=

    with pytest.raises(at.ConfigError, match="'alpha' appears twice"):
        parse_transition("classic:alpha=1;beta=0.5;alpha=2")


def test_a_packed_continuous_batching_forward_is_refused():
    """A forward carrying continuous batching's packed-sequence arguments is refused by an edited
    call (transformers 4.57 runs generate_batch's forwards on the model as it is)."""
    model = _model()
    at.enable(model, CLASSIC)
    x = ids(1, 12, seed=31)
    with pytest.raises(UsageError, match="continuous batching"):
        _logits(model, x, cu_seq_lens_q=torch.tensor([0, 5, 12]))
    at.disable(model)


def test_continuous_batching_methods_refused_then_restored():
    from attn_transition.patches.transformers.compat import allow_continuous_batching, refuse_continuous_batching

    model = _model()
    if not callable(getattr(type(model), "generate_batch", None)):
        pytest.skip("this transformers has no continuous batching")
    refuse_continuous_batching(model)
    with pytest.raises(UsageError, match="generate_batch"):
        model.generate_batch([[3, 4, 5]], max_new_tokens=2)
    with pytest.raises(UsageError):
        model.init_continuous_batching()
    allow_continuous_batching(model)
    assert "generate_batch" not in model.__dict__
    assert getattr(type(model), "generate_batch") is not None


def test_generate_batch_on_an_enabled_model_is_refused_before_it_runs():
    model = _model()
    if not callable(getattr(type(model), "generate_batch", None)):
        pytest.skip("this transformers has no continuous batching")
    at.enable(model, CLASSIC)
    with pytest.raises(UsageError, match="continuous batching"):
        model.generate_batch([[3, 4, 5]], max_new_tokens=2)
    at.disable(model)
    assert "generate_batch" not in model.__dict__


def test_an_exception_inside_a_chunked_generate_leaves_nothing_stale():
    model = _model()
    x = ids(1, N, seed=32)
    at.enable(model, SRA)
    whole = _gen(model, x)
    calls = []

    def fail_on_the_second_chunk(module, args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")

    handle = model.model.layers[0].register_forward_pre_hook(fail_on_the_second_chunk)
    with pytest.raises(RuntimeError, match="interrupted") as info:
        _gen(model, x, prefill_chunk_size=32)
    handle.remove()
    del info
    gc.collect()
    assert at.get_state(model).chunked is None
    again = _gen(model, x, prefill_chunk_size=32)
    assert torch.equal(again.sequences, whole.sequences)
    assert _diff(again.logits[0], whole.logits[0]) < TOL
    at.disable(model)
