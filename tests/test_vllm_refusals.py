"""Every setting the vLLM plugin cannot honour is refused at engine start as a one-line
``ConfigError`` naming the setting (``field``), and a request naming a config the engine cannot
edit faithfully is refused before it is queued.

The checks are functions of the engine's config (``check_engine_args`` of the ``EngineArgs``,
``check_vllm_config`` of the built ``VllmConfig``), so these tests hand them stand-in configs: no
engine is started. The whole path through ``LLM(...)`` is covered by tests/test_vllm.py (a bad
config string, a misspelled key, a KV connector, an unsupported model).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from skips import need

need("vllm", "the vLLM environment (make setup-vllm) runs these tests", provided_by=("setup-vllm",))

import torch  # noqa: E402

import attn_transition as at  # noqa: E402
from attn_transition.config import ClassicConfig, TransitionConfig  # noqa: E402
from attn_transition.errors import ConfigError  # noqa: E402
from attn_transition.schedules import ClassicBlock  # noqa: E402

pytestmark = pytest.mark.vllm


@at.register_schedule
@dataclass(frozen=True)
class WholeBlocks(TransitionConfig):
    """A schedule whose rows cannot be edited in chunks (``continuous`` False); its edit is the
    classic block's, which is all these tests need of it. Not tests/custom_schedule.py's
    ``wholeshift``: importing that module here would register its schedules in this process before
    tests/test_vllm_requests.py's engines start, which must find them through their entry point."""

    schedule = "whole_blocks_vllm_test"
    continuous = False
    width: int = 4

    def plan(self, layer: int, num_layers: int, n: int):
        return (ClassicBlock(0, min(self.width, n), 1.0, 0.5, "multi"),) if n > 0 else ()


def _vllm_config(*, text: Any = None, chunked: bool = False, caching: bool = False, threshold: int = 0,
                 backend: Any = None, **model: Any) -> SimpleNamespace:
    """A stand-in ``VllmConfig`` with the fields the engine-start checks read (a tiny Llama in
    float32, head size 32: the CPU attention's ``vec`` layout, which the plugin reads)."""
    from transformers import LlamaConfig

    text = text or LlamaConfig(num_hidden_layers=4, hidden_size=128, num_attention_heads=4, head_dim=32)
    model_config = SimpleNamespace(hf_text_config=text, use_mla=False, dtype=torch.float32,
                                   get_head_size=lambda: 32)
    for name, value in model.items():
        setattr(model_config, name, value)
    return SimpleNamespace(model_config=model_config, parallel_config=SimpleNamespace(enable_dbo=False),
                           cache_config=SimpleNamespace(block_size=128, enable_prefix_caching=caching),
                           scheduler_config=SimpleNamespace(enable_chunked_prefill=chunked,
                                                            long_prefill_token_threshold=threshold),
                           attention_config=SimpleNamespace(backend=backend), additional_config={})


def _refused(check, *args: Any, field: str, words: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check(*args)
    message = str(info.value)
    assert info.value.field == field and words in message and "\n" not in message, (info.value.field, message)
    return info.value


# ----------------------------------------------------------------------------- EngineArgs
def _args(**kwargs: Any) -> SimpleNamespace:
    """Stand-in ``EngineArgs`` asking for the transition, with ``kwargs`` set."""
    base = dict(additional_config={"attn_transition": "sra"}, speculative_config=None, kv_cache_dtype="auto",
                kv_transfer_config=None)
    return SimpleNamespace(**{**base, **kwargs})


@pytest.mark.parametrize("setting, value, words", [
    ("speculative_config", {"method": "ngram"}, "remove speculative_config"),
    ("kv_cache_dtype", "fp8", "pass kv_cache_dtype='auto'"),
    ("kv_transfer_config", object(), "remove kv_transfer_config"),
])
def test_engine_args_the_edit_cannot_honour_are_refused(setting, value, words):
    from attn_transition.patches.vllm.engine import check_engine_args

    _refused(check_engine_args, _args(**{setting: value}), field=setting, words=words)
    # Without the transition the plugin refuses nothing.
    assert check_engine_args(_args(**{setting: value, "additional_config": {}})) is None


# ----------------------------------------------------------------------------- the built config
def test_a_plain_engine_config_passes():
    from attn_transition.patches.vllm.engine import check_vllm_config

    vllm_config = _vllm_config(chunked=True, caching=True)
    check_vllm_config(vllm_config, ClassicConfig())
    assert vllm_config.cache_config.enable_prefix_caching is True          # continuous: salted, kept on


def test_mla_is_refused():
    from attn_transition.patches.vllm.engine import check_vllm_config

    _refused(check_vllm_config, _vllm_config(use_mla=True), ClassicConfig(), field="model", words="(MLA)")


def test_dual_batch_overlap_is_refused():
    from attn_transition.patches.vllm.engine import check_vllm_config

    vllm_config = _vllm_config()
    vllm_config.parallel_config.enable_dbo = True
    _refused(check_vllm_config, vllm_config, ClassicConfig(), field="enable_dbo", words="pass enable_dbo=False")


@pytest.mark.parametrize("flag", [{"alibi": True}, {"position_embedding_type": "alibi"},
                                  {"attn_config": {"alibi": True}}])
def test_alibi_is_refused_at_engine_start(flag):
    """ALiBi (Falcon's ``alibi``, Jais' position embedding, MPT's ``attn_config``) is refused from
    the model's config, before any layer is built."""
    from transformers import LlamaConfig

    from attn_transition.patches.vllm.engine import check_vllm_config, uses_alibi

    text = LlamaConfig(num_hidden_layers=4, hidden_size=128, num_attention_heads=4, head_dim=32, **flag)
    assert uses_alibi(text)
    _refused(check_vllm_config, _vllm_config(text=text), ClassicConfig(), field="model", words="ALiBi")
    assert not uses_alibi(LlamaConfig(num_hidden_layers=4))


def test_cpu_layout_the_plugin_cannot_read_refuses_chunked_prefill(monkeypatch):
    """Where vLLM's CPU attention would lay its cache out as ``amx`` (bfloat16 on an AMX CPU),
    prefix caching is turned off and chunked prefill refused."""
    from attn_transition.patches.vllm import cpu

    monkeypatch.setattr(cpu, "_get_attn_isa", lambda dtype, block_size, head_size: "amx")
    chunked = _vllm_config(chunked=True, caching=True)
    _refused(cpu.check_cpu_engine, chunked, field="enable_chunked_prefill", words="pass enable_chunked_prefill=False")
    whole = _vllm_config(chunked=False, caching=True)
    cpu.check_cpu_engine(whole)
    assert whole.cache_config.enable_prefix_caching is False
    monkeypatch.setattr(cpu, "_get_attn_isa", lambda dtype, block_size, head_size: "vec")
    readable = _vllm_config(chunked=True, caching=True)
    cpu.check_cpu_engine(readable)
    assert readable.cache_config.enable_prefix_caching is True


def test_cuda_selects_flash_attention_and_refuses_another_backend():
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    from attn_transition.patches.vllm import cuda

    chosen = _vllm_config()
    cuda.check_cuda_engine(chosen)
    assert chosen.attention_config.backend == AttentionBackendEnum.FLASH_ATTN
    other = _vllm_config(backend=AttentionBackendEnum.TRITON_ATTN)
    _refused(cuda.check_cuda_engine, other, field="attention_backend", words="attention_backend='FLASH_ATTN'")


# ----------------------------------------------------------------------------- schedules that are not continuous
@pytest.mark.parametrize("settings, field", [
    (dict(chunked=True), "enable_chunked_prefill"),
    (dict(threshold=256), "long_prefill_token_threshold"),
])
def test_a_default_schedule_that_is_not_continuous_needs_whole_prompts(settings, field):
    """A default config whose edits need all their rows in one step: chunked prefill (and a
    long-prefill cap) refused, prefix caching turned off; a continuous one keeps both."""
    from attn_transition.patches.vllm.engine import check_vllm_config

    _refused(check_vllm_config, _vllm_config(**settings), WholeBlocks(), field=field, words=f"pass {field}=")
    whole = _vllm_config(caching=True)
    check_vllm_config(whole, WholeBlocks())
    assert whole.cache_config.enable_prefix_caching is False


class _Params:
    def __init__(self, extra=None):
        self.extra_args = extra


class _Request:
    def __init__(self, n: int, extra=None):
        self.sampling_params = _Params(extra)
        self.prompt_token_ids = list(range(n))
        self.prompt_embeds = None
        self.cache_salt = None


def test_a_request_whose_schedule_is_not_continuous_needs_an_engine_of_whole_prompts():
    from attn_transition.patches.vllm.asked import NO_DEFAULT, splits_prompts
    from attn_transition.patches.vllm.requests import RequestConfigError, request_transition

    spec = {"attn_transition": "whole_blocks_vllm_test"}
    for settings, setting in ((dict(chunked=True), "enable_chunked_prefill"),
                              (dict(caching=True), "enable_prefix_caching")):
        splits = splits_prompts(_vllm_config(**settings))
        assert splits is not None and splits[0] == setting
        with pytest.raises(RequestConfigError) as info:
            request_transition(NO_DEFAULT, _Request(10, dict(spec)), {}, splits=splits)
        assert info.value.field == "attn_transition" and f"start it with {setting}=False" in str(info.value)
    with pytest.raises(RequestConfigError, match="not continuous"):      # settings unknown: refused
        request_transition(NO_DEFAULT, _Request(10, dict(spec)), {})
    whole = _Request(10, dict(spec))
    request_transition(NO_DEFAULT, whole, {}, splits=splits_prompts(_vllm_config()))
    assert whole.sampling_params.extra_args == {"attn_transition": "whole_blocks_vllm_test",
                                                "attn_transition_prompt_length": 10}
    continuous = _Request(10, {"attn_transition": "sra"})                 # continuous: any engine
    request_transition(NO_DEFAULT, continuous, {}, splits=("enable_chunked_prefill", "False"))
    assert continuous.sampling_params.extra_args["attn_transition"] == "sra"
