#!/usr/bin/env bash
# tests/postgres/start.sh — a throwaway PostgreSQL for the storage tests.
#
# Installs Debian's `postgresql` package when no server binaries are on the
# machine, creates a cluster in a new temporary directory, starts it on a free
# loopback port (no Unix socket outside that directory, no fsync: test data
# only) and prints, on stdout, the two lines to `eval`:
#
#   export HERMES_TEST_POSTGRES_URL=postgres://hermes@127.0.0.1:<port>/hermes
#   export HERMES_TEST_POSTGRES_DIR=<dir>
#
# Stop it with tests/postgres/stop.sh (pg_ctl stop, then the directory goes).
# The server runs as the `postgres` system user when started as root
# (PostgreSQL refuses to run as root). Everything it prints goes to stderr.
set -euo pipefail

# How long pg_ctl waits for the server to accept connections.
START_TIMEOUT_S=60

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "installing Debian's postgresql package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends postgresql >&2 \
        || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends postgresql >&2; }
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

dir=$(mktemp -d /tmp/hermes-pg.XXXXXX)
as_server=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    as_server=(runuser -u postgres --)
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

"${as_server[@]}" "$bin/initdb" -D "$dir/data" -U hermes --auth=trust -E UTF8 \
    --no-instructions >&2
"${as_server[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t "$START_TIMEOUT_S" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" \
    start >&2
"${as_server[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U hermes hermes >&2

echo "export HERMES_TEST_POSTGRES_URL=postgres://hermes@127.0.0.1:$port/hermes"
echo "export HERMES_TEST_POSTGRES_DIR=$dir"
