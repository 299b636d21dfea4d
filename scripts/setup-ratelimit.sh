#!/usr/bin/env bash
# Installs what the rate-limit tests and demos need: redis-server (Debian) and the real
# envoyproxy/ratelimit service (Go module, binary `service_cmd`) into <repo>/.tools/bin.
# Idempotent: a second run only checks and exits.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$REPO/.tools/bin"
MODULE="github.com/envoyproxy/ratelimit/src/service_cmd"
# Pinned upstream main commit 3fb702589d36 (2026-01-22). The newer f2fb15770f7f (2026-07-05)
# is refused by the Go module proxy reachable here ("403 This module version is not
# available"), so this is the newest commit that installs. Override with RATELIMIT_VERSION.
VERSION="${RATELIMIT_VERSION:-v1.4.1-0.20260122083618-3fb702589d36}"
STAMP="$BIN_DIR/service_cmd.version"

# --needs-go: exit 0 when installing would need Go (service_cmd missing or another version),
# for scripts/setup.sh's prerequisite check.
if [[ "${1:-}" == --needs-go ]]; then
  [[ -x "$BIN_DIR/service_cmd" && -f "$STAMP" && "$(cat "$STAMP")" == "$VERSION" ]] && exit 1
  exit 0
fi

log() { echo "setup-ratelimit: $*"; }
die() { echo "setup-ratelimit: ERROR: $*" >&2; exit 1; }

# 1. redis-server
if command -v redis-server >/dev/null 2>&1; then
  log "redis-server present ($(command -v redis-server))"
else
  command -v apt-get >/dev/null 2>&1 || die "redis-server missing and apt-get unavailable: install Redis by hand"
  if ! apt-cache policy redis-server 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    log "apt-get update (redis-server not in the package lists yet)"
    apt-get update -qq || die "apt-get update failed"
  fi
  log "apt-get install -y redis-server"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
    || die "apt-get install redis-server failed"
  command -v redis-server >/dev/null 2>&1 || die "redis-server still not on PATH after install"
fi

# 2. envoyproxy/ratelimit
if [[ -x "$BIN_DIR/service_cmd" && -f "$STAMP" && "$(cat "$STAMP")" == "$VERSION" ]]; then
  log "service_cmd $VERSION present ($BIN_DIR/service_cmd)"
else
  command -v go >/dev/null 2>&1 || die "Go not found: envoyproxy/ratelimit needs Go >= 1.25 to install ($MODULE@$VERSION)"
  mkdir -p "$BIN_DIR"
  log "go install $MODULE@$VERSION (a few minutes the first time)"
  if ! GOBIN="$BIN_DIR" GOFLAGS="${GOFLAGS:-} -buildvcs=false" go install "$MODULE@$VERSION"; then
    die "go install $MODULE@$VERSION failed (Go $(go env GOVERSION), GOPROXY=$(go env GOPROXY)); see the output above"
  fi
  [[ -x "$BIN_DIR/service_cmd" ]] || die "go install succeeded but $BIN_DIR/service_cmd is missing"
  echo "$VERSION" > "$STAMP"
  log "installed $BIN_DIR/service_cmd"
fi
