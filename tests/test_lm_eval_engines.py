"""The lm-eval models ``attn-transition`` (transformers) and ``attn-transition-vllm`` score the same.

Runs in the vLLM environment (it has lm_eval and the transformers path). A multiple-choice task on
local documents (tests/fixtures/lm_eval_mc: 6 documents, contexts of 41-88 tokens, choices of 1-4
tokens) goes through both models' ``loglikelihood`` on a tiny random Llama (head size 32: vLLM's CPU
attention needs >= 32) with a word-level tokenizer. A loglikelihood request is edited with its
context as the prompt and its continuation's rows not edited, on both engines, so both give the
same numbers: within the floor of the same comparison without the edit (stock HFLM vs stock vLLM,
measured here, float32 both) for the continuous classic config, and within a small share of the
edit's effect for SRA (its thresholds are discontinuous, see tests/test_vllm.py). The edit's
effect is far above both bounds, and so is the gap between the engines when each scores the
whole request as one prompt (lm_eval's own models on the edited engines, without the context
width).

One engine (about a minute to start) scores stock and both configs: each request names its config.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from skips import need

vllm = need("vllm", "the vLLM environment (make setup-vllm) runs these tests", provided_by=("setup-vllm",))
lm_eval = need("lm_eval", "lm-evaluation-harness (pip install lm_eval)", provided_by=("setup", "setup-vllm"))

import torch  # noqa: E402

from attn_transition.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.vllm

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")          # GiB
TASKS = Path(__file__).parent / "fixtures" / "lm_eval_mc"
TASK = "attn_transition_tiny_mc"
# Thresholds lowered so that contexts of a few dozen tokens are edited. CLASSIC's thresholds lie
# far below every weight (nothing is eliminated: a continuous edit, see tests/test_vllm.py).
CLASSIC = "classic:alpha=1e-30;beta=0.5;min_length=0"
SRA = "sra:begin_length=4;threshold_len=24"
FLOOR_TIMES = 4
EFFECT_SHARE = 0.02
MAX_MODEL_LEN = 256


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    """The tiny Llama and a word-level tokenizer over its 97 ids ("w4" ... "w96" are words)."""
    from tiny_models import VOCAB, tiny_model
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llama-words")
    vocab = {w: i for i, w in enumerate(["[PAD]", "<s>", "</s>", "[UNK]"] + [f"w{i}" for i in range(4, VOCAB)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", bos_token="<s>",
                            eos_token="</s>").save_pretrained(path)
    tiny_model("llama", hidden_size=128, intermediate_size=256, head_dim=32).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def requests() -> list[tuple[str, str]]:
    """The task's loglikelihood requests (context, continuation), as lm_eval builds them."""
    from lm_eval.tasks import TaskManager, get_task_dict

    task = get_task_dict([TASK], TaskManager(include_path=str(TASKS)))[TASK]
    task.build_all_requests(rank=0, world_size=1)
    pairs = [tuple(instance.args) for instance in task.instances]
    assert len(pairs) == 24 and all(r == "loglikelihood" for r in {i.request_type for i in task.instances})
    return pairs


def _instances(pairs: list[tuple[str, str]]) -> list:
    from lm_eval.api.instance import Instance

    return [Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i) for i, p in enumerate(pairs)]


def _whole(lm: Any, plain: Callable, pairs: list[tuple[str, str]]) -> list[float]:
    """lm_eval's own ``_loglikelihood_tokens`` (``plain``: HFLM's or VLLM's) on ``lm``: each
    request's tokens scored as one prompt, without the context width."""
    tokens = [((c, x), *lm._encode_pair(c, x)) for c, x in pairs]
    return [value for value, _ in plain(lm, tokens, disable_tqdm=True)]


@pytest.fixture(scope="module")
def scores(folder, requests) -> dict[tuple[str, Optional[str]], list[float]]:
    """Every request's loglikelihood: ``(engine, config)`` -> scores; ``(engine + "-whole",
    config)``: the request edited as one prompt (what lm_eval's models do without the width).

    One engine serves every config: started with the plugin and no default
    (``additional_config={"attn_transition": "none"}``), each request names the model's config."""
    from attn_transition.evaluation.harness_args import parse_transition
    from attn_transition.evaluation.harness_model import AttnTransitionLM
    from attn_transition.evaluation.harness_vllm import AttnTransitionVLLM  # first: it imports lm_eval's module
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.vllm_causallms import VLLM

    torch.manual_seed(0)
    result: dict[tuple[str, Optional[str]], list[float]] = {}
    configs = (None, CLASSIC, SRA)
    for config in configs:
        hf = AttnTransitionLM(pretrained=folder, transition=config or "none", dtype="float32", device="cpu",
                              batch_size=8)
        result["hf", config] = [v for v, _ in hf.loglikelihood(_instances(requests), disable_tqdm=True)]
        result["hf-tokens", config] = [hf._encode_pair(c, x) for c, x in requests]
        if config is not None:                                      # one row at a time: no padding
            alone = AttnTransitionLM(pretrained=folder, transition=config, dtype="float32", device="cpu",
                                     batch_size=1)
            result["hf-whole", config] = _whole(alone, HFLM._loglikelihood_tokens, requests)
            del alone
        del hf
    lm = AttnTransitionVLLM(pretrained=folder, transition="none", additional_config={"attn_transition": "none"},
                            dtype="float32", enforce_eager=True, max_model_len=MAX_MODEL_LEN, seed=0,
                            batch_size="auto")
    try:
        assert [lm._encode_pair(c, x) for c, x in requests] == result["hf-tokens", None]   # the same tokens
        for config in configs:
            lm.transition_config = parse_transition(config)
            result["vllm", config] = [v for v, _ in lm.loglikelihood(_instances(requests), disable_tqdm=True)]
            if config is not None:
                result["vllm-whole", config] = _whole(lm, VLLM._loglikelihood_tokens, requests)
    finally:
        lm.model.llm_engine.engine_core.shutdown()
        del lm
        gc.collect()
    return result


def _gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def floor(scores) -> float:
    gap = _gap(scores["hf", None], scores["vllm", None])
    print(f"stock HFLM vs stock vLLM: {gap:.2e}")
    return gap


@pytest.mark.parametrize("config", [CLASSIC, SRA])
def test_both_engines_score_the_context_as_the_prompt(scores, floor, config):
    """Both engines agree; scoring each request as one prompt (lm_eval's models without the
    context width) they do not: HFLM's prompt is one token shorter than vLLM's, which moves SRA's
    last rows and, for contexts of 66 and 68 tokens, classic's blocks (``n // 7`` crosses 10)."""
    gap = _gap(scores["hf", config], scores["vllm", config])
    effect = _gap(scores["hf", config], scores["hf", None])
    whole = _gap(scores["hf-whole", config], scores["vllm-whole", config])
    bound = FLOOR_TIMES * floor if config == CLASSIC else max(FLOOR_TIMES * floor, EFFECT_SHARE * effect)
    print(f"{config}: HFLM vs vLLM {gap:.2e}, the edit's effect {effect:.2e}, both scored as one "
          f"prompt {whole:.2e}, stock floor {floor:.2e}, bound {bound:.2e}")
    assert effect > 100 * floor, (effect, floor)                  # the edit really happened
    assert whole > 10 * bound, (whole, bound)                     # the width decides: the test can fail
    assert gap <= bound, (gap, bound, effect)


def test_comma_split_transition_is_the_same_one_line_error(folder):
    """``transition=classic:alpha=1,beta=0.5`` split at its comma by lm_eval: one error, the
    same on both models, before any model is loaded or engine started."""
    from lm_eval.api.registry import get_model

    import attn_transition.evaluation.harness_vllm  # noqa: F401  (registers attn-transition-vllm)
    from attn_transition.evaluation.harness_model import AttnTransitionLM  # noqa: F401

    messages = []
    for name in ("attn-transition", "attn-transition-vllm"):
        with pytest.raises(ConfigError) as err:
            get_model(name).create_from_arg_string(f"pretrained={folder},transition=classic:alpha=1,beta=0.5")
        assert err.value.field == "transition" and "\n" not in str(err.value)
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "beta" in messages[0] and "';'" in messages[0]


def test_a_config_set_on_an_engine_without_the_plugin_is_refused():
    """``transition_config`` set after the engine started without the plugin (``transition=none``,
    no ``additional_config``): a one-line error before any request, never a silent stock run."""
    from attn_transition.config import SRAConfig
    from attn_transition.errors import UsageError
    from attn_transition.evaluation.harness_args import BatchRecorder
    from attn_transition.evaluation.harness_vllm import AttnTransitionVLLM

    lm = AttnTransitionVLLM.__new__(AttnTransitionVLLM)          # the state __init__ leaves, no engine
    lm.transition_config, lm._per_request, lm._batches = SRAConfig(), False, BatchRecorder()
    with pytest.raises(UsageError, match="started without the attn_transition plugin") as err:
        lm._model_generate([[5, 6, 7]], generate=False)
    assert "\n" not in str(err.value)
