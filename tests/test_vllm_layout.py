"""Loading the vLLM plugin (its entry point, as vLLM calls it in every process) imports nothing of
the transformers integration and no transformers modeling code that vLLM itself did not import."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.vllm


def test_registering_the_plugin_loads_nothing_of_the_transformers_integration():
    code = ("import sys\n"
            "import vllm.platforms, vllm.config\n"
            "before = set(sys.modules)\n"
            "from attn_transition.patches.vllm import register\n"
            "register()\n"
            "new = set(sys.modules) - before\n"
            "print(sorted(m for m in new if m.startswith(('attn_transition.patches.transformers', "
            "'transformers.modeling_utils', 'transformers.models'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
