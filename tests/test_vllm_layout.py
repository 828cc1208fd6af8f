"""Loading the vLLM plugin (its entry point, as vLLM calls it in every process) imports nothing of
the transformers integration and no transformers modeling code that vLLM itself did not import."""

from __future__ import annotations

import subprocess
import sys

import pytest
from skips import need

need("vllm", "the vLLM environment (make setup-vllm) runs these tests", provided_by=("setup-vllm",))

pytestmark = pytest.mark.vllm


def test_registering_the_plugin_loads_nothing_of_the_transformers_integration():
    """What ``register`` adds to ``sys.modules`` after vLLM's own config modules are loaded: no
    module of the transformers integration and not transformers' modeling code (vLLM's backend
    registry may load transformers' processors for itself; those are vLLM's)."""
    code = ("import sys\n"
            "import vllm.platforms, vllm.config\n"
            "before = set(sys.modules)\n"
            "from attn_transition.patches.vllm import register\n"
            "register()\n"
            "new = set(sys.modules) - before\n"
            "print(sorted(m for m in new if m.startswith('attn_transition')))\n"
            "print('transformers.modeling_utils' in new)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    *_, ours, modeling = done.stdout.strip().splitlines()
    for ran in ("engine", "requests", "platforms"):                      # the checks and the table ran
        assert f"attn_transition.patches.vllm.{ran}" in ours, ours
    assert "attn_transition.patches.transformers" not in ours, ours
    assert modeling == "False"


def test_every_platform_row_names_a_backend_vllm_has_and_the_cpu_row_loads():
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    from attn_transition.patches.vllm import cpu
    from attn_transition.patches.vllm.platforms import PLATFORMS, load

    for row in PLATFORMS.values():
        assert row.backend in AttentionBackendEnum.__members__, row
    assert load(PLATFORMS["cpu"].backend_class) is cpu.TransitionCPUBackend
    assert load(PLATFORMS["cpu"].engine_check) is cpu.check_cpu_engine


def test_an_engine_on_a_platform_without_a_row_is_refused_at_start(monkeypatch):
    """The engine-start check reads the same table: a platform it lacks is a ConfigError on
    ``device``, before any backend is chosen."""
    from types import SimpleNamespace

    import vllm.platforms
    from transformers import LlamaConfig

    from attn_transition.config import ClassicConfig
    from attn_transition.errors import ConfigError
    from attn_transition.patches.vllm import engine

    monkeypatch.setattr(vllm.platforms, "current_platform",
                        SimpleNamespace(is_cpu=lambda: False, is_cuda=lambda: False), raising=False)
    text = LlamaConfig(num_hidden_layers=4)
    vllm_config = SimpleNamespace(model_config=SimpleNamespace(hf_text_config=text, use_mla=False),
                                  parallel_config=SimpleNamespace(enable_dbo=False))
    with pytest.raises(ConfigError, match="CPU and CUDA platforms") as info:
        engine.check_vllm_config(vllm_config, ClassicConfig())
    assert info.value.field == "device"


def test_each_platform_backend_hands_out_its_impl_and_reads_its_window(monkeypatch):
    """The shared mixins (patches/vllm/backends.py): a backend hands out the plugin's
    implementation only when the engine asks, and each implementation turns its vLLM class's
    way of storing the sliding window into a width (None: full attention)."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl
    from vllm.v1.attention.backends.flash_attn import FlashAttentionImpl

    from attn_transition.patches.vllm import backends, cpu, cuda
    from attn_transition.patches.vllm.asked import NO_DEFAULT

    pairs = [(cpu.TransitionCPUBackend, cpu.TransitionCPUImpl, CPUAttentionBackendImpl),
             (cuda.TransitionFlashAttentionBackend, cuda.TransitionFlashAttentionImpl, FlashAttentionImpl)]
    for asked, index in ((None, 2), (NO_DEFAULT, 1)):
        monkeypatch.setattr(backends, "asked_config", lambda asked=asked: asked)
        for pair in pairs:
            assert pair[0].get_impl_cls() is pair[index]
    for impl, stored, width in [(cpu.TransitionCPUImpl, -1, None), (cpu.TransitionCPUImpl, 64, 64),
                                (cuda.TransitionFlashAttentionImpl, (-1, -1), None),
                                (cuda.TransitionFlashAttentionImpl, (63, 0), 64)]:
        layer = object.__new__(impl)                       # no vLLM __init__: only the stored window
        layer.sliding_window = stored
        assert layer.attention_window() == width, (impl, stored)
