"""Each vLLM request carries its own transition (``attn_transition.patches.vllm.requests``).

Runs in the vLLM environment (``make setup-vllm``). One engine (``LLM``, a tiny random Llama whose
engine default is a continuous config, prompts in chunks of 512, prefix caching on) and one
``vllm serve`` (the same model, ``additional_config={"attn_transition": "none"}``: only requests
that ask are edited) serve the whole module; the server starts first and comes up while the
engine's tests run. Both run with tests/custom_schedule.py's schedules on their path, declared
by an entry point (:data:`OUTSIDE_SOURCE`), which their processes load when a request names one. Comparisons with the transformers path are made against the floor of the same
comparison without the edit, as in ``tests/test_vllm.py`` (whose CONTINUOUS config is used here: no
threshold can be moved by rounding, so the two paths may differ only by the two engines' rounding).
"""

from __future__ import annotations

import copy
import gc
import os
from typing import Any, Optional

import pytest
from skips import need

vllm = need("vllm", "the vLLM environment (make setup-vllm) runs these tests", provided_by=("setup-vllm",))

import torch  # noqa: E402

import attn_transition as at  # noqa: E402
from attn_transition.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.vllm

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
TOP = 20
MAX_MODEL_LEN = 2048
CHUNK = 512
FLOOR_TIMES = 4
# Continuous configs (thresholds far below every weight; see tests/test_vllm.py's CONTINUOUS).
CONTINUOUS = "classic:alpha=1e-30,beta=0.5,min_length=0"
OTHER = "classic:alpha=1e-30,beta=0.2,min_length=0"
LENGTHS = (300, 700, 1100)                      # the longest arrives in chunks of CHUNK
WIDTH = 450                                     # a declared prompt width below LENGTHS[1]
WIDTH_KEY = "attn_transition_prompt_length"


def _prompt(n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 97, (n,), generator=g).tolist()


PROMPTS = [_prompt(n, 1 + i) for i, n in enumerate(LENGTHS)]


# ----------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A tiny random Llama (head size 32) with a word-level tokenizer of its 97 tokens (beam search
    and the server need one)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    from tiny_models import VOCAB, tiny_model

    folder = tmp_path_factory.mktemp("tiny-llama-tok")
    tiny_model("llama", hidden_size=128, intermediate_size=256, head_dim=32).save_pretrained(folder)
    words = Tokenizer(WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    words.pre_tokenizer = WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="t0", pad_token="t0", bos_token="t1",
                            eos_token="t2").save_pretrained(folder)
    return str(folder)


# ----------------------------------------------------------------------------- the transformers path
_HF: dict[Any, Any] = {}


def hf_first(model_dir: str, prompt: list[int], config: Optional[str], width: Optional[int] = None) -> torch.Tensor:
    """The transformers path's log-probabilities of the token after ``prompt`` (float32): the first
    ``width`` tokens as the edited prompt, the rest fed after them through the cache, unedited."""
    key = (tuple(prompt), config, width)
    if key not in _HF:
        lm = _hf_model(model_dir, config)
        n = width or len(prompt)
        kwargs = {} if config is None else {WIDTH_KEY: n}
        with torch.no_grad():
            out = lm(torch.tensor([prompt[:n]]), use_cache=True, **kwargs)
            if n < len(prompt):
                out = lm(torch.tensor([prompt[n:]]), past_key_values=out.past_key_values, use_cache=True, **kwargs)
        _HF[key] = out.logits[0, -1].float().log_softmax(-1)
    return _HF[key]


def _hf_model(model_dir: str, config: Optional[str]):
    key = ("model", config)
    if key not in _HF:
        from transformers import AutoModelForCausalLM

        lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        if config is not None:
            at.enable(lm, at.parse_config(config))
        _HF[key] = lm
    return _HF[key]


def gap(answer: dict[int, float], reference: torch.Tensor) -> float:
    """Largest |difference| over the answer's top tokens' log-probabilities."""
    return max(abs(lp - reference[t].item()) for t, lp in answer.items())


def between(a: dict[int, float], b: dict[int, float]) -> float:
    shared = a.keys() & b.keys()
    return max(abs(a[t] - b[t]) for t in shared)


# ----------------------------------------------------------------------------- a schedule from outside the package
# tests/custom_schedule.py's schedules (``shift``; ``wholeshift``, the same edit declared not
# continuous), installed as a distribution that declares them in the entry-point group
# ``attn_transition.schedules`` through a module that records each process importing it.
OUTSIDE_MODULE = "outside_schedule_vllm"
OUTSIDE_SPEC = "shift:fraction=0.5,rows=1000"   # rows [max(n - 1000, 4), n): across the chunks of 512
OUTSIDE_WHOLE = "wholeshift:fraction=0.5,rows=1000"
OUTSIDE_SOURCE = '''"""tests/custom_schedule.py's schedules, as an installed package declares them; each process that
imports this module says so in imported-by.txt beside it (its pid)."""

import os
from pathlib import Path

with open(Path(__file__).with_name("imported-by.txt"), "a") as record:
    record.write(f"{os.getpid()}\\n")

from custom_schedule import ShiftConfig, WholeShiftConfig  # noqa: E402
'''


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A folder holding :data:`OUTSIDE_SOURCE` and a copy of tests/custom_schedule.py as modules, and a
    ``.dist-info`` that declares ``shift`` and ``wholeshift`` in ``attn_transition.schedules``; first on
    this process's path and on ``PYTHONPATH`` of every process started while the module runs (the
    engine's, the server's). Nothing here imports them. Yields the record of the processes that did."""
    import importlib
    import shutil
    import sys
    from pathlib import Path

    folder = tmp_path_factory.mktemp("outside-schedule")
    shutil.copy(Path(__file__).with_name("custom_schedule.py"), folder / "custom_schedule.py")
    (folder / f"{OUTSIDE_MODULE}.py").write_text(OUTSIDE_SOURCE)
    info = folder / f"{OUTSIDE_MODULE}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {OUTSIDE_MODULE.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[attn_transition.schedules]\nshift = {OUTSIDE_MODULE}:ShiftConfig\n"
                                           f"wholeshift = {OUTSIDE_MODULE}:WholeShiftConfig\n")
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), before]))
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    yield folder / "imported-by.txt"
    sys.path.remove(str(folder))
    if before is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = before


# ----------------------------------------------------------------------------- the server (started first)
@pytest.fixture(scope="module")
def server_process(model_dir, outside):
    """``vllm serve`` with ``additional_config={"attn_transition": "none"}``; not yet waited for (the
    engine below starts meanwhile)."""
    from vllm_server import started

    with started(model_dir, {"attn_transition": "none"}, MAX_MODEL_LEN, "vllm-requests",
                 env={"PYTHONPATH": os.environ["PYTHONPATH"]}) as running:
        yield running


@pytest.fixture(scope="module")
def server(server_process) -> str:
    from vllm_server import wait_healthy

    return wait_healthy(server_process)


# ----------------------------------------------------------------------------- the engine
@pytest.fixture(scope="module")
def llm(model_dir, server_process):
    from vllm import LLM

    engine = LLM(model=model_dir, dtype="float32", enforce_eager=True, max_model_len=MAX_MODEL_LEN, seed=0,
                 max_num_batched_tokens=CHUNK, additional_config={"attn_transition": CONTINUOUS})
    assert engine.llm_engine.vllm_config.cache_config.enable_prefix_caching is True     # salted, not off
    yield engine
    engine.llm_engine.engine_core.shutdown()
    del engine
    gc.collect()


def ask(llm, prompt: list[int], extra: Optional[dict] = None, **prompt_fields: Any) -> Any:
    return run(llm, [(prompt, extra, prompt_fields)])[0]


def run(llm, requests: list[tuple]) -> list[Any]:
    """One ``generate`` of ``(prompt, extra_args, prompt fields)`` requests, one token each."""
    from vllm import SamplingParams

    prompts = [{"prompt_token_ids": p, **fields} for p, _, fields in requests]
    params = [SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP, detokenize=False, extra_args=extra)
              for _, extra, _ in requests]
    return llm.generate(prompts, params, use_tqdm=False)


def first(output) -> dict[int, float]:
    return {t: lp.logprob for t, lp in output.outputs[0].logprobs[0].items()}


@pytest.fixture(scope="module")
def floor(llm, model_dir) -> float:
    """vLLM stock (requests asking "none") vs transformers stock, on every prompt."""
    stock = run(llm, [(p, {"attn_transition": "none"}, {}) for p in PROMPTS])
    value = max(gap(first(o), hf_first(model_dir, p, None)) for o, p in zip(stock, PROMPTS))
    print(f"floor (vLLM stock vs transformers stock): {value:.2e}")
    return value


# ----------------------------------------------------------------------------- mixed configs in one batch
MIXED = [  # (prompt index, extra_args, config, width) the reference runs with
    (0, None, CONTINUOUS, None),                             # the engine's default
    (1, {"attn_transition": OTHER}, OTHER, None),
    (2, {"attn_transition": "none"}, None, None),
    (1, {"attn_transition": OTHER, WIDTH_KEY: WIDTH}, OTHER, WIDTH),
    (2, {"attn_transition": "classic:alpha=1e-30,beta=0.2,min_length=0"}, OTHER, None),   # chunked
    (0, {WIDTH_KEY: 200}, CONTINUOUS, 200),
]


def test_mixed_configs_and_widths_in_one_batch(llm, model_dir, floor):
    requests = [(PROMPTS[i], extra, {}) for i, extra, _, _ in MIXED]
    alone = [run(llm, [r])[0] for r in requests]
    llm.reset_prefix_cache()                                # the batch computes every row itself
    batched = run(llm, requests)
    for (i, extra, config, width), one, many in zip(MIXED, alone, batched):
        want = hf_first(model_dir, PROMPTS[i], config, width)
        got = first(one)
        effect = gap(got, hf_first(model_dir, PROMPTS[i], None))
        print(f"{extra}: vs transformers {gap(got, want):.2e}, batched vs alone {between(got, first(many)):.2e}, "
              f"effect {effect:.2e}, floor {floor:.2e}")
        assert gap(got, want) <= FLOOR_TIMES * floor
        assert between(got, first(many)) <= FLOOR_TIMES * floor            # each in the batch as alone
        if config is not None:
            assert effect > 100 * floor                                     # the edit really happened
        if width is not None:                                               # the width really mattered
            assert gap(got, hf_first(model_dir, PROMPTS[i], config)) > 100 * floor


# ----------------------------------------------------------------------------- refused before the engine
@pytest.mark.parametrize("extra, words", [
    ({"attn_transition": "classic:alpha=-1"}, "ClassicConfig.alpha must be a number in (0, inf)"),
    ({"attn_transition": "sra:threshhold=0.1"}, "threshold"),
    ({"attn_transition": 3}, "must be a config string"),
    ({WIDTH_KEY: 0}, "must be an int >= 1"),
    ({WIDTH_KEY: "5"}, "must be an int >= 1"),
    ({WIDTH_KEY: True}, "must be an int >= 1"),
    ({WIDTH_KEY: LENGTHS[0] + 1}, "longer than the prompt (300 tokens)"),
])
def test_invalid_values_raise_and_the_engine_answers(llm, extra, words):
    before = first(ask(llm, PROMPTS[0], {"attn_transition": "none"}))
    key = next(iter(extra))
    with pytest.raises(ValueError) as err:                  # ConfigError, before the engine sees it
        run(llm, [(PROMPTS[1], None, {}), (PROMPTS[0], extra, {})])   # the first one is aborted
    message = str(err.value)
    assert f"extra_args[{key!r}]" in message and words in message and "\n" not in message, message
    assert isinstance(err.value, ConfigError) and err.value.field == key
    assert first(ask(llm, PROMPTS[0], {"attn_transition": "none"})) == before


# ----------------------------------------------------------------------------- prefix caching, salted
def test_prefix_cache_reuses_exact_repeats_only(llm, model_dir, floor):
    prompt = _prompt(600, 11)                               # used by no other test
    cached = lambda output: output.num_cached_tokens or 0  # noqa: E731
    one = ask(llm, prompt, {"attn_transition": OTHER})
    again = ask(llm, prompt, {"attn_transition": OTHER})
    assert cached(one) == 0 and cached(again) >= 512        # a hit: the full blocks before the last token
    assert between(first(one), first(again)) <= FLOOR_TIMES * floor
    assert gap(first(again), hf_first(model_dir, prompt, OTHER)) <= FLOOR_TIMES * floor
    # Same tokens, another width, config or user salt: nothing reused.
    assert cached(ask(llm, prompt, {"attn_transition": OTHER, WIDTH_KEY: 599})) == 0
    assert cached(ask(llm, prompt, {"attn_transition": CONTINUOUS})) == 0
    assert cached(ask(llm, prompt, {"attn_transition": OTHER}, cache_salt="user")) == 0
    assert cached(ask(llm, prompt, {"attn_transition": OTHER}, cache_salt="user")) >= 512
    # Not edited: stock caching, shared with nothing edited.
    assert cached(ask(llm, prompt, {"attn_transition": "none"})) == 0
    assert cached(ask(llm, prompt, {"attn_transition": "none"})) >= 512


# ----------------------------------------------------------------------------- beam search
def _beams(llm, prompt: list[int], width: int, steps: int):
    from vllm.sampling_params import BeamSearchParams

    (out,) = llm.beam_search([{"prompt_token_ids": prompt}],
                             BeamSearchParams(beam_width=width, max_tokens=steps, ignore_eos=True))
    return out.sequences


def test_beam_width_1_is_greedy(llm, floor):
    from vllm import SamplingParams

    prompt, steps = PROMPTS[0], 4
    (beam,) = _beams(llm, prompt, 1, steps)
    params = SamplingParams(max_tokens=steps, temperature=0.0, logprobs=2, detokenize=False, ignore_eos=True)
    (greedy,) = llm.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)
    assert beam.tokens[len(prompt):] == list(greedy.outputs[0].token_ids)
    for step, (b, g) in enumerate(zip(beam.logprobs, greedy.outputs[0].logprobs)):
        shared = b.keys() & g.keys()
        worst = max(abs(b[t].logprob - g[t].logprob) for t in shared)
        assert worst <= FLOOR_TIMES * floor, (step, worst)   # each step's prompt rows: the original prompt's


def test_beam_width_2_equals_transformers(llm, model_dir):
    prompt, steps = PROMPTS[0], 4
    best = _beams(llm, prompt, 2, steps)[0]
    lm = _hf_model(model_dir, CONTINUOUS)
    generation = copy.deepcopy(lm.generation_config)        # as vLLM's ignore_eos: no beam finishes early
    generation.eos_token_id = None
    with torch.no_grad():
        out = lm.generate(torch.tensor([prompt]), generation_config=generation, num_beams=2, max_new_tokens=steps,
                          do_sample=False, length_penalty=1.0, early_stopping=False, pad_token_id=0)
    assert best.tokens[len(prompt):] == out[0, len(prompt):].tolist()


# ----------------------------------------------------------------------------- through the server
def _completion(client, model: str, prompt: list[int], xargs: Optional[dict] = None, body: Optional[dict] = None):
    extra = {"return_tokens_as_token_ids": True, **({"vllm_xargs": xargs} if xargs else {}), **(body or {})}
    return client.completions.create(model=model, prompt=prompt, max_tokens=1, temperature=0.0, logprobs=TOP,
                                     extra_body=extra)


def _first_http(reply) -> dict[int, float]:
    return {int(t.split(":")[1]): lp for t, lp in reply.choices[0].logprobs.top_logprobs[0].items()}


def test_server_per_request_configs(server, model_dir, floor):
    from concurrent.futures import ThreadPoolExecutor

    import openai

    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    asks = [(PROMPTS[0], {"attn_transition": CONTINUOUS}, CONTINUOUS, None),
            (PROMPTS[1], None, None, None),                                   # the server's default: none
            (PROMPTS[1], {"attn_transition": OTHER, WIDTH_KEY: WIDTH}, OTHER, WIDTH)]
    with ThreadPoolExecutor(len(asks)) as pool:                               # concurrent: one batch
        replies = list(pool.map(lambda a: _completion(client, model_dir, a[0], a[1]), asks))
    for (prompt, xargs, config, width), reply in zip(asks, replies):
        got = _first_http(reply)
        print(f"server {xargs}: vs transformers {gap(got, hf_first(model_dir, prompt, config, width)):.2e}")
        assert gap(got, hf_first(model_dir, prompt, config, width)) <= FLOOR_TIMES * floor
        if config is not None:
            assert gap(got, hf_first(model_dir, prompt, None)) > 100 * floor
    # Invalid values: HTTP 400 naming the field; the engine answers the next request.
    for xargs in ({"attn_transition": "classic:alpha=-1"}, {WIDTH_KEY: 10_000}):
        with pytest.raises(openai.BadRequestError) as err:
            _completion(client, model_dir, PROMPTS[0], xargs)
        assert err.value.status_code == 400 and next(iter(xargs)) in str(err.value)
    with pytest.raises(openai.BadRequestError, match="use_beam_search"):    # step requests lose vllm_xargs
        _completion(client, model_dir, PROMPTS[0], {"attn_transition": OTHER}, {"use_beam_search": True, "n": 2})
    again = _first_http(_completion(client, model_dir, *asks[0][:2]))
    assert between(again, _first_http(replies[0])) <= FLOOR_TIMES * floor


# ----------------------------------------------------------------------------- the outside schedule
def test_a_schedule_from_outside_the_package_runs_in_the_engine_and_the_server(llm, server, model_dir, floor,
                                                                                outside):
    """tests/custom_schedule.py's ``shift``, named by requests of the engine (a prompt in one step,
    one in chunks of CHUNK) and of the server, equals the transformers path; the engine's and the
    server's processes found it through its entry point (they imported it themselves). Its
    ``wholeshift`` (not continuous) is refused before the engine, whose prompts arrive in chunks."""
    import openai

    assert not outside.exists()                             # nobody has imported it yet
    engine_outputs = run(llm, [(PROMPTS[0], {"attn_transition": OUTSIDE_SPEC}, {}),
                               (PROMPTS[2], {"attn_transition": OUTSIDE_SPEC}, {})])
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    served = _first_http(_completion(client, model_dir, PROMPTS[1], {"attn_transition": OUTSIDE_SPEC}))
    for prompt, got in ((PROMPTS[0], first(engine_outputs[0])), (PROMPTS[2], first(engine_outputs[1])),
                        (PROMPTS[1], served)):
        want, stock = hf_first(model_dir, prompt, OUTSIDE_SPEC), hf_first(model_dir, prompt, None)
        print(f"{OUTSIDE_SPEC} ({len(prompt)} tokens): vs transformers {gap(got, want):.2e}, "
              f"effect {gap(got, stock):.2e}")
        assert gap(got, want) <= FLOOR_TIMES * floor
        assert gap(got, stock) > 100 * floor                # the edit really happened
    importers = set(outside.read_text().split()) - {str(os.getpid())}
    # The engine's core process, the API server and the server's engine core: each imported it.
    assert len(importers) >= 3, importers
    with pytest.raises(ConfigError, match="is not continuous.*enable_chunked_prefill=False") as err:
        ask(llm, PROMPTS[0], {"attn_transition": OUTSIDE_WHOLE})
    assert err.value.field == "attn_transition"
    with pytest.raises(openai.BadRequestError, match="is not continuous") as bad:
        _completion(client, model_dir, PROMPTS[0], {"attn_transition": OUTSIDE_WHOLE})
    assert bad.value.status_code == 400


# ----------------------------------------------------------------------------- without an engine
class _Params:
    def __init__(self, extra_args: Optional[dict]) -> None:
        self.extra_args = extra_args


class _Request:
    def __init__(self, extra_args: Optional[dict], tokens: int = 10, cache_salt: Optional[str] = None) -> None:
        self.sampling_params = _Params(extra_args)
        self.prompt_token_ids = list(range(tokens))
        self.prompt_embeds = None
        self.cache_salt = cache_salt


def test_engine_without_the_plugin_refuses_a_request_that_asks():
    from attn_transition.patches.vllm.requests import request_transition

    with pytest.raises(ConfigError, match=r"additional_config=\{'attn_transition': 'none'\}") as err:
        request_transition(None, _Request({"attn_transition": "sra"}), {})
    assert "\n" not in str(err.value)
    plain = _Request({"attn_transition": "none"}, cache_salt="s")
    request_transition(None, plain, {})                     # stock: nothing asked, nothing changed
    assert plain.sampling_params.extra_args == {"attn_transition": "none"} and plain.cache_salt == "s"
    untouched = _Request(None)
    request_transition(None, untouched, {})
    assert untouched.sampling_params.extra_args is None and untouched.cache_salt is None


def test_request_resolution_and_salt():
    from attn_transition.patches.vllm.asked import NO_DEFAULT
    from attn_transition.patches.vllm.requests import request_transition

    sra = at.parse_config("sra")
    shared = {"attn_transition": "classic:alpha=1"}
    edited = _Request(shared, cache_salt="mine")
    request_transition(sra, edited, {"attn_transition_beam_prompt_width": 7})
    assert edited.sampling_params.extra_args == {"attn_transition": "classic:alpha=1", WIDTH_KEY: 7}
    assert shared == {"attn_transition": "classic:alpha=1"}  # the caller's dict is not changed
    assert "mine" in edited.cache_salt and "classic:alpha=1" in edited.cache_salt
    default = _Request(None)
    request_transition(sra, default, {})
    assert default.sampling_params.extra_args == {"attn_transition": "sra", WIDTH_KEY: 10}
    salts = {default.cache_salt, edited.cache_salt}
    for extra in ({WIDTH_KEY: 9}, {"attn_transition": "classic"}):
        other = _Request(extra)
        request_transition(sra, other, {})
        salts.add(other.cache_salt)
    assert len(salts) == 4 and None not in salts
    stock = _Request(None, cache_salt="mine")
    request_transition(NO_DEFAULT, stock, {})                # "none" engine: not edited, its salt kept
    assert stock.cache_salt == "mine" and stock.sampling_params.extra_args["attn_transition"] == "none"


def test_step_rows_plan_each_request():
    from attn_transition.patches.vllm.steps import PromptRows, step_rows

    sra, classic = at.parse_config("sra"), at.parse_config("classic")
    plans = {0: (sra, 100), 1: (None, 50), 2: (classic, 30), 3: (sra, 40)}
    # Request 0: rows [0, 64) of 100; 1: not edited; 2: rows [20, 60) of a 60-token prompt, width 30;
    # 3: decoding (all 40 prompt tokens cached).
    rows = step_rows([0, 64, 114, 154, 155], [0, 0, 20, 40], [100, 50, 60, 40], 4, lambda i, n: plans[i])
    assert rows == (PromptRows(0, 0, 0, 64, 100, sra), PromptRows(2, 114, 20, 30, 30, classic))


@pytest.mark.parametrize("key", ["attn_transition", WIDTH_KEY, "additional_config"])
def test_server_body_keys_outside_vllm_xargs_are_refused(key):
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    import attn_transition.patches.vllm as plugin

    plugin.register()
    request = CompletionRequest(model="m", prompt=[5, 6], max_tokens=1, **{key: "sra"})
    with pytest.raises(ValueError, match=r"not read; pass \"vllm_xargs\"") as err:   # HTTP 400 online
        request.to_sampling_params(1, {})
    assert err.value.field == key and "\n" not in str(err.value)
    fine = CompletionRequest(model="m", prompt=[5, 6], max_tokens=1, vllm_xargs={"attn_transition": "sra"})
    assert fine.to_sampling_params(1, {}).extra_args == {"attn_transition": "sra"}
