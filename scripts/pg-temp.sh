#!/usr/bin/env bash
# Throw-away PostgreSQL cluster for trying the audit collector by hand.
#   scripts/pg-temp.sh start DIR   -> creates/starts a cluster in DIR, prints its DATABASE_URL
#   scripts/pg-temp.sh stop DIR    -> stops it (DIR can then be deleted, or started again: same port)
# Listens on 127.0.0.1 only, on a free port. Uses PG_BIN (or AURA_PG_BIN), else the newest
# Debian /usr/lib/postgresql/<version>/bin, else `pg_config --bindir` (apt-get install
# postgresql; any version). As root, runs the server as the postgres user (initdb refuses
# root) and hands DIR to that user.
set -euo pipefail

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
find_pg_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  command -v pg_config >/dev/null && pg_config --bindir
}
PG_BIN=${PG_BIN:-${AURA_PG_BIN:-$(find_pg_bin || true)}}
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] ||
  { echo "no PostgreSQL server binaries (initdb) in '${PG_BIN}' (apt-get install postgresql, or set PG_BIN)" >&2; exit 2; }

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "$(id -u)" = 0 ]; then
      chown -R postgres: "$dir"
      runuser -u postgres -- test -w "$dir" ||
        { echo "$dir is not reachable by the postgres user (its parents need o+x)" >&2; exit 2; }
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_pg "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >/dev/null
    fi
    # A restart reuses the port of the previous start, so a DATABASE_URL stays valid.
    port=$(cat "$dir/port" 2>/dev/null ||
      python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w -t 60 \
      -o "-p $port -h 127.0.0.1 -k $dir" start >/dev/null
    echo "$port" > "$dir/port"
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    dir=$(cd "$dir" && pwd)
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
