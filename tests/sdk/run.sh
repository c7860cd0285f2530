#!/usr/bin/env bash
# Real-client compatibility: the official openai SDKs (Python and Node) drive
# the real `hermes gateway` binary, which talks to hermes-fake-upstream; then
# the real Prometheus parser reads /metrics.
# Everything runs on 127.0.0.1; SDKs are installed into target/sdk-env
# (a throw-away environment, reused between runs).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cargo build --quiet --bins --features testing
bin="$root/target/debug"
env_dir="$root/target/sdk-env"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Wait (bounded) until a file has a line matching a pattern; print the match.
wait_for() {
  local file=$1 pattern=$2
  for _ in $(seq 1 100); do
    if grep -qE "$pattern" "$file" 2>/dev/null; then grep -oE "$pattern" "$file" | head -1; return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$pattern' in $file:" >&2; cat "$file" >&2; return 1
}

"$bin/hermes-fake-upstream" > "$work/fake.out" &
pids+=($!)
fake_url=$(wait_for "$work/fake.out" 'http://127\.0\.0\.1:[0-9]+/v1')

key="sdk-test-key-0123456789abcdef"
env -i PATH="$PATH" HOME="$work" HERMES_HOME="$work/home" RUST_LOG=info \
  OPENAI_BASE_URL="$fake_url" HERMES_MODEL=fake-model \
  API_SERVER_PORT=0 API_SERVER_KEY="$key" \
  "$bin/hermes" gateway 2> "$work/gateway.log" &
pids+=($!)
url=$(wait_for "$work/gateway.log" 'http://127\.0\.0\.1:[0-9]+/v1')
export HERMES_URL="$url" HERMES_KEY="$key"

mkdir -p "$env_dir"
if [ ! -x "$env_dir/venv/bin/python" ]; then python3 -m venv "$env_dir/venv"; fi
"$env_dir/venv/bin/pip" install --quiet --disable-pip-version-check --upgrade openai prometheus_client
if [ ! -d "$env_dir/node/node_modules/openai" ]; then
  npm install --silent --no-audit --no-fund --prefix "$env_dir/node" openai
fi

status=0
"$env_dir/venv/bin/python" tests/sdk/test_openai_python.py || status=1
# ES modules resolve packages next to the importing file, not via NODE_PATH.
cp tests/sdk/test_openai_node.mjs "$env_dir/node/"
node "$env_dir/node/test_openai_node.mjs" || status=1
"$env_dir/venv/bin/python" tests/sdk/check_metrics.py || status=1
if [ $status -ne 0 ]; then echo "--- gateway log"; tail -50 "$work/gateway.log"; fi
exit $status
