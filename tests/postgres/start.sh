#!/usr/bin/env bash
# tests/postgres/start.sh — a throwaway PostgreSQL for the storage tests.
#
# Installs Debian's `postgresql` package when no server binaries are on the
# machine, creates a cluster in a new temporary directory, starts it on a free
# loopback port (no Unix socket outside that directory, no fsync: test data
# only; TLS on with a throwaway CA) and prints, on stdout, the lines to `eval`:
#
#   export HERMES_TEST_POSTGRES_URL=postgres://hermes@127.0.0.1:<port>/hermes
#   export HERMES_TEST_POSTGRES_DIR=<dir>
#   export HERMES_TEST_POSTGRES_CA=<dir>/ca.crt   (the CA of its TLS certificate)
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

# TLS for the tests of `sslmode=require`: a throwaway CA and a server
# certificate it signed for 127.0.0.1. Plain connections still work.
if ! command -v openssl > /dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssl >&2
fi
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=hermes test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/data/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$dir/san.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/san.ext" -out "$dir/data/server.crt" 2>/dev/null
chmod 600 "$dir/data/server.key"
[ "$(id -u)" = 0 ] && chown postgres "$dir/data/server.key" "$dir/data/server.crt"
"${as_server[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t "$START_TIMEOUT_S" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300 -c ssl=on" \
    start >&2
"${as_server[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U hermes hermes >&2

echo "export HERMES_TEST_POSTGRES_URL=postgres://hermes@127.0.0.1:$port/hermes"
echo "export HERMES_TEST_POSTGRES_DIR=$dir"
echo "export HERMES_TEST_POSTGRES_CA=$dir/ca.crt"
