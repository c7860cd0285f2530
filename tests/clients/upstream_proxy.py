"""A recording pass-through between the gateway and hermes-fake-upstream.

Usage: upstream_proxy.py <fake-upstream base URL, e.g. http://127.0.0.1:PORT/v1>

Listens on 127.0.0.1 (a free port) and prints its base URL on the first line of
stdout. Every request is forwarded unchanged to the fake upstream and its
answer relayed as it arrives (streams included, one read at a time); the
request's method, path and JSON body are recorded. `GET /_log` returns the
records so far as a JSON list, so a test can count the model calls a turn
made and read the conversation the model server received.
Standard library only.
"""
import http.client
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM = urllib.parse.urlsplit(sys.argv[1])
LOG = []
LOCK = threading.Lock()
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade"}


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: the body ends when the connection closes, so a relayed stream
    # needs neither a length nor chunked framing.
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def _relay(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.command == "GET" and self.path == "/_log":
            with LOCK:
                data = json.dumps(LOG).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        with LOCK:
            LOG.append({"method": self.command, "path": self.path, "body": parsed})
        conn = http.client.HTTPConnection(UPSTREAM.hostname, UPSTREAM.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP and k.lower() != "host"}
        headers["Host"] = UPSTREAM.netloc
        if body:
            headers["Content-Length"] = str(len(body))
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP:
                    self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    break
                self.wfile.write(chunk)
                self.wfile.flush()
        except (OSError, http.client.HTTPException):
            # The fake upstream's "break" script drops the stream mid-way:
            # drop ours the same way.
            pass
        finally:
            conn.close()

    do_GET = do_POST = do_DELETE = _relay


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    base_path = UPSTREAM.path.rstrip("/")
    print(f"http://127.0.0.1:{server.server_address[1]}{base_path}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
