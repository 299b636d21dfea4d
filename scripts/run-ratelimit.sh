#!/usr/bin/env bash
# Runs Redis + envoyproxy/ratelimit on loopback until interrupted. Usage:
#   scripts/run-ratelimit.sh --dir .run/ratelimit [--grpc-port N] [--http-port N] [--redis-port N]
exec python3 "$(dirname "${BASH_SOURCE[0]}")/run_ratelimit.py" "$@"
