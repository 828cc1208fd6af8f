"""Long prompts: memory-bounded chunks of edited rows, and every way a prompt is prefilled
(one shot, static cache, in chunks with a cache, a continuation of a cached sequence).

Every comparison of two computational paths of edited results runs in float64 (TOL): the
schedules' thresholds are discontinuous, so in float32 two paths that round differently by
1e-7 (chunked vs one-shot products, masked vs unmasked kernels) can flip an entry and move
the logits by 1e-3; in float64 a flip needs a 1e-16 coincidence."""

import warnings

import pytest
from skips import need
import torch

import attn_transition as at
from attn_transition.kernel import Budget
from hf_compat import cache_kwarg, cache_of
from tiny_models import N, edit_configs, greedy, ids, left_padded, tiny_model

pytestmark = pytest.mark.patch          # part of the floor suite (make test-floor)

CLASSIC, SRA = edit_configs()
STRONG = at.ClassicConfig(min_length=0, alpha=1.5, beta=1.5)   # a visible effect inside mistral's window
# 1e-9 MiB: one row per chunk; 0.02 MiB: a few rows (boundaries fall inside edit blocks).
BUDGETS = [1e-9, 0.02]
TOL = 1e-9
F64 = torch.float64


def _run(model, x, **kw):
    with torch.no_grad():
        return model(x, **kw)


def test_rows_per_chunk_respects_the_budget():
    for heads, keys, mib in [(9, 16384, 64), (32, 131072, 256), (4, 150, 0.02), (32, 10**6, 1)]:
        rows = Budget(mib).rows(heads, keys)
        assert rows >= 1
        if rows > 1:
            assert rows * heads * keys * 9 <= mib * 2**20, (heads, keys, mib, rows)
        assert (rows + 1) * heads * keys * 9 > mib * 2**20          # the largest that fits
    assert Budget(None).rows(9, 4096) > 10**9


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma3_text"])
@pytest.mark.parametrize("config", [CLASSIC, SRA], ids=["classic", "sra"])
def test_chunked_rows_equal_unchunked(family, config):
    """Padded batch, sliding windows (mistral, gemma3), output_attentions: every budget, float64, 1e-9."""
    model = tiny_model(family, dtype=F64)
    x, mask = left_padded(2, N, row=1, pad=23, seed=4)
    at.enable(model, config, max_chunk_mib=None)
    whole = _run(model, x, attention_mask=mask, output_attentions=True)
    for budget in BUDGETS:
        at.enable(model, config, max_chunk_mib=budget)
        got = _run(model, x, attention_mask=mask, output_attentions=True)
        assert (got.logits - whole.logits).abs().max() < TOL, (family, budget)
        for a, b in zip(got.attentions, whole.attentions):
            assert (a - b).abs().max() < TOL, (family, budget)
        plain = _run(model, x, attention_mask=mask).logits        # edited rows only (no weights wanted)
        assert (plain - whole.logits).abs().max() < TOL, (family, budget)
    at.disable(model)
    stock = _run(model, x, attention_mask=mask).logits
    assert not torch.allclose(whole.logits, stock, atol=1e-4), "the configs must edit this prompt"


def test_chunked_rows_equal_unchunked_with_softcap_and_eager_base():
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = tiny_model("gemma3_text", attn_implementation="eager", dtype=F64)
    module = model.model.layers[2].self_attn
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, N, 8, generator=g, dtype=F64) * s for h, s in ((4, 3), (2, 3), (2, 1)))
    outs = []
    for budget in [None] + BUDGETS:
        at.enable(model, CLASSIC, max_chunk_mib=budget)
        fn = ALL_ATTENTION_FUNCTIONS[model.config._attn_implementation]
        outs.append(fn(module, q, k, v, None, scaling=1.0, softcap=2.0, output_attentions=True))
    at.disable(model)
    for out, weights in outs[1:]:
        assert (out - outs[0][0]).abs().max() < TOL and (weights - outs[0][1]).abs().max() < TOL


def test_non_float32_keys_are_upcast_in_blocks():
    """bfloat16 inputs: the key/value up-cast in blocks (small budget) equals the one-piece path.

    bfloat16 cannot be run in float64, so the inputs leave rounding nothing to decide: small
    integer queries and keys and a power-of-two scaling make every score exact in float32,
    whatever the order of the products, so both paths see bitwise the same weights (checked)
    and make the same threshold decisions. Only the sum of values in blocks rounds differently,
    before the output is rounded to bfloat16: one bfloat16 step at most."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = tiny_model("llama").to(torch.bfloat16)
    module = model.model.layers[2].self_attn
    g = torch.Generator().manual_seed(1)
    q, k = (torch.randint(-2, 3, (1, h, N, 8), generator=g).to(torch.bfloat16) for h in (4, 2))
    v = torch.randn(1, 2, N, 8, generator=g).to(torch.bfloat16)
    res = []
    for budget in (None, 1e-4):
        at.enable(model, CLASSIC, max_chunk_mib=budget)
        fn = ALL_ATTENTION_FUNCTIONS[model.config._attn_implementation]
        out, weights = fn(module, q, k, v, None, scaling=0.25, output_attentions=True)
        res.append((out.float(), weights.float()))
    at.enable(model, CLASSIC, max_chunk_mib=None)
    at.get_state(model).replace_options(at.get_state(model).with_options(active=False))
    stock = fn(module, q, k, v, None, scaling=0.25)[0].float()
    at.disable(model)
    (out, weights), (out_blocks, weights_blocks) = res
    assert torch.equal(weights, weights_blocks), "exact scores: the same weights, the same edit"
    step = torch.maximum(out.abs(), out_blocks.abs()) * 2 ** -7                # >= one bfloat16 step
    assert ((out - out_blocks).abs() <= step).all(), (out - out_blocks).abs().max()
    assert (out - stock).abs().max() > 0.05, "the edit acts"


def test_scratch_is_reused_grows_and_keeps_results():
    from attn_transition.kernel import Scratch, attention_weights as row_weights

    scratch = Scratch()
    a = scratch.take((2, 3, 4), torch.float32, torch.device("cpu"))
    b = scratch.take((3, 2, 2), torch.float32, torch.device("cpu"))    # fits: the same memory
    assert b.data_ptr() == a.data_ptr() and scratch.nbytes == 24 * 4
    c = scratch.take((5, 10), torch.float32, torch.device("cpu"))      # does not fit: grows
    assert scratch.nbytes == 50 * 4 and c.shape == (5, 10)
    assert scratch.take((2,), torch.float64, torch.device("cpu")).dtype == torch.float64
    scratch.release()
    assert scratch.nbytes == 0
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(6, 5, 8, generator=g), torch.randn(2, 12, 8, generator=g)
    for softcap in (None, 20.0):
        want, _ = row_weights(q, k, 7, None, 0.3, softcap)
        got, _ = row_weights(q, k, 7, None, 0.3, softcap, scratch=scratch)
        assert torch.equal(got, want) and got.data_ptr() == scratch.take((1,), got.dtype, got.device).data_ptr()
        again, _ = row_weights(q, k, 7, None, 0.3, softcap, scratch=scratch, inplace=False)
        assert torch.equal(again, want) and again.data_ptr() != got.data_ptr()   # never in a grad path


def test_scratch_lives_for_one_forward_call():
    model = tiny_model("llama")
    at.enable(model, CLASSIC)
    state = at.get_state(model)
    seen = []
    layer = model.model.layers[2].self_attn                    # an edited layer (1 .. L - 3)
    calls = []

    def look(*args) -> None:
        seen.append(state.current_call().scratch.nbytes)
        calls.append(state.current_call())

    handle = layer.register_forward_hook(look)
    _run(model, ids(1, N))
    assert seen and seen[0] > 0, "the edited rows are computed in the call's scratch buffer"
    assert state.current_call() is None and calls[0].scratch.nbytes == 0, "released when the decoder's forward returns"
    raising = layer.register_forward_hook(lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        _run(model, ids(1, N))
    assert state.current_call() is None and calls[-1].scratch.nbytes == 0, "released when the forward raises too"
    handle.remove()
    raising.remove()
    at.disable(model)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()), "disable removes both hooks"


def test_auto_budget_depends_on_the_device():
    from attn_transition.budget import AUTO_CHUNK_MIB, AUTO_CPU_MIN_MIB, AUTO_CPU_ROWS, chunk_budget

    assert at.get_state(at.enable(tiny_model("llama"))).max_chunk_mib == "auto"
    cpu = torch.device("cpu")
    # CPU: a fixed number of rows per chunk (memory a fixed share of stock's) on long prompts...
    for heads, keys in [(9, 8192), (9, 16384), (16, 8192)]:
        budget = chunk_budget("auto", cpu, heads, keys)
        assert AUTO_CPU_MIN_MIB <= budget.mib < AUTO_CHUNK_MIB["cpu"], (heads, keys, budget)
        assert budget.rows(heads, keys) == AUTO_CPU_ROWS == 32, (heads, keys, budget)
    # ... never under the floor on short ones (more rows per chunk), never over the cap.
    for heads, keys in [(9, 2048), (4, 150)]:
        budget = chunk_budget("auto", cpu, heads, keys)
        assert budget.mib == AUTO_CPU_MIN_MIB == 16 and budget.rows(heads, keys) > AUTO_CPU_ROWS, (heads, keys)
    assert chunk_budget("auto", cpu, 9, 2048).rows(9, 2048) == 101           # 16 MiB / (9 B x 9 heads x 2048 keys)
    assert chunk_budget("auto", cpu, 32, 131072).mib == AUTO_CHUNK_MIB["cpu"] == 64       # capped
    assert 1 <= Budget(64).rows(32, 131072) < AUTO_CPU_ROWS
    assert chunk_budget("auto", torch.device("meta"), 9, 2048).mib == AUTO_CHUNK_MIB["accelerator"]
    assert chunk_budget(8, cpu, 9, 2048).mib == 8 and chunk_budget(None, cpu, 9, 2048).mib is None


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "64", True])
def test_bad_budget_is_named(bad):
    model = tiny_model("llama")
    with pytest.raises(at.ConfigError, match="max_chunk_mib"):
        at.enable(model, CLASSIC, max_chunk_mib=bad)
    assert not at.is_enabled(model)


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_static_cache_prefill_is_edited_like_a_dynamic_one(family):
    model = tiny_model(family, dtype=F64)
    x, mask = left_padded(2, N, row=0, pad=17, seed=8)
    gen = greedy(mask, 4)
    stock = model.generate(x, **gen)
    at.enable(model, CLASSIC)
    dynamic = model.generate(x, **gen)
    static = model.generate(x, cache_implementation="static", **gen)
    at.disable(model)
    assert not torch.allclose(dynamic.logits[0], stock.logits[0], atol=1e-4)
    for a, b in zip(static.logits, dynamic.logits):
        assert (a - b).abs().max() < TOL
    assert torch.equal(static.sequences, dynamic.sequences)


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma3_text"])
@pytest.mark.parametrize("config", [STRONG, SRA], ids=["classic", "sra"])
def test_prefill_in_chunks_equals_one_shot(family, config):
    """generate(prefill_chunk_size=...) with the declared prompt width equals the one-shot prefill
    (windowed caches of mistral / gemma3 included)."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("transformers 4.x's chunked prefill ignores left padding in position_ids "
                    "(the stock model's padded row differs from its one-shot prefill too)")
    model = tiny_model(family, dtype=F64)
    x, mask = left_padded(2, N, row=1, pad=30, seed=9)
    gen = greedy(mask, 3)
    at.enable(model, config)
    one = model.generate(x, **gen)
    chunked = model.generate(x, prefill_chunk_size=32, attn_transition_prompt_length=x.shape[1], **gen)
    at.disable(model)
    stock = model.generate(x, **gen)
    effect = (one.logits[0] - stock.logits[0]).abs().max()
    assert effect > 1e-3
    for a, b in zip(chunked.logits, one.logits):
        assert (a - b).abs().max() < TOL


def test_prompt_fed_in_two_pieces_with_a_cache():
    model = tiny_model("llama", dtype=F64)
    x = ids(1, 200, seed=10)
    n, cut = x.shape[1], 120
    kw = cache_kwarg(model)
    at.enable(model, CLASSIC)
    one = _run(model, x).logits[:, -1]
    first = _run(model, x[:, :cut], use_cache=True, attn_transition_prompt_length=n)
    second = _run(model, x[:, cut:], use_cache=True, attn_transition_prompt_length=n,
                  **{kw: cache_of(first)})
    assert (second.logits[:, -1] - one).abs().max() < TOL
    # Without the declared length the continuation is left unedited, with one warning.
    first = _run(model, x[:, :cut], use_cache=True)
    with pytest.warns(UserWarning, match="attn_transition_prompt_length"):
        cont = _run(model, x[:, cut:], use_cache=True, **{kw: cache_of(first)})
    # The reference: the same edited first piece, then the tail through the stock model.
    first = _run(model, x[:, :cut], use_cache=True)
    at.disable(model)
    stock_tail = _run(model, x[:, cut:], use_cache=True, **{kw: cache_of(first)}).logits[:, -1]
    assert (cont.logits[:, -1] - stock_tail).abs().max() < TOL
    assert (cont.logits[:, -1] - one).abs().max() > 1e-4


def test_decoding_steps_plan_nothing():
    """A decode step's plan is built without tensor work, and names no config."""
    model = tiny_model("llama")
    x = ids(1, N, seed=13)
    at.enable(model, CLASSIC)
    state = at.get_state(model)
    seen = []
    handle = model.model.layers[0].register_forward_hook(lambda *a: seen.append(state.current_call()))
    model.generate(x, max_new_tokens=3, do_sample=False, pad_token_id=0)
    handle.remove()
    assert len(seen) == 3 and seen[0].config == CLASSIC and seen[0].q_len == N
    assert all(c.q_len == 1 and c.config is None and c.rows == () for c in seen[1:]), seen
    at.disable(model)


def test_bad_prompt_length_is_named():
    model = tiny_model("llama")
    at.enable(model, CLASSIC)
    with pytest.raises(at.ConfigError, match="attn_transition_prompt_length"):
        _run(model, ids(1, 20), attn_transition_prompt_length=-3)
    at.disable(model)


def test_device_map_model_equals_single_device():
    """Layers placed by a device map (all on CPU here): the same result as the plain model."""
    need("accelerate", "make setup; not in the floor environment")
    from transformers import AutoModelForCausalLM
    import tempfile

    model = tiny_model("llama", dtype=F64)
    x = ids(1, N, seed=14)
    at.enable(model, CLASSIC)
    want = _run(model, x).logits
    at.disable(model)
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        mapped = AutoModelForCausalLM.from_pretrained(d, device_map="auto", attn_implementation="sdpa",
                                                      dtype=F64).eval()
    at.enable(mapped, CLASSIC)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _run(mapped, x).logits
    assert got.dtype == F64 and (got - want).abs().max() < TOL
    assert not torch.allclose(got, _run(model, x).logits, atol=1e-4), "the edit acts"


def test_tensor_parallel_two_cpu_ranks_equal_one_process(tmp_path):
    """tp_plan="auto" under torchrun (2 CPU processes, gloo): heads split across ranks, same logits."""
    need("accelerate", "make setup; not in the floor environment")   # transformers places TP weights through it
    import json
    import os
    import subprocess
    import sys

    model = tiny_model("llama", dtype=F64)
    x = ids(1, N, seed=14)
    model.save_pretrained(tmp_path)
    at.enable(model, CLASSIC)
    want = _run(model, x).logits
    at.disable(model)
    worker = os.path.join(os.path.dirname(__file__), "helpers", "tp_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--standalone", worker, str(tmp_path), str(N), "float64"],
                          capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "tp_heads.json").read_text()) == [2, 2], "each rank holds half the heads"
    got = torch.load(tmp_path / "tp_logits.pt")
    assert got.dtype == F64 and (got - want).abs().max() < TOL
