#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the registry tests and print the URL to use.
#
# Usage:
#   eval "$(.ci/postgres.sh)"        # starts (or reuses) the server, exports KRONCL_TEST_POSTGRES_URL
#   .ci/postgres.sh stop             # stops it
#
# Idempotent: a second run finds the running server and prints the same URL. The cluster lives in
# its own directory (KRONCL_PG_BASE, default /tmp/kroncl-pg) so it never touches a system cluster;
# it listens on 127.0.0.1 only, on KRONCL_PG_PORT (default 5432, or the next free port when 5432 is
# taken). Durability is switched off (fsync=off): this server holds test data only.
# Only the `export ...` line goes to stdout; progress goes to stderr.
set -euo pipefail

BASE="${KRONCL_PG_BASE:-/tmp/kroncl-pg}"
DATA="$BASE/data"
SOCK="$BASE/sock"
LOG="$BASE/server.log"
DB_NAME="${KRONCL_PG_DB:-kroncl_test}"
DB_USER="${KRONCL_PG_USER:-kroncl}"
DB_PASS="${KRONCL_PG_PASSWORD:-kroncl}"

log() { echo "[postgres.sh] $*" >&2; }

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
  done
  if command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then
    pg_config --bindir; return 0
  fi
  return 1
}

BINDIR="$(find_bindir || true)"
if [[ -z "$BINDIR" ]]; then
  log "PostgreSQL server binaries not found; installing Debian's postgresql package"
  SUDO=""
  if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update >&2
  $SUDO apt-get install -y postgresql >&2
  BINDIR="$(find_bindir)"
fi

# The server refuses to run as root: as root we run it as the `postgres` system user.
if [[ "$(id -u)" == 0 ]]; then
  RUN_USER="postgres"
  if command -v runuser >/dev/null 2>&1; then
    as_pg() { runuser -u postgres -- "$@"; }
  else
    as_pg() { su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; }
  fi
else
  RUN_USER="$(id -un)"
  as_pg() { "$@"; }
fi

running_port() {
  # postmaster.pid line 4 holds the port of a live server.
  if [[ -f "$DATA/postmaster.pid" ]] && as_pg "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    sed -n 4p "$DATA/postmaster.pid"
  fi
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

if [[ "${1:-}" == "stop" ]]; then
  if [[ -n "$(running_port)" ]]; then
    as_pg "$BINDIR/pg_ctl" -D "$DATA" -m fast -w stop >&2
  else
    log "no server running in $DATA"
  fi
  exit 0
fi

mkdir -p "$BASE" "$SOCK"
if [[ "$(id -u)" == 0 ]]; then chown "$RUN_USER" "$BASE" "$SOCK"; fi

if [[ ! -f "$DATA/PG_VERSION" ]]; then
  log "initdb into $DATA"
  as_pg "$BINDIR/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >&2
fi

PORT="$(running_port)"
if [[ -z "$PORT" ]]; then
  PORT="${KRONCL_PG_PORT:-5432}"
  while ! port_free "$PORT"; do PORT=$((PORT + 1)); done
  log "starting server on 127.0.0.1:$PORT (log: $LOG)"
  as_pg "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start \
    -o "-p $PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$SOCK -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >&2
else
  log "server already running on 127.0.0.1:$PORT"
fi

psql_admin() { as_pg "$BINDIR/psql" -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

if [[ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" != 1 ]]; then
  log "creating role $DB_USER"
  psql_admin -c "CREATE ROLE \"$DB_USER\" LOGIN PASSWORD '$DB_PASS'" >&2
fi
if [[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]]; then
  log "creating database $DB_NAME"
  psql_admin -c "CREATE DATABASE \"$DB_NAME\" OWNER \"$DB_USER\"" >&2
fi

echo "export KRONCL_TEST_POSTGRES_URL=postgresql+psycopg://$DB_USER:$DB_PASS@127.0.0.1:$PORT/$DB_NAME"
