#!/usr/bin/env bash
# Runs the core's unit tests compiled to wasm32-unknown-unknown under Node with
# wasm-bindgen-test-runner, so the policy core is tested on the architecture it ships on.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$ROOT/.tools/bin/wasm-bindgen-test-runner"
# The wasm test binaries are large in debug; keep them small and quick to instantiate.
if rustup_has_wasm_target wasm32-unknown-unknown; then
  rustup run "$WASM_RUST_TOOLCHAIN" cargo test --target wasm32-unknown-unknown -p aura-guard-core
else
  RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 RUSTFLAGS="-C linker=wasm-ld-19" \
  /usr/bin/cargo test --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort -p aura-guard-core
fi
