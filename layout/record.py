#!/usr/bin/env python3
"""Writes the release linker's symbol ordering file, `layout/hot-symbols.txt`.

The executable's code is mapped from the page cache, and the kernel maps
64 KiB around every page a process first touches. Left in the compiler's
order, the ~1 700 functions that run as the gateway starts and idles are
spread over most of the 10 MiB of code, so most of it ends up resident
(BENCHMARKS.md, Round 6). The linker (lld, rustc's default) lays out the
functions named in the ordering file first, in its order, so they share a
few pages; `build.rs` passes the file to release links of `hermes`.

This script records those functions with valgrind's callgrind: for each
binary given (by default the release `hermes` built here), it records a
restart that then idles, a first start (migrations), and the requests a
client sends (chat completions and Responses, streamed and not, a tool
call), against the fake upstream built beside it. The file lists the
functions in that order of phases, so what an idle gateway runs comes
first and shares the fewest pages.

Symbol names carry a hash of the crate they were compiled in, and that hash
differs between `cargo build --release` and the benchmark's
`--features testing`, so record both:

    cargo build --release && cp target/release/hermes /tmp/hermes-plain
    cargo build --release --features testing
    layout/record.py /tmp/hermes-plain target/release/hermes

A stale file is harmless: names it lists that no longer exist are skipped,
and new functions go where the compiler puts them. Needs valgrind.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "layout" / "hot-symbols.txt"
KEY = "layout-record-key-0123456789"
# Everything runs some 50 times slower under callgrind.
READY_LIMIT_S = 120
IDLE_S = 2.0
EXIT_LIMIT_S = 120


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, method, path, body=None, timeout=120):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(port, proc):
    deadline = time.time() + READY_LIMIT_S
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the gateway exited with {proc.returncode} before it was ready")
        try:
            if http(port, "GET", "/health", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("the gateway was not ready in time")


def run(binary, home, out, upstream=None, work=None):
    """Runs `binary gateway` (under callgrind when `out` is set), calls
    `work(port)` once it is ready, lets it idle, then stops it."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "HERMES_HOME": str(home / "home"),
        "API_SERVER_PORT": str(port),
        "API_SERVER_KEY": KEY,
        "RUST_LOG": "info",
    }
    if upstream:
        env.update(OPENAI_BASE_URL=upstream, HERMES_MODEL="layout-model")
    cmd = [str(binary), "gateway"]
    if out:
        cmd = ["valgrind", "--tool=callgrind", "--demangle=no",
               f"--callgrind-out-file={out}"] + cmd
    with open(home / "gateway.log", "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log)
    wait_ready(port, proc)
    if work:
        work(port)
    time.sleep(IDLE_S)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=EXIT_LIMIT_S)


def requests(port):
    chat = "/v1/chat/completions"
    for stream in (False, True):
        for text in ("hello", "use a tool"):
            status, body = http(port, "POST", chat, {
                "model": "hermes-agent", "stream": stream,
                "messages": [{"role": "user", "content": text}]})
            if status != 200:
                sys.exit(f"{chat} answered {status}: {body[:300]!r}")
        status, body = http(port, "POST", "/v1/responses", {
            "model": "hermes-agent", "stream": stream, "input": "hello"})
        if status != 200:
            sys.exit(f"/v1/responses answered {status}: {body[:300]!r}")
    http(port, "GET", "/v1/models")


FN = re.compile(r"^(c?ob|c?fn)=\((\d+)\)(?: (.*))?$")


def functions(callgrind_out, binary):
    """The functions of `binary` that ran, by their linker names."""
    obs, fns, ob, found = {}, {}, None, []
    with open(callgrind_out, errors="replace") as f:
        for line in f:
            m = FN.match(line.rstrip("\n"))
            if not m:
                continue
            kind, idx, name = m.groups()
            if kind in ("ob", "cob"):
                obs[idx] = name or obs[idx]
                if kind == "ob":
                    ob = obs[idx]
                continue
            fns[idx] = name or fns[idx]
            if kind == "fn" and ob == str(binary):
                # callgrind marks recursion levels as `name'2`.
                found.append(fns[idx].split("'")[0])
    # Addresses without a symbol show as `0x…`, the loader's frame as
    # `(below main)`.
    return [n for n in found if not n.startswith(("0x", "("))]


def record(binary):
    binary = Path(binary).resolve()
    # The fake model server is built with `--features testing`; a plain
    # binary copied elsewhere uses the one in this checkout.
    fake = binary.parent / "hermes-fake-upstream"
    if not fake.exists():
        fake = ROOT / "target" / "release" / "hermes-fake-upstream"
    if not fake.exists():
        sys.exit(f"no {fake}: build it with `cargo build --release --features testing`")
    phases = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # A restart that idles: what a running service has touched.
        home = tmp / "restart"
        home.mkdir()
        run(binary, home, None)
        run(binary, home, tmp / "restart.cg")
        phases.append(functions(tmp / "restart.cg", binary))
        # A first start: creating and migrating the database.
        home = tmp / "fresh"
        home.mkdir()
        run(binary, home, tmp / "fresh.cg")
        phases.append(functions(tmp / "fresh.cg", binary))
        # Requests of every kind.
        up = subprocess.Popen([str(fake), "--delay-ms", "1"], stdout=subprocess.PIPE)
        try:
            base = up.stdout.readline().decode().strip()
            home = tmp / "requests"
            home.mkdir()
            run(binary, home, tmp / "requests.cg", upstream=base, work=requests)
            phases.append(functions(tmp / "requests.cg", binary))
        finally:
            up.kill()
    return phases


def main():
    binaries = sys.argv[1:] or [ROOT / "target" / "release" / "hermes"]
    recorded = [record(b) for b in binaries]
    seen, order = set(), []
    # Phase by phase across the binaries, so each phase's code is together.
    for phase in range(len(recorded[0])):
        for phases in recorded:
            for name in phases[phase]:
                if name not in seen:
                    seen.add(name)
                    order.append(name)
    OUT.write_text("".join(n + "\n" for n in order))
    print(f"{OUT}: {len(order)} functions", file=sys.stderr)


if __name__ == "__main__":
    main()
