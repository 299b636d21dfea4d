#!/usr/bin/env bash
# Builds and runs the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer), one at a time:
# docs/robustness.md#fuzzing.
# Usage: scripts/fuzz.sh [TARGET...]          (default: every target in fuzz/fuzz_targets)
#   FUZZ_SECONDS=N  run each target N seconds (default 60)
#   FUZZ_RUNS=N     run each target N executions instead (e.g. 10000000 for the long run)
#   FUZZ_ARGS="..." more libFuzzer options for every target (e.g. -max_len=1024)
#   FUZZ_NICE=N     run under `nice -n N` (default 10: the machine is shared)
#   FUZZ_CORPUS_DIR=D, FUZZ_LOG_DIR=D  where corpora and logs go (default fuzz/corpus, fuzz/logs)
#   FUZZ_BIN_DIR=D  run the binaries in D instead of building (a long run keeps a copy, so a
#                   rebuild meanwhile does not pull its binary away)
# Each target keeps its corpus in fuzz/corpus/<target> (git-ignored; it grows run to run) and
# writes crashing inputs to fuzz/artifacts/<target>/. Prints one line per target: executions,
# executions per second, seconds, corpus size, crashes. Exits 1 if any target crashed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.tools/bin:$HOME/.cargo/bin:$PATH"

NICE="${FUZZ_NICE:-10}"
TRIPLE="$(rustc -vV | awk '/^host:/{print $2}')"
if [ -n "${FUZZ_BIN_DIR:-}" ]; then
  BIN="$FUZZ_BIN_DIR"
else
  bash scripts/setup.sh fuzz
  # cargo-fuzz passes nightly-only flags (-Z...) only for sanitizers; without one (`-s none`:
  # safe Rust gains little from ASan, and it runs several times faster) the coverage flags are
  # stable `-C` options, and RUSTC_BOOTSTRAP lets libfuzzer-sys build on the stable toolchain.
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build --sanitizer none --release --debug-assertions)
  BIN="fuzz/target/$TRIPLE/release"
fi

if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(ls fuzz/fuzz_targets | sed -n 's/\.rs$//p')
fi
if [ -n "${FUZZ_RUNS:-}" ]; then
  LIMIT=(-runs="$FUZZ_RUNS")
  echo "fuzz: ${#TARGETS[@]} targets, $FUZZ_RUNS executions each"
else
  LIMIT=(-max_total_time="${FUZZ_SECONDS:-60}")
  echo "fuzz: ${#TARGETS[@]} targets, ${FUZZ_SECONDS:-60} s each"
fi

read -ra EXTRA <<<"${FUZZ_ARGS:-}"
LOGS="${FUZZ_LOG_DIR:-$ROOT/fuzz/logs}"
CORPORA="${FUZZ_CORPUS_DIR:-fuzz/corpus}"
mkdir -p "$LOGS"
failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "$CORPORA/$t" "fuzz/artifacts/$t"
  start=$(date +%s.%N)
  set +e
  nice -n "$NICE" "$BIN/$t" "$CORPORA/$t" -artifact_prefix="fuzz/artifacts/$t/" \
    "${LIMIT[@]}" "${EXTRA[@]}" -print_final_stats=1 >"$LOGS/$t.log" 2>&1
  rc=$?
  set -e
  secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.0f", e-s}')
  execs=$(awk '/^stat::number_of_executed_units/{print $2}' "$LOGS/$t.log")
  rate=$(awk '/^stat::average_exec_per_sec/{print $2}' "$LOGS/$t.log")
  corpus=$(find "$CORPORA/$t" -type f | wc -l)
  crashes=$(find "fuzz/artifacts/$t" -type f | wc -l)
  printf 'fuzz: %-18s execs %10s  exec/s %7s  %5ss  corpus %5s  crashes %s  (exit %s)\n' \
    "$t" "${execs:-?}" "${rate:-?}" "$secs" "$corpus" "$crashes" "$rc"
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed+=("$t")
    grep -m1 -A4 -E 'panicked|ERROR: libFuzzer|SUMMARY' "$LOGS/$t.log" >&2 || true
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/, logs in fuzz/logs/)" >&2
  exit 1
fi
