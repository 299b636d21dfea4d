#!/usr/bin/env bash
# Builds the filter module: target/wasm32-wasip1/release/aura_guard.wasm (and any other
# package given with -p, e.g. the bench's no-op filter). Uses rustup's wasm32-wasip1 target when
# installed, else Debian's rustc-web with -Zbuild-std (see shared TOOLCHAIN notes in docs/).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh
PKGS=("$@"); [ ${#PKGS[@]} -eq 0 ] && PKGS=(-p aura-guard)
# The test-trap feature (a request can make the module panic: tests/test_trap_e2e.py) must never
# land in the shipped module's path: it builds only into a target directory of its own.
case " ${PKGS[*]} " in
  *test-trap*)
    case " ${PKGS[*]} " in
      *" --target-dir "*) ;;
      *) echo "build-wasm: the test-trap feature needs its own --target-dir" >&2; exit 2 ;;
    esac ;;
esac
if rustup_has_wasip1; then
  cargo build --release --target wasm32-wasip1 "${PKGS[@]}"
else
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
  RUSTFLAGS="-C linker=wasm-ld-19 -C link-self-contained=no -L /usr/lib/wasm32-wasi" \
  /usr/bin/cargo build --release --target wasm32-wasip1 -Zbuild-std=std,panic_abort "${PKGS[@]}"
fi
