# orchestratord — contract-first LLM orchestration daemon.
# `make help` lists the targets.

SHELL := /bin/bash
GO ?= go
ORCHD_STATE_DIR ?= .orchestratord
export ORCHD_STATE_DIR
BIN := bin/orchestratord
TINY_MODEL := $(ORCHD_STATE_DIR)/models/tiny.gguf
# Where tools/ensure-llama-server.sh installs llama-server when none is on PATH (git-ignored).
LLAMA_DIR := .tools/llama

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 22

.PHONY: generate
generate: ## Regenerate gen/ from openapi/ (oapi-codegen, pinned as a go tool).
	rm -f gen/api/*.gen.go gen/client/*.gen.go
	$(GO) generate ./gen/...

.PHONY: check-generated
check-generated: generate ## Fail when gen/ is not what openapi/ generates.
	@git diff --exit-code --stat -- gen/ || { echo "gen/ is stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen/)" || { git status --porcelain -- gen/; echo "gen/ has untracked or changed files"; exit 1; }

.PHONY: build
build: ## Build bin/orchestratord.
	$(GO) build -o $(BIN) ./cmd/orchestratord

.PHONY: engine
engine: ## Find llama-server (ORCHD_LLAMA_SERVER, PATH) or install it into .tools/llama.
	@bash tools/ensure-llama-server.sh >/dev/null

.PHONY: model
model: $(TINY_MODEL) ## Generate the tiny GGUF model into the state directory.

$(TINY_MODEL):
	@mkdir -p $(dir $@)
	$(GO) run ./tools/ggufgen -o $@

.PHONY: run
run: build model ## Run the daemon with its embedded default config (real llama.cpp, tiny model).
	@LLAMA=$$(bash tools/ensure-llama-server.sh) && echo "llama-server: $$LLAMA" && \
	  ORCHD_LLAMA_SERVER="$$LLAMA" exec $(BIN)

.PHONY: fmt-check
fmt-check: ## Fail on unformatted Go files (gen/ excluded).
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }

.PHONY: vet
vet: ## go vet, including the build-tagged pact tests.
	$(GO) vet ./...
	$(GO) vet -tags pact ./...

.PHONY: unit
unit: ## All Go tests with -race (engine tests use the real llama-server when found).
	@LLAMA=$$(bash tools/ensure-llama-server.sh 2>/dev/null || true); \
	  ORCHD_LLAMA_SERVER="$${ORCHD_LLAMA_SERVER:-$$LLAMA}" $(GO) test -race -count=1 ./...

.PHONY: fuzz-go
fuzz-go: ## Run every Go fuzz target briefly (FUZZTIME each, default 10s).
	@bash tools/fuzz-go.sh $${FUZZTIME:-10s}

.PHONY: test
test: check-generated fmt-check vet unit ## Everything CI runs.

.PHONY: clean
clean: ## Remove build outputs (keeps the state directory).
	rm -rf bin
