#!/usr/bin/env bash
# Agent-library compatibility: the Vercel AI SDK (`ai` + `@ai-sdk/openai`) and
# pydantic-ai drive the real `hermes gateway` binary, which talks to
# hermes-fake-upstream through a recording proxy (tests/clients/upstream_proxy.py)
# so the tests can count model calls and read what the model server received.
#
# Two gateways run: one with the defaults, one with `approvals.mode: ask` and
# an extra dangerous pattern matching the fake upstream's harmless tool call
# (`echo tool-output-42`), for the Responses API approval flow.
#
# Pinned client versions are installed into target/clients-node and
# target/clients-venv (reused when present). Everything runs on 127.0.0.1.
# HERMES_CLIENTS_NO_BUILD=1 uses the binaries already in target/debug;
# HERMES_CLIENTS_BIN=<dir> uses the ones in <dir> (no build either).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

AI_VERSION=7.0.173
AI_OPENAI_VERSION=4.0.118
PYDANTIC_AI_VERSION=2.68.0

bin="${HERMES_CLIENTS_BIN:-$root/target/debug}"
if [ "${HERMES_CLIENTS_NO_BUILD:-}" != 1 ] && [ -z "${HERMES_CLIENTS_BIN:-}" ]; then cargo build --quiet --bins --features testing; fi
node_dir="$root/target/clients-node"
venv="$root/target/clients-venv"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Wait (bounded, 10 s) until a file has a line matching a pattern; print the match.
wait_for() {
  local file=$1 pattern=$2
  for _ in $(seq 1 100); do
    if grep -qE "$pattern" "$file" 2>/dev/null; then grep -oE "$pattern" "$file" | head -1; return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$pattern' in $file:" >&2; cat "$file" >&2; return 1
}

# --- clients (pinned; installed once)
mkdir -p "$node_dir"
have_node() {
  node -e "const v=(p)=>require('$node_dir/node_modules/'+p+'/package.json').version;
    process.exit(v('ai')==='$AI_VERSION'&&v('@ai-sdk/openai')==='$AI_OPENAI_VERSION'?0:1)" 2>/dev/null
}
if ! have_node; then
  timeout 300 npm install --silent --no-audit --no-fund --prefix "$node_dir" \
    "ai@$AI_VERSION" "@ai-sdk/openai@$AI_OPENAI_VERSION" 2>&1 | grep -v EBADENGINE || true
  have_node || { echo "npm install of ai@$AI_VERSION @ai-sdk/openai@$AI_OPENAI_VERSION failed" >&2; exit 1; }
fi
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('pydantic-ai-slim') != '$PYDANTIC_AI_VERSION')" 2>/dev/null; then
  timeout 300 "$venv/bin/pip" install --quiet --disable-pip-version-check "pydantic-ai-slim[openai]==$PYDANTIC_AI_VERSION"
fi

# --- fake upstream, recording proxy, two gateways
"$bin/hermes-fake-upstream" > "$work/fake.out" &
pids+=($!)
fake_url=$(wait_for "$work/fake.out" 'http://127\.0\.0\.1:[0-9]+/v1')
python3 -u tests/clients/upstream_proxy.py "$fake_url" > "$work/proxy.out" &
pids+=($!)
proxy_url=$(wait_for "$work/proxy.out" 'http://127\.0\.0\.1:[0-9]+/v1')

key="clients-test-key-0123456789abcdef"
start_gateway() { # name
  local name=$1
  env -i PATH="$PATH" HOME="$work" HERMES_HOME="$work/$name" RUST_LOG=info \
    OPENAI_BASE_URL="$proxy_url" OPENAI_API_KEY=fake-upstream-key HERMES_MODEL=fake-model \
    API_SERVER_PORT=0 API_SERVER_KEY="$key" \
    "$bin/hermes" gateway 2> "$work/$name.log" &
  pids+=($!)
}
mkdir -p "$work/plain" "$work/ask"
printf 'approvals:\n  mode: ask\n  patterns:\n    - %s\n' "'^echo\\s'" > "$work/ask/config.yaml"
start_gateway plain
start_gateway ask
export HERMES_URL HERMES_ASK_URL
HERMES_URL=$(wait_for "$work/plain.log" 'http://127\.0\.0\.1:[0-9]+/v1')
HERMES_ASK_URL=$(wait_for "$work/ask.log" 'http://127\.0\.0\.1:[0-9]+/v1')
export HERMES_KEY="$key" UPSTREAM_LOG_URL="${proxy_url%/v1}/_log" MODEL=hermes-agent

# --- tests (each file bounded)
status=0
# ES modules resolve packages next to the importing file, not via NODE_PATH.
cp tests/clients/test_ai_sdk.mjs "$node_dir/"
timeout 120 node "$node_dir/test_ai_sdk.mjs" || status=1
timeout 120 "$venv/bin/python" tests/clients/test_pydantic_ai.py || status=1
if [ $status -ne 0 ]; then
  echo "--- gateway log (defaults)"; tail -30 "$work/plain.log"
  echo "--- gateway log (approvals: ask)"; tail -30 "$work/ask.log"
fi
exit $status
