"""What each call edits, in every setting a model is called in: threads sharing one model,
``generate`` with and without a cache, prefill in chunks, assisted decoding, a continued
cache, and a declared prompt width that cannot be right.

Every comparison of two computational paths runs the model in float64: SRA's thresholds are
discontinuous, and in float32 two kernels that round differently by 1e-7 can flip an entry;
in float64 a flip needs a 1e-16 coincidence, so the tolerances below (1e-9) cannot be met by
chance and a half-edited or wrongly edited row (1e-3 and more) cannot pass.
"""

import threading
import warnings

import pytest
import torch

import attn_transition as at
from tiny_models import N, edit_configs, ids, tiny_model
from skips import need

pytestmark = pytest.mark.patch          # part of the floor suite (make test-floor)

CLASSIC, SRA = edit_configs()
TOL = 1e-9


def _model(seed: int = 0):
    return tiny_model("llama", seed=seed).double()


def _ids(batch: int, n: int, seed: int) -> torch.Tensor:
    return ids(batch, n, seed=seed)


def _logits(model, x, **kw) -> torch.Tensor:
    with torch.no_grad():
        return model(x, **kw).logits


def _gen(model, x, **kw):
    with torch.no_grad():
        return model.generate(x, max_new_tokens=6, do_sample=False, pad_token_id=0,
                              return_dict_in_generate=True, output_scores=True, **kw)


def _no_library_warnings(record) -> None:
    ours = [str(w.message) for w in record if "attn_transition" in str(w.message)]
    assert not ours, ours


# -- threads --------------------------------------------------------------------------------

def test_threads_sharing_one_model_get_their_sequential_results():
    """4 threads, each with its own prompt and switch (two configs, stock, the default), 3 calls
    each, interleaved on one enabled model: each equals what it gives alone."""
    model = _model()
    at.enable(model, CLASSIC)
    jobs = [(_ids(1, N, seed=i), switch) for i, switch in enumerate([None, SRA, False, "classic:alpha=1,beta=0.5,min_length=0"])]
    want = [_logits(model, x, attn_transition=switch) for x, switch in jobs]
    for (x, switch), edited in zip(jobs, want):
        if switch is not False:                    # each edited job differs from its stock result
            assert (edited - _logits(model, x, attn_transition=False)).abs().max() > 1e-3, switch
    got: dict = {}
    start = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        x, switch = jobs[i]
        start.wait()
        got[i] = [_logits(model, x, attn_transition=switch) for _ in range(3)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, runs in got.items():
        for run in runs:
            assert (run - want[i]).abs().max() < TOL, (i, jobs[i][1], (run - want[i]).abs().max().item())
    at.disable(model)


# -- generate ---------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [CLASSIC, SRA], ids=["classic", "sra"])
def test_generate_without_a_cache_edits_only_the_prompt_rows(config):
    """use_cache=False runs the whole sequence at every step: its prompt rows are edited as the
    cached prefill edits them, the generated rows never; the same tokens and scores as with a cache."""
    model = _model()
    x = _ids(1, N, seed=5)
    stock = _gen(model, x, use_cache=True).sequences
    assert torch.equal(_gen(model, x, use_cache=False).sequences, stock)
    at.enable(model, config)
    cached = _gen(model, x, use_cache=True)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        plain = _gen(model, x, use_cache=False)
    _no_library_warnings(record)
    assert torch.equal(plain.sequences, cached.sequences), (plain.sequences, cached.sequences)
    for a, b in zip(plain.scores, cached.scores):
        assert (a - b).abs().max() < TOL
    edited_first = cached.scores[0]
    stock_first = _gen(model, x, use_cache=True, attn_transition=False).scores[0]
    assert (edited_first - stock_first).abs().max() > 1e-3, "the edit acts on this prompt"
    at.disable(model)


@pytest.mark.parametrize("config", [CLASSIC, SRA], ids=["classic", "sra"])
def test_generate_in_chunks_needs_no_declared_width(config):
    """generate(prefill_chunk_size=...) knows the prompt's width: the chunks are edited like the
    one-shot prefill, with no warning and no keyword."""
    model = _model()
    x = _ids(2, N, seed=6)
    at.enable(model, config)
    whole = _gen(model, x)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        chunked = _gen(model, x, prefill_chunk_size=32)
    _no_library_warnings(record)
    assert torch.equal(chunked.sequences, whole.sequences)
    assert (chunked.scores[0] - whole.scores[0]).abs().max() < TOL
    at.disable(model)


def test_assisted_decoding_raises_no_warning_and_edits_the_prompt():
    """Prompt-lookup (assisted) decoding verifies several candidate tokens per step with a
    cache: decoding steps, never edited, never warned about."""
    model = _model()
    x = _ids(1, N, seed=7)
    at.enable(model, SRA)
    plain = _gen(model, x)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assisted = _gen(model, x, prompt_lookup_num_tokens=3)
    _no_library_warnings(record)
    assert torch.equal(assisted.sequences, plain.sequences)
    at.disable(model)


def test_generate_continuing_a_given_cache_edits_nothing_and_says_so():
    """A chat's next turn: generate given the cache of an earlier turn. The new prompt tokens
    are not edited (the schedule's positions belong to one whole prompt), with a warning."""
    model = _model()
    x = _ids(1, N, seed=8)
    at.enable(model, CLASSIC)
    first = _gen(model, x, use_cache=True)
    turn = torch.cat([first.sequences, _ids(1, 40, seed=9)], dim=1)
    with pytest.warns(UserWarning, match="continues .* cached tokens it was given"):
        with torch.no_grad():
            model.generate(turn, past_key_values=first.past_key_values, max_new_tokens=2, do_sample=False,
                           pad_token_id=0)
    at.disable(model)


# -- prefill fed in chunks by hand --------------------------------------------------------

def test_chunks_fed_by_hand_without_the_width_warn_of_the_half_edit():
    model = _model()
    x = _ids(1, N, seed=10)
    at.enable(model, CLASSIC)
    with torch.no_grad():
        first = model(x[:, :100], use_cache=True)
        with pytest.warns(UserWarning, match="neither stock nor the transition"):
            model(x[:, 100:], past_key_values=first.past_key_values, use_cache=True)
    at.disable(model)


def test_a_declared_width_that_cannot_be_right_is_an_error():
    """A chunk that ends past the prompt's width, and a width that is not generate's own. (A
    one-shot width smaller than the input is a prompt with continuation rows, not an error:
    tests/test_call_context.py.)"""
    model = _model()
    x = _ids(1, N, seed=11)
    at.enable(model, CLASSIC)
    with torch.no_grad():
        first = model(x[:, :100], use_cache=True, attn_transition_prompt_length=120)
        with pytest.raises(at.ConfigError, match="ends inside this call"):
            model(x[:, 100:], past_key_values=first.past_key_values, use_cache=True,
                  attn_transition_prompt_length=120)
    with pytest.raises(at.ConfigError, match=f"not the width of the input generate was given \\({N}\\)"):
        _gen(model, x, attn_transition_prompt_length=N - 1)
    at.disable(model)


def test_chunks_with_the_declared_width_equal_the_one_shot_prefill():
    model = _model()
    x = _ids(1, N, seed=12)
    at.enable(model, SRA)
    one = _logits(model, x)[:, -1]
    with torch.no_grad():
        first = model(x[:, :64], use_cache=True, attn_transition_prompt_length=N)
        second = model(x[:, 64:], past_key_values=first.past_key_values, use_cache=True,
                       attn_transition_prompt_length=N)
    assert (second.logits[:, -1] - one).abs().max() < TOL
    at.disable(model)


# -- PEFT -----------------------------------------------------------------------------------

def test_a_peft_wrapper_is_refused_naming_both_orders_that_work():
    peft = need("peft", "make setup; not in the floor environment")
    model = _model()
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(at.NotACausalLMError, match=r"get_base_model\(\).*before wrapping"):
        at.enable(wrapped)
    at.enable(wrapped.get_base_model(), CLASSIC)
    assert at.is_enabled(wrapped.get_base_model())
