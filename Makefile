# orchestratord — contract-first LLM orchestration daemon.
# `make help` lists the targets.

SHELL := /bin/bash
GO ?= go
# The state directory make works in (the tiny model goes to its models/). make run hands it to
# the daemon only where it is the one to use: set by the caller, or with the embedded default. A
# file given as ORCHD_CONFIG keeps its own state_dir (the environment would win over it).
STATE_DIR_ORIGIN := $(origin ORCHD_STATE_DIR)
ORCHD_STATE_DIR ?= .orchestratord
export ORCHD_STATE_DIR
# ORCHD_CONFIG=FILE (environment or make variable) points make run at a configuration file.
export ORCHD_CONFIG
BIN := bin/orchestratord
TINY_MODEL := $(ORCHD_STATE_DIR)/models/tiny.gguf
# Where tools/ensure-llama-server.sh installs llama-server when none is on PATH (git-ignored).
LLAMA_DIR := .tools/llama

# go-nvml's cgo code calls NVML functions that CUDA 13 headers mark deprecated: gcc's
# -Wdeprecated-declarations warnings about a dependency would flood every build and test run.
CGO_CFLAGS ?= -O2 -g
CGO_CFLAGS += -Wno-deprecated-declarations
export CGO_CFLAGS

# Variables that help texts name: make help prints their values.
HELP_VARS := BENCH_OUT ORCHD_STATE_DIR LLAMA_DIR BIN TINY_MODEL VENV CLIENTS_VENV

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E -e 's/:.*## /\t/' \
	  $(foreach v,$(HELP_VARS),-e 's|\$$\($(v)\)|$($(v))|g') | expand -t 22

.PHONY: generate
generate: ## Regenerate gen/ from openapi/ (oapi-codegen, pinned as a go tool).
	rm -f gen/api/*.gen.go gen/client/*.gen.go
	$(GO) generate ./gen/...

.PHONY: check-generated
check-generated: generate ## Fail when gen/ is not what openapi/ generates.
	@git diff --exit-code --stat -- gen/ || { echo "gen/ is stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen/)" || { git status --porcelain -- gen/; echo "gen/ has untracked or changed files"; exit 1; }

# Version and commit stamped into bin/orchestratord (--version prints them with the Go version).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: build
build: ## Build bin/orchestratord and bin/orchctl.
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/orchestratord
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/orchctl ./cmd/orchctl

.PHONY: engine
engine: ## Find llama-server (ORCHD_LLAMA_SERVER, PATH) or install it into .tools/llama.
	@bash tools/ensure-llama-server.sh >/dev/null

.PHONY: model
model: $(TINY_MODEL) ## Generate the tiny GGUF model into the state directory.

$(TINY_MODEL):
	@mkdir -p $(dir $@)
	$(GO) run ./tools/ggufgen -o $@

.PHONY: run
run: build model ## Run the daemon: embedded default config (llama.cpp, tiny model), or ORCHD_CONFIG=FILE.
	@LLAMA=$$(bash tools/ensure-llama-server.sh) && echo "llama-server: $$LLAMA" && \
	  if [ -n "$$ORCHD_CONFIG" ] && [ "$(STATE_DIR_ORIGIN)" = undefined ]; then unset ORCHD_STATE_DIR; fi && \
	  if [ -n "$$ORCHD_CONFIG" ]; then ORCHD_LLAMA_SERVER="$$LLAMA" $(BIN) --check-config "$$ORCHD_CONFIG" || exit 2; fi && \
	  ORCHD_LLAMA_SERVER="$$LLAMA" exec $(BIN)

.PHONY: fmt-check
fmt-check: ## Fail on unformatted Go files (gen/ excluded).
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }

.PHONY: vet
vet: ## go vet, including the build-tagged pact tests.
	$(GO) vet ./...
	$(GO) vet -tags pact ./...

.PHONY: lint
lint: ## golangci-lint (pinned in tools/lint/go.mod, built by go tool) with .golangci.yml's layering rules.
	$(GO) tool -modfile=tools/lint/go.mod golangci-lint run ./...

.PHONY: unit
unit: clients-venv triton-venv ## All Go tests with -race (real llama-server and tritonserver; simulators and the OpenAI facade checked by the official clients).
	@LLAMA=$$(bash tools/ensure-llama-server.sh || true); \
	  ORCHD_TRITON=require \
	  ORCHD_CLIENTS_PYTHON="$${ORCHD_CLIENTS_PYTHON:-$(CURDIR)/$(CLIENTS_VENV)/bin/python}" \
	  ORCHD_LLAMA_SERVER="$${ORCHD_LLAMA_SERVER:-$$LLAMA}" $(GO) test -race -count=1 ./...

.PHONY: fuzz-go
fuzz-go: ## Run every Go fuzz target briefly (FUZZTIME each, default 10s).
	@bash tools/fuzz-go.sh $${FUZZTIME:-10s}

.PHONY: fuzz-go-short
fuzz-go-short: ## Every Go fuzz target for 5 seconds (what make test runs).
	@bash tools/fuzz-go.sh 5s

.PHONY: test
test: check-generated fmt-check vet lint unit fuzz-go-short pact fuzz gpu-smoke-dry ## Everything CI runs.

.PHONY: gpu-smoke
gpu-smoke: ## On a host with an NVIDIA GPU: NVML, the GPU in capabilities, VRAM-fit placement (tools/gpu-smoke.sh).
	@bash tools/gpu-smoke.sh

.PHONY: gpu-smoke-dry
gpu-smoke-dry: ## tools/gpu-smoke.sh on a host without a GPU (make test runs it: the script itself works).
	@ORCHD_SMOKE_NO_GPU=1 bash tools/gpu-smoke.sh

# Benchmarks (tools/bench): orchestratord against direct engine access, nginx and LiteLLM on one
# engine simulator, and the independent aiperf client on the OpenAI-compatible routes. Results go
# to $(BENCH_OUT)/<plan>.{json,md} (git-ignored scratch by default; BENCH_OUT=tools/bench/results
# to publish). setup.sh installs nginx, LiteLLM and aiperf on first use.
BENCH_OUT ?= tmp/bench
BENCH_SETUP := tmp/bench/setup

.PHONY: bench
bench: ## Short benchmark, under 5 minutes: writes $(BENCH_OUT)/short.{json,md}.
	@bash tools/bench/setup.sh $(BENCH_SETUP)
	$(GO) run ./tools/bench -plan short -out $(BENCH_OUT) -setup-status $(BENCH_SETUP) -command "make bench"

.PHONY: bench-full
bench-full: ## Full benchmark, 3 interleaved rounds (about 30 minutes; go-relay, the Go floor, among the contenders): writes $(BENCH_OUT)/full.{json,md}.
	@bash tools/bench/setup.sh $(BENCH_SETUP)
	$(GO) run ./tools/bench -plan full -contenders direct,nginx,go-relay,orchestratord,litellm -out $(BENCH_OUT) -setup-status $(BENCH_SETUP) -command "make bench-full"

.PHONY: clean
clean: ## Remove build outputs (keeps the state directory).
	rm -rf bin

# Contract testing against the real daemon: schemathesis (property-based, every operation and
# check, stateful link-following) and Pact (consumer-driven contracts with real provider states).
VENV := .venv
PYTHON ?= python3
SCHEMATHESIS_REQ := contracts/schemathesis/requirements.txt
PACT_LIB := $(CURDIR)/.pact/lib

# The pinned schemathesis in a git-ignored virtualenv; reinstalled when the requirements change.
$(VENV)/.installed: $(SCHEMATHESIS_REQ)
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(SCHEMATHESIS_REQ)
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv with the pinned schemathesis (contracts/schemathesis/requirements.txt).

# The official Python clients (pinned), git-ignored like .venv: they check tools/enginesim's
# protocol personalities (tools/enginesim/sim/clients_test.go) and drive the daemon's
# OpenAI-compatible routes (impl/app/openai_client_test.go); make unit passes the venv's python
# as ORCHD_CLIENTS_PYTHON, so there the facade's test fails rather than skips without it.
CLIENTS_VENV := .venv-clients
CLIENTS_REQ := tools/enginesim/clients/requirements.txt

$(CLIENTS_VENV)/.installed: $(CLIENTS_REQ)
	@test -x $(CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(CLIENTS_REQ)
	@touch $@

.PHONY: clients-venv
clients-venv: $(CLIENTS_VENV)/.installed ## Create .venv-clients with the pinned official clients (openai, text-generation).

# A real tritonserver for engine/triton's tests: nvidia-pytriton (pinned; bundles tritonserver
# 2.51.0 and tritonclient) in a git-ignored virtualenv, about 370 MB. Built from Debian's
# /usr/bin/python3.11: the Python backend stub links the system libpython3.11, and a venv of
# another 3.11 build (pyenv) fails to load models.
TRITON_VENV := .venv-triton
TRITON_REQ := tools/tritontest/requirements.txt
TRITON_PYTHON ?= /usr/bin/python3.11

$(TRITON_VENV)/.installed: $(TRITON_REQ)
	@test -x $(TRITON_VENV)/bin/python || $(TRITON_PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(TRITON_REQ)
	@touch $@

.PHONY: triton-venv
triton-venv: $(TRITON_VENV)/.installed ## Create .venv-triton with nvidia-pytriton (a real tritonserver, for engine/triton's tests).

.PHONY: fuzz
fuzz: venv ## Schemathesis against the real daemon and llama.cpp: every operation, >= 200 examples each, seed from the commit or FUZZ_SEED (about 8 min).
	@LLAMA=$$(bash tools/ensure-llama-server.sh) && \
	  ORCHD_LLAMA_SERVER="$$LLAMA" bash tools/schemathesis.sh ci

.PHONY: fuzz-long
fuzz-long: venv ## Schemathesis with thousands of examples per operation (FUZZ_EXAMPLES, default 2000).
	@LLAMA=$$(bash tools/ensure-llama-server.sh) && \
	  ORCHD_LLAMA_SERVER="$$LLAMA" bash tools/schemathesis.sh long

.PHONY: pact-lib
pact-lib: ## Install libpact_ffi (npm @pact-foundation/pact-core-linux-x64-glibc) into .pact/lib.
	@bash tools/install-pact-ffi.sh >/dev/null

# Pact tests link libpact_ffi (build tag pact); the rpath lets the test binaries find it.
PACT_ENV = CGO_LDFLAGS="-L$(PACT_LIB) -Wl,-rpath,$(PACT_LIB)" PACT_DO_NOT_TRACK=true

.PHONY: pact
pact: pact-lib ## Pact: consumer tests write pacts/*.json, then provider verification against the real daemon.
	$(PACT_ENV) $(GO) test -race -tags pact -count=1 -run '^TestConsumer$$' ./contracts/pact/
	@LLAMA=$$(bash tools/ensure-llama-server.sh) && \
	  ORCHD_LLAMA_SERVER="$$LLAMA" $(PACT_ENV) $(GO) test -race -tags pact -count=1 -run '^TestProvider$$' ./contracts/pact/
