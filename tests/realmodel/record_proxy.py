"""A recording HTTP proxy for debugging (run.sh starts it when REALMODEL_RECORD=1):
listens on 127.0.0.1:LISTEN, forwards every request to 127.0.0.1:UPSTREAM
unchanged, relays the response as it arrives (SSE streams stay streams), and
appends one JSON line per exchange to LOG: path, request body, status, and the
tail of the response body. Shows exactly what the gateway sent upstream.

Usage: record_proxy.py LISTEN_PORT UPSTREAM_PORT LOG_FILE
"""

from __future__ import annotations

import http.client
import http.server
import json
import sys
import threading

LISTEN, UPSTREAM, LOG_PATH = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
LOG = open(LOG_PATH, "a", encoding="utf-8")
LOCK = threading.Lock()
HOP = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding", "keep-alive"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # close-delimited responses: no re-chunking needed

    def do_GET(self):
        self.forward(None)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.forward(self.rfile.read(n))

    def forward(self, body: bytes | None):
        conn = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=300)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        self.end_headers()
        tail = b""
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            tail = (tail + chunk)[-4000:]
            self.wfile.write(chunk)
            self.wfile.flush()
        try:
            req = json.loads(body) if body else None
        except ValueError:
            req = body.decode(errors="replace") if body else None
        line = {"path": self.path, "request": req, "status": resp.status,
                "response_tail": tail.decode(errors="replace")}
        with LOCK:
            LOG.write(json.dumps(line) + "\n")
            LOG.flush()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", LISTEN), Handler).serve_forever()
