#!/usr/bin/env bash
# Starts a throw-away PostgreSQL cluster for the test suite (or reuses the one a previous run
# left) and prints its admin URL. The cluster lives under $MERIDIAN_PG_DIR, listens only on
# 127.0.0.1 on a port chosen free at first start, and trusts loopback connections.
set -euo pipefail
dir=${MERIDIAN_PG_DIR:-/tmp/meridian-test-pg}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ -f "$dir/port" ] && as_pg "$bin/pg_isready" -q -h 127.0.0.1 -p "$(cat "$dir/port")"; then
  echo "postgres://meridian@127.0.0.1:$(cat "$dir/port")/postgres"
  exit 0
fi
rm -rf "$dir"
mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown postgres "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$bin/initdb" -D "$dir/data" -U meridian --auth=trust >"$dir/initdb.log"
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
echo "$port" >"$dir/port"
echo "postgres://meridian@127.0.0.1:$port/postgres"
