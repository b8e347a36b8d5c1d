# acme-edge — the two commands a newcomer needs are `make demo` and `make test`.
# Every target installs what it needs first (scripts/bootstrap.sh is idempotent and quick).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
SHELL_SCRIPTS := $(wildcard scripts/*.sh deploy/*.sh deploy/envoy/*.sh deploy/node/*.sh) .ci/run

# Example values for the committed deploy/envoy/app-node.yaml (placeholders, not secrets).
EXAMPLE_ENVOY_ENV := COOKIE_SECRET=CHANGE-ME-openssl-rand-base64-48 \
	ACME_THUMBPRINT=CHANGE-ME-run-renewer-account-to-get-it-now \
	ALLOWED_ORIGINS=https://app.example.com

.PHONY: help bootstrap build wasm lint fmt-check clippy clippy-wasm shellcheck test unit \
	integration demo bench fuzz envoy-config clean deploy deploy-plan destroy

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

bootstrap: ## Install what the project needs (idempotent; says what it installs)
	@bash scripts/bootstrap.sh

build: bootstrap wasm ## Build the renewer (release) and the filter
	$(CARGO) build --release --locked -p renewer

wasm: ## Build edge_filter.wasm (release, LTO) into target/wasm/
	@bash scripts/wasm.sh build

lint: fmt-check clippy clippy-wasm shellcheck ## All static checks

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

clippy-wasm:
	@bash scripts/wasm.sh clippy

shellcheck:
	shellcheck -x $(SHELL_SCRIPTS)

unit: ## Host unit tests only (no Envoy)
	$(CARGO) test --workspace --lib --bins --locked

integration: wasm ## Integration tests with real Envoy and servers
	$(CARGO) test --workspace --locked --tests

test: bootstrap lint wasm ## Everything CI runs: bootstrap, lint, unit + integration tests
	$(CARGO) test --workspace --locked

demo: bootstrap wasm ## The whole system on this machine, step by step (KEEP=1 leaves it up)
	$(CARGO) build --locked -p renewer --bin renewer
	$(CARGO) build --locked -p acme-edge-tests --bin demo
	KEEP=$(KEEP) $(CARGO) run --locked -q -p acme-edge-tests --bin demo

# Options for scripts/bench.sh, e.g. BENCH_ARGS=--quick or BENCH_ARGS="--only filter".
BENCH_ARGS ?=

bench: wasm ## Benchmarks against peers into BENCHMARKS.md (not in make test; BENCH_ARGS=--quick)
	@bash scripts/bootstrap.sh --bench
	@bash scripts/bench.sh $(BENCH_ARGS)

# Seconds each fuzz target runs (`make fuzz FUZZ_SECONDS=600`).
FUZZ_SECONDS ?= 120

fuzz: ## Coverage-guided fuzzing of the filter and renewer inputs (FUZZ_SECONDS per target; not in make test)
	@bash scripts/bootstrap.sh --fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh

envoy-config: ## Regenerate the example deploy/envoy/app-node.yaml
	$(EXAMPLE_ENVOY_ENV) bash deploy/envoy/render.sh > deploy/envoy/app-node.yaml

clean:
	$(CARGO) clean

# --- Google Cloud (docs/deploy.md) ---------------------------------------------------------------
CONFIG ?= deploy/config.env

deploy: ## Deploy to Google Cloud from $(CONFIG) (idempotent; see docs/deploy.md)
	@bash deploy/deploy.sh $(CONFIG)

deploy-plan: ## Print every command `make deploy` would run; run none
	@bash deploy/deploy.sh --plan $(CONFIG)

destroy: ## Remove what `make deploy` made (asks first; keeps certificates unless PURGE=1)
	@bash deploy/destroy.sh $(if $(filter 1,$(PURGE)),--purge) $(if $(filter 1,$(YES)),--yes) $(CONFIG)
