#!/usr/bin/env bash
# `make run`: the whole local stack in the foreground. Starts the demo upstream and Envoy with
# the freshly built module (and, where installed, the services later capabilities add), waits
# until it is ready, prints a banner, and stops every child on Ctrl-C or SIGTERM.
# Ports: LISTEN_PORT (8000), ADMIN_PORT (9901), UPSTREAM_PORT (8080), COLLECTOR_PORT (9300),
# RATELIMIT_GRPC_PORT (8081; Redis and the rate-limit service's HTTP port are picked free).
# ENVOYS=N (default 1) starts a fleet of N Envoys: listeners LISTEN_PORT..LISTEN_PORT+N-1, admin
# ADMIN_PORT..ADMIN_PORT+N-1, logs envoy1.log..envoyN.log, all sharing the one rate-limit
# service + Redis, the one collector and the demo upstream. Each is rendered with
# render_envoy.py --fleet-member: the webhook replay check goes fleet-wide
# (webhook.replay.mode "ratelimit", unless AURA_GUARD_CONFIG names a mode) and its audit stream
# is named after it (aura-guard-envoyI-...).
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
ENVOYS="${ENVOYS:-1}"
if ! [[ "$ENVOYS" =~ ^[1-9][0-9]*$ ]] || [ "$ENVOYS" -gt 64 ]; then
  echo "run: ENVOYS=$ENVOYS: give the number of Envoys, 1 to 64" >&2
  exit 1
fi
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
# Envoy i (0-based) listens on LISTEN_PORT+i, its admin on ADMIN_PORT+i. A fleet's port ranges
# must not run into each other or into the other services' ports.
PORTS=("$UPSTREAM_PORT" "$RATELIMIT_GRPC_PORT" "$COLLECTOR_PORT")
for ((i = 0; i < ENVOYS; i++)); do PORTS+=("$((LISTEN_PORT + i))" "$((ADMIN_PORT + i))"); done
CLASH="$(printf '%s\n' "${PORTS[@]}" | sort | uniq -d | head -1)"
if [ -n "$CLASH" ]; then
  echo "run: port $CLASH is used twice (ENVOYS=$ENVOYS Envoys take LISTEN_PORT=$LISTEN_PORT.. and ADMIN_PORT=$ADMIN_PORT..); pick ports further apart" >&2
  exit 1
fi
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
ENVOY_PIDS=()

stop_all() {
  trap - INT TERM EXIT
  echo; echo "run: stopping"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT

# The webhook replay mode a rendered Envoy config gives the filter ("local" when unnamed).
replay_mode() {
  "$PY" - "$1" <<'PY'
import json, sys
sys.path.insert(0, "scripts")
import yaml
from aura_common import find_wasm_config
with open(sys.argv[1]) as f:
    plugin = json.loads(find_wasm_config(yaml.safe_load(f))["configuration"]["value"])
print(((plugin.get("webhook") or {}).get("replay") or {}).get("mode", "local"))
PY
}

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

# One Envoy is "envoy" (envoy.yaml, envoy.log) as it always was; a fleet's are envoy1..envoyN.
NAMES=()
for ((i = 0; i < ENVOYS; i++)); do
  if [ "$ENVOYS" -eq 1 ]; then NAMES+=(envoy); FLEET_ARGS=(); else NAMES+=("envoy$((i + 1))"); FLEET_ARGS=(--fleet-member "${NAMES[i]}"); fi
  "$PY" scripts/render_envoy.py --out "$RUN_DIR/${NAMES[i]}.yaml" \
    --listen-port "$((LISTEN_PORT + i))" --admin-port "$((ADMIN_PORT + i))" \
    --upstream-port "$UPSTREAM_PORT" --collector-port "$COLLECTOR_PORT" \
    --ratelimit-port "$RATELIMIT_GRPC_PORT" \
    ${AURA_GUARD_CONFIG:+--plugin-config "$AURA_GUARD_CONFIG"} "${FLEET_ARGS[@]}"
  # Several Envoys on one host: hot restart is off, so they share no shared-memory region.
  "$(envoy_bin)" -c "$RUN_DIR/${NAMES[i]}.yaml" --disable-hot-restart --log-level info \
    >"$RUN_DIR/${NAMES[i]}.log" 2>&1 &
  PIDS+=($!)
  ENVOY_PIDS+=($!)
done
for ((i = 0; i < ENVOYS; i++)); do
  wait_http "http://127.0.0.1:$((ADMIN_PORT + i))/ready" "${NAMES[i]}" "${ENVOY_PIDS[i]}"
done

# Never print a database URL: it may hold a password.
if [ -n "${AUDIT_DATABASE_URL:-}" ]; then DB_NOTE='$AUDIT_DATABASE_URL'
elif [ -n "${DATABASE_URL:-}" ]; then DB_NOTE='$DATABASE_URL'
else DB_NOTE=./data/audit.db; fi

if [ "$ENVOYS" -eq 1 ]; then
  ENVOY_LINES="    proxy     http://127.0.0.1:$LISTEN_PORT   (Envoy + aura-guard)
    admin     http://127.0.0.1:$ADMIN_PORT    (stats: /stats?filter=wasmcustom)"
  LOGIN_PORT="$LISTEN_PORT"
else
  MODE="$(replay_mode "$RUN_DIR/${NAMES[0]}.yaml")"
  if [ "$MODE" = ratelimit ]; then MODE_NOTE="ratelimit (fleet-wide, in Redis)"
  else MODE_NOTE="$MODE (per Envoy: AURA_GUARD_CONFIG names it)"; fi
  ENVOY_LINES="    fleet     $ENVOYS Envoys + aura-guard sharing the rate limits (Redis) and the collector
              webhook replay check: $MODE_NOTE; stats on each admin: /stats?filter=wasmcustom"
  for ((i = 0; i < ENVOYS; i++)); do
    ENVOY_LINES+="
    ${NAMES[i]}$(printf '%*s' $((9 - ${#NAMES[i]})) '') proxy http://127.0.0.1:$((LISTEN_PORT + i))   admin http://127.0.0.1:$((ADMIN_PORT + i))   log ${NAMES[i]}.log, audit stream aura-guard-${NAMES[i]}-*"
  done
  # The try: login loop goes round the fleet: the limit holds across Envoys.
  LOGIN_PORT="\$((${LISTEN_PORT} + i % ${ENVOYS}))"
fi

cat <<BANNER

  aura-guard is running (environment: $ENV_NOTE)
$ENVOY_LINES
    upstream  http://127.0.0.1:$UPSTREAM_PORT   (demo)
    collector http://127.0.0.1:$COLLECTOR_PORT   (audit; token $TOKEN_NOTE; audit enabled: $AUDIT_LOG_ENABLED)
              files ${AUDIT_LOG_DIR:-./logs/audit}, database $DB_NOTE
    ratelimit $(grep -o 'grpc=[^ ]*' "$RUN_DIR/ratelimit.log" | head -1) $(grep -o 'redis=[^ ]*' "$RUN_DIR/ratelimit.log" | head -1)   (envoyproxy/ratelimit + Redis, envoy/ratelimit/config.yaml)
    jwt       JWT_SECRET_KEY${JWT_NOTE:-}
    logs      $RUN_DIR/*.log

  try:
    curl -si http://127.0.0.1:$LISTEN_PORT/api/v2/ping
    curl -si -X POST http://127.0.0.1:$LISTEN_PORT/auth/login -d 'username=demo&password=demo-password'
    for i in \$(seq 6); do curl -s -o /dev/null -w '%{http_code}\\n' -X POST http://127.0.0.1:$LOGIN_PORT/auth/login -d 'username=test&password=wrong'; done
    curl -s  http://127.0.0.1:$ADMIN_PORT/stats?filter=wasmcustom
    curl -si -X POST http://127.0.0.1:$LISTEN_PORT/api/v1/payments/refund -H 'content-type: application/json' -d '{"amount":5,"card_token":"tok_x"}'
    $COLLECTOR_BIN query --type payment_refund      # audit records (after ~1 s)
    $COLLECTOR_BIN verify                           # hash chain check

  Ctrl-C stops everything.
BANNER

# Exit (and stop the rest) as soon as any child dies.
wait -n "${PIDS[@]}"
echo "run: a component exited; see $RUN_DIR/*.log" >&2
