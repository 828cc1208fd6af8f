"""The vLLM plugin on CUDA (FlashAttention, bfloat16): the checks of ``tests/test_vllm.py`` on a GPU.

Needs a CUDA device and vLLM's GPU build in the environment that runs it (``benchmarks/gpu_check.sh``
runs this file in its vLLM step). The floor is measured the same way, in bfloat16 on both sides
(FlashAttention has no float32), so the comparisons keep their meaning at the larger rounding.
"""

from __future__ import annotations

import pytest
from skips import need

need("vllm", "vLLM's GPU build", provided_by=("setup-vllm",))
torch = pytest.importorskip("torch")

from test_vllm import (CONTINUOUS, check_inert, compare, engine_outputs, hf_outputs, logprob_gap,  # noqa: E402
                       smollm2, smollm2_prompts)

pytestmark = [pytest.mark.vllm, pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

HF = {"dtype": "bfloat16", "device": "cuda"}
__all__ = ["smollm2", "smollm2_prompts"]      # the fixtures, shared with the CPU tests


@pytest.fixture(scope="module")
def gpu_floor(smollm2, smollm2_prompts) -> float:
    stock = engine_outputs(smollm2, smollm2_prompts, dtype="bfloat16")
    hf = hf_outputs(smollm2, smollm2_prompts, None, **HF)
    gap = max(logprob_gap(a, r) for a, r in zip(stock["alone"], hf))
    print(f"SmolLM2 bfloat16 floor on CUDA: {gap:.2e}")
    return gap


def test_gpu_installed_but_not_asked_is_stock(smollm2, smollm2_prompts):
    # bfloat16 rounds about 3e4 times coarser than float32: a floor of 1e-3 and an edited engine
    # more than 10x that bound away (the sra edit moves SmolLM2's log-probabilities by about 1).
    check_inert(smollm2, smollm2_prompts, floor=1e-3, apart=10, dtype="bfloat16")


def test_gpu_continuous_edit_in_chunks_equals_transformers(smollm2, smollm2_prompts, gpu_floor):
    compare(smollm2, smollm2_prompts, gpu_floor, CONTINUOUS, hf=HF, dtype="bfloat16", max_num_batched_tokens=512)


def test_gpu_sra_equals_transformers(smollm2, smollm2_prompts, gpu_floor):
    compare(smollm2, smollm2_prompts, gpu_floor, "sra", hf=HF, dtype="bfloat16")
