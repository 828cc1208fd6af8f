"""Loading the vLLM plugin (its entry point, as vLLM calls it in every process) imports nothing of
the transformers integration and no transformers modeling code that vLLM itself did not import."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
    assert "attn_transition.patches.vllm.backends" in ours, ours          # the check ran the plugin
    assert "attn_transition.patches.transformers" not in ours, ours
    assert modeling == "False"
