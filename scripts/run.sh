#!/usr/bin/env bash
# `make run`: the whole local stack in the foreground. Starts the demo upstream and Envoy with
# the freshly built module (and, where installed, the services later capabilities add), waits
# until it is ready, prints a banner, and stops every child on Ctrl-C or SIGTERM.
# Ports: LISTEN_PORT (8000), ADMIN_PORT (9901), UPSTREAM_PORT (8080), COLLECTOR_PORT (9300),
# RATELIMIT_GRPC_PORT (8081; Redis and the rate-limit service's HTTP port are picked free).
# The original's variables and aura-guard's additions (ENVIRONMENT, DEBUG_ENDPOINTS_*,
# WEBHOOK_SECRET_*, JWT_SECRET_KEY, ...; docs/original-behaviour.md#environment-variables)
# configure the filter. The audit collector stores under AUDIT_LOG_DIR (./logs/audit) and
# AUDIT_DATABASE_URL / DATABASE_URL (./data/audit.db). AUDIT_COLLECTOR_TOKEN, when unset, is a
# fresh random token for this run only (given to the collector and Envoy, never printed).
# Audit is on in staging/production; make run also turns it on in development
# (AUDIT_LOG_ENABLED=true unless set) so the pipeline can be tried.
# The filter runs as production when nothing names the environment (README, "Configuration");
# make run is a development tool, so it passes ENVIRONMENT=development unless you set it, and
# says so in the banner. Outside development JWT_SECRET_KEY is required: the demo value is for
# development only (and the filter refuses a short or demo secret in production).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh

LISTEN_PORT="${LISTEN_PORT:-8000}"
ADMIN_PORT="${ADMIN_PORT:-9901}"
UPSTREAM_PORT="${UPSTREAM_PORT:-8080}"
RATELIMIT_GRPC_PORT="${RATELIMIT_GRPC_PORT:-8081}"
if [ -z "${ENVIRONMENT:-}" ]; then
  export ENVIRONMENT=development
  ENV_NOTE="development, set by make run because ENVIRONMENT was not set; the filter alone runs as production"
else
  ENV_NOTE="$ENVIRONMENT, from ENVIRONMENT"
fi
# The demo upstream signs its tokens with this and the filter verifies refresh tokens with it.
if [ -z "${JWT_SECRET_KEY:-}" ]; then
  # Compared as the filter parses ENVIRONMENT: case-insensitive, surrounding space ignored.
  if [ "$(printf '%s' "$ENVIRONMENT" | tr -d '[:space:]' | tr '[:upper:]' '[:lower:]')" != development ]; then
    echo "run: ENVIRONMENT=$ENVIRONMENT needs JWT_SECRET_KEY: make run uses its demo JWT secret in development only." >&2
    echo "run: give it a random secret of 32 bytes or more, e.g." >&2
    echo "run:   JWT_SECRET_KEY=\$(openssl rand -hex 32) ENVIRONMENT=$ENVIRONMENT make run" >&2
    exit 1
  fi
  export JWT_SECRET_KEY=demo-jwt-secret; JWT_NOTE=" (demo value, development only)"
fi
COLLECTOR_PORT="${COLLECTOR_PORT:-9300}"
COLLECTOR_BIN="${AURA_COLLECTOR_BIN:-$ROOT/target/debug/aura-collector}"
if [ -z "${AUDIT_COLLECTOR_TOKEN:-}" ]; then
  AUDIT_COLLECTOR_TOKEN="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  TOKEN_NOTE="random for this run"
else
  TOKEN_NOTE="from AUDIT_COLLECTOR_TOKEN"
fi
export AUDIT_COLLECTOR_TOKEN
export AUDIT_LOG_ENABLED="${AUDIT_LOG_ENABLED:-true}"
RUN_DIR="${RUN_DIR:-$ROOT/.run}"
mkdir -p "$RUN_DIR"
PY="$ROOT/.venv/bin/python"
PIDS=()

stop_all() {
  trap - INT TERM EXIT
  echo; echo "run: stopping"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT

wait_http() { # wait_http URL WHAT PID
  for _ in $(seq 1 300); do
    if curl -fs -o /dev/null "$1"; then return 0; fi
    kill -0 "$3" 2>/dev/null || { echo "run: $2 exited; see $RUN_DIR/$2.log" >&2; tail -20 "$RUN_DIR/$2.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "run: $2 not ready; see $RUN_DIR/$2.log" >&2; exit 1
}

"$PY" scripts/demo_upstream.py --port "$UPSTREAM_PORT" >"$RUN_DIR/upstream.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$UPSTREAM_PORT/health" upstream "${PIDS[-1]}"

# Redis + envoyproxy/ratelimit (installed by scripts/setup-ratelimit.sh) for auth rate limits.
"$PY" scripts/run_ratelimit.py --dir "$RUN_DIR/ratelimit" --grpc-port "$RATELIMIT_GRPC_PORT" \
  >"$RUN_DIR/ratelimit.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 600); do
  grep -q "ratelimit ready" "$RUN_DIR/ratelimit.log" 2>/dev/null && break
  kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "run: ratelimit exited; see $RUN_DIR/ratelimit.log" >&2; tail -20 "$RUN_DIR/ratelimit.log" >&2; exit 1; }
  sleep 0.1
done
grep -q "ratelimit ready" "$RUN_DIR/ratelimit.log" || { echo "run: ratelimit not ready; see $RUN_DIR/ratelimit.log" >&2; exit 1; }

# The audit collector (crates/aura-collector), before Envoy so the first batch finds it.
"$COLLECTOR_BIN" serve --listen "127.0.0.1:$COLLECTOR_PORT" >"$RUN_DIR/collector.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$COLLECTOR_PORT/healthz" collector "${PIDS[-1]}"

"$PY" scripts/render_envoy.py --out "$RUN_DIR/envoy.yaml" \
  --listen-port "$LISTEN_PORT" --admin-port "$ADMIN_PORT" --upstream-port "$UPSTREAM_PORT" \
  --collector-port "$COLLECTOR_PORT" \
  --ratelimit-port "$RATELIMIT_GRPC_PORT" \
  ${AURA_GUARD_CONFIG:+--plugin-config "$AURA_GUARD_CONFIG"}
"$(envoy_bin)" -c "$RUN_DIR/envoy.yaml" --disable-hot-restart --log-level info \
  >"$RUN_DIR/envoy.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$ADMIN_PORT/ready" envoy "${PIDS[-1]}"

# Never print a database URL: it may hold a password.
if [ -n "${AUDIT_DATABASE_URL:-}" ]; then DB_NOTE='$AUDIT_DATABASE_URL'
elif [ -n "${DATABASE_URL:-}" ]; then DB_NOTE='$DATABASE_URL'
else DB_NOTE=./data/audit.db; fi

cat <<BANNER

  aura-guard is running (environment: $ENV_NOTE)
    proxy     http://127.0.0.1:$LISTEN_PORT   (Envoy + aura-guard)
    admin     http://127.0.0.1:$ADMIN_PORT    (stats: /stats?filter=wasmcustom)
    upstream  http://127.0.0.1:$UPSTREAM_PORT   (demo)
    collector http://127.0.0.1:$COLLECTOR_PORT   (audit; token $TOKEN_NOTE; audit enabled: $AUDIT_LOG_ENABLED)
              files ${AUDIT_LOG_DIR:-./logs/audit}, database $DB_NOTE
    ratelimit $(grep -o 'grpc=[^ ]*' "$RUN_DIR/ratelimit.log" | head -1) $(grep -o 'redis=[^ ]*' "$RUN_DIR/ratelimit.log" | head -1)   (envoyproxy/ratelimit + Redis, envoy/ratelimit/config.yaml)
    jwt       JWT_SECRET_KEY${JWT_NOTE:-}
    logs      $RUN_DIR/*.log

  try:
    curl -si http://127.0.0.1:$LISTEN_PORT/api/v2/ping
    curl -si -X POST http://127.0.0.1:$LISTEN_PORT/auth/login -d 'username=demo&password=demo-password'
    for i in \$(seq 6); do curl -s -o /dev/null -w '%{http_code}\\n' -X POST http://127.0.0.1:$LISTEN_PORT/auth/login -d 'username=test&password=wrong'; done
    curl -s  http://127.0.0.1:$ADMIN_PORT/stats?filter=wasmcustom
    curl -si -X POST http://127.0.0.1:$LISTEN_PORT/api/v1/payments/refund -H 'content-type: application/json' -d '{"amount":5,"card_token":"tok_x"}'
    $COLLECTOR_BIN query --type payment_refund      # audit records (after ~1 s)
    $COLLECTOR_BIN verify                           # hash chain check

  Ctrl-C stops everything.
BANNER

# Exit (and stop the rest) as soon as any child dies.
wait -n "${PIDS[@]}"
echo "run: a component exited; see $RUN_DIR/*.log" >&2
