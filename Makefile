# aura-guard: `make run` starts the local stack, `make test` runs every test. Both do their own
# setup (scripts/setup.sh installs into .venv and .tools; a second run is a fast no-op).
SHELL := /bin/bash
.DEFAULT_GOAL := help
WASM := target/wasm32-wasip1/release/aura_guard.wasm
PYTEST := .venv/bin/python -m pytest
# Parallel e2e workers: each test runs its own Envoy on free ports.
E2E_WORKERS ?= 2

.PHONY: help setup build build-bench dist run test test-unit test-wasm test-e2e test-k8s test-compat test-fuzz fuzz lint clean bench soak size-report preflight

help:
	@echo "make run    - build and start the local stack (Envoy + aura-guard + demo upstream ...)"
	@echo "make test   - lint, unit tests (native and wasm), end-to-end tests with real Envoy"
	@echo "make build  - build $(WASM)"
	@echo "make dist   - release artifacts in dist/: versioned module, its sha256, OCI image (docs/release.md)"
	@echo "make test-compat - config checks and a short end-to-end subset under every supported Envoy (docs/compatibility.md)"
	@echo "make bench  - side-by-side throughput/latency: bare Envoy, no-op wasm, Lua, native ratelimit, aura-guard"
	@echo "make soak   - the dependency-fault tests with the issue's strict latency bounds (a quiet machine)"
	@echo "make fuzz   - every fuzz target (fuzz/) FUZZ_SECONDS each (default 60), or FUZZ_RUNS executions"
	@echo "make size-report - the module's size by crate (twiggy), written into docs/module-size.md"
	@echo "make preflight - check a deployment against the security checklist (PREFLIGHT_ARGS, docs/operations.md)"
	@echo "make lint   - rustfmt check + clippy -D warnings (no unwrap/expect/panic/indexing)"
	@echo "make clean  - remove build outputs, run state and logs"

setup:
	@bash scripts/setup.sh all

build:
	@bash scripts/setup.sh build
	@bash scripts/build-wasm.sh
	cargo build -p aura-collector
	@ls -l $(WASM) | awk '{print "build: " $$NF " (" $$5 " bytes)"}'

# Release artifacts (docs/release.md): dist/aura_guard-<version>.wasm, its .sha256, and an OCI
# image layout of it in the format Istio and Envoy Gateway pull. Only the module is built
# (python3 >= 3.11, stdlib only).
dist:
	@bash scripts/setup.sh build
	@bash scripts/build-wasm.sh
	python3 scripts/dist.py

# The bench's no-op proxy-wasm filter (crates/noop-filter): the cost of a wasm filter itself;
# and its raw HMAC-SHA256 filter (crates/hmac-bench): the ceiling of the 1 MiB webhook case.
build-bench:
	@bash scripts/build-wasm.sh -p noop-filter -p hmac-bench

# Whole run < 5 min by default; BENCH_DURATION, BENCH_ROUNDS, BENCH_WARMUP, BENCH_CONNECTIONS,
# BENCH_CASES override (see bench/run.py --help). Results: bench/results/latest.{md,json}.
bench: build build-bench
	@bash scripts/setup.sh bench
	cargo build --release -p aura-collector  # the aura-audit case's collector, as it would run
	.venv/bin/python bench/run.py

# The module's bytes by crate (twiggy, docs/module-size.md); rewrites the table there.
size-report:
	@bash scripts/module-size.sh --write

run: build
	@bash scripts/setup.sh run
	@bash scripts/run.sh

# Checks a deployment against the security checklist (docs/operations.md#preflight), e.g.
# make preflight PREFLIGHT_ARGS="--envoy-config /etc/envoy/envoy.yaml --env-file prod.env"
preflight:
	.venv/bin/python scripts/preflight.py $(PREFLIGHT_ARGS)

lint:
	cargo fmt --all -- --check
	cargo fmt --manifest-path fuzz/Cargo.toml -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test-unit:
	cargo test --workspace

test-wasm:
	@bash scripts/test-wasm.sh

test-e2e: build build-bench
	$(PYTEST) tests -n $(E2E_WORKERS) -p no:cacheprovider -rfE

# deploy/kubernetes/ and deploy/docker-compose.yaml checked with the projects' own Go types and
# compose-go (tests/k8s; part of test-e2e too), with Envoy validating the manifests' fragments.
test-k8s: build
	@bash scripts/setup.sh k8s
	$(PYTEST) tests/test_kubernetes.py -p no:cacheprovider -rfE

# A few of the tests (config validation, headers, one webhook, one login limit, one audit record)
# under every Envoy in .envoy-compat-versions, each from its own venv in .tools/envoy-<version>/
# (docs/compatibility.md). COMPAT_VERSIONS picks some; COMPAT_WRITE=1 records the table there.
test-compat: build
	@bash scripts/setup.sh compat
	.venv/bin/python scripts/compat.py $(if $(COMPAT_WRITE),--write) $(COMPAT_VERSIONS)

# The fuzz targets (fuzz/, docs/robustness.md#fuzzing), one at a time under nice. FUZZ_SECONDS
# per target (default 60) or FUZZ_RUNS executions per target; FUZZ_TARGETS picks some.
fuzz:
	@bash scripts/fuzz.sh $(FUZZ_TARGETS)

# The smoke run in `make test`: every target FUZZ_SMOKE_SECONDS, from its saved corpus.
FUZZ_SMOKE_SECONDS ?= 2
test-fuzz:
	@FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) FUZZ_RUNS= bash scripts/fuzz.sh

test: setup lint test-unit test-wasm test-fuzz test-e2e

# tests/test_faults_e2e.py one test at a time with AURA_SOAK=1: a failure mode within
# timeout + 50 ms, control p99 under 200 ms (docs/robustness.md). Needs a quiet machine; what
# each run measured is appended to logs/faults/measurements.jsonl.
soak: build
	AURA_SOAK=1 $(PYTEST) tests/test_faults_e2e.py -p no:cacheprovider -rfE

clean:
	cargo clean
	rm -rf .run logs/e2e fuzz/target fuzz/logs dist
