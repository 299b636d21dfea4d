#!/usr/bin/env bash
# Builds the filter module: target/wasm32-wasip1/release/aura_guard.wasm (and any other
# package given with -p, e.g. the bench's no-op filter). Uses rustup's wasm32-wasip1 target when
# installed (toolchain WASM_RUST_TOOLCHAIN, scripts/lib.sh), else Debian's rustc-web with
# -Zbuild-std.
# The filter module then goes through binaryen's wasm-opt (docs/module-size.md).
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
# The commit the module logs at configure (src/root.rs, docs/release.md): 12 hex digits, with
# "-dirty" when tracked files differ from it. Cargo rebuilds the glue when it changes.
if [ -z "${AURA_GUARD_GIT_COMMIT:-}" ]; then
  AURA_GUARD_GIT_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  if [ "$AURA_GUARD_GIT_COMMIT" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    AURA_GUARD_GIT_COMMIT="$AURA_GUARD_GIT_COMMIT-dirty"
  fi
fi
export AURA_GUARD_GIT_COMMIT
if rustup_has_wasip1; then
  rustup run "$WASM_RUST_TOOLCHAIN" cargo build --release --target wasm32-wasip1 "${PKGS[@]}"
else
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
  RUSTFLAGS="-C linker=wasm-ld-19 -C link-self-contained=no -L /usr/lib/wasm32-wasi" \
  /usr/bin/cargo build --release --target wasm32-wasip1 -Zbuild-std=std,panic_abort "${PKGS[@]}"
fi

# wasm-opt shrinks the filter module by about a tenth (docs/module-size.md). The features are
# the ones rustc enables for wasm32-wasip1, so the output uses nothing the target does not.
# Cargo hard-links release/aura_guard.wasm to its own output on every build, fresh or not: the
# optimised file replaces that link (never writing through it), and is kept with the hash of
# its input and flags so an unchanged module is not optimised again. WASM_OPT_EXTRA adds flags
# (scripts/module-size.sh keeps the names with -g).
WASM_OPT_FLAGS=(-O3 --enable-bulk-memory --enable-multivalue --enable-mutable-globals
  --enable-nontrapping-float-to-int --enable-reference-types --enable-sign-ext ${WASM_OPT_EXTRA:-})
case " ${PKGS[*]} " in
  *" -p aura-guard "*)
    TARGET_DIR=target
    prev=
    for a in "${PKGS[@]}"; do [ "$prev" = --target-dir ] && TARGET_DIR="$a"; prev="$a"; done
    OUT="$TARGET_DIR/wasm32-wasip1/release/aura_guard.wasm"
    if ! command -v wasm-opt >/dev/null 2>&1; then
      echo "build-wasm: wasm-opt not found (scripts/setup.sh build installs binaryen): $OUT is not optimised and is over its size budget" >&2
    else
      IN_HASH="$(sha256sum "$OUT" | cut -d' ' -f1) ${WASM_OPT_FLAGS[*]}"
      CACHE="$OUT.opt"
      if [ -f "$CACHE" ] && [ "$(cat "$CACHE.input" 2>/dev/null)" = "$IN_HASH" ]; then
        cp "$CACHE" "$OUT.tmp"
      else
        wasm-opt "${WASM_OPT_FLAGS[@]}" "$OUT" -o "$OUT.tmp"
        cp "$OUT.tmp" "$CACHE"
        echo "$IN_HASH" > "$CACHE.input"
      fi
      mv "$OUT.tmp" "$OUT"
    fi ;;
esac
