#!/usr/bin/env bash
# The module's size by crate (docs/module-size.md): builds the filter with the shipped settings
# but its function names kept (its DWARF dropped: wasm-opt optimises less around it), into
# target/size-report/, and tabulates twiggy's sizes.
# Usage: scripts/module-size.sh [--write]   (--write replaces the table in docs/module-size.md)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh size
CARGO_PROFILE_RELEASE_STRIP=debuginfo WASM_OPT_EXTRA=-g \
  bash scripts/build-wasm.sh -p aura-guard --target-dir target/size-report
python3 scripts/module_size.py target/size-report/wasm32-wasip1/release/aura_guard.wasm "$@"
