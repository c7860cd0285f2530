#!/usr/bin/env bash
# tests/postgres/stop.sh — stops the server tests/postgres/start.sh started
# (its directory in $HERMES_TEST_POSTGRES_DIR) and removes its data.
set -uo pipefail
dir=${HERMES_TEST_POSTGRES_DIR:-}
[ -n "$dir" ] && [ -d "$dir/data" ] || exit 0
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_server=()
[ "$(id -u)" = 0 ] && as_server=(runuser -u postgres --)
"${as_server[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop > /dev/null 2>&1
rm -rf "$dir"
