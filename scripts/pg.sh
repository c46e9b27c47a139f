#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks, from the system's initdb/pg_ctl.
#
#   eval "$(scripts/pg.sh start DIR)"   # prints `export DATABASE_URL=...` and `export SLUICE_PG_DIR=...`
#   scripts/pg.sh stop DIR
#   scripts/pg.sh down DIR / up DIR     # stop and start again on the same port (fault tests)
#
# Installs Debian's postgresql package when initdb is missing. As root, the cluster runs as the
# `postgres` user (PostgreSQL refuses to run as root). Trust authentication on 127.0.0.1 only;
# fsync is on, so benchmarks measure a durable database.
set -euo pipefail

find_bin() {
  local name="$1"
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -1 || true)"
  if [ -n "$found" ]; then echo "$found"; return; fi
  return 1
}

ensure_installed() {
  if ! find_bin initdb >/dev/null; then
    echo "pg.sh: installing PostgreSQL (Debian's package)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|down|up DIR" >&2; exit 2; }

case "$cmd" in
  start)
    ensure_installed
    initdb="$(find_bin initdb)"
    pg_ctl="$(find_bin pg_ctl)"
    # A cluster left behind by an interrupted run is stopped before its directory goes.
    [ -d "$dir/data" ] && "$0" stop "$dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [ "$(id -u)" = 0 ]; then
      id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
      chown postgres "$dir"
      # The postgres user must be able to reach the directory.
      d="$dir"; while [ "$d" != / ]; do chmod o+x "$d" 2>/dev/null || true; d="$(dirname "$d")"; done
    fi
    as_owner "$initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || as_owner "$initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    port="$(free_port)"
    echo "$port" > "$dir/port"
    "$0" up "$dir"
    echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
    echo "export SLUICE_PG_DIR=$dir"
    ;;
  up)
    pg_ctl="$(find_bin pg_ctl)"
    port="$(cat "$dir/port")"
    as_owner "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB" >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    ;;
  stop|down)
    pg_ctl="$(find_bin pg_ctl || true)"
    if [ -n "$pg_ctl" ] && [ -d "$dir/data" ]; then
      as_owner "$pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
  *)
    echo "usage: $0 start|stop|down|up DIR" >&2; exit 2 ;;
esac
