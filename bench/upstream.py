"""A scripted chat-completions upstream in Python, for hermes-bench.

The spec's throughput target (at full load, at least 80 % of the direct
throughput) was set against a scripted Python upstream on the same 2 cores
(about 5 500 requests/s alone), and issue 17's first measurement used one
too. This one is the plainest such server: the standard library only
(asyncio streams), HTTP/1.1 with keep-alive and Content-Length bodies, each
request's JSON body parsed and a chat completion written back, as a real
model server does. It is not tuned to a figure; it serves about four times
the spec's rate here, and the benchmark reports what it serves alone.

    python3 bench/upstream.py     # prints its port on the first line

It listens on 127.0.0.1 only and stops when its standard input closes (the
benchmark holds the other end), so it never outlives the run.
"""

import asyncio
import json
import sys
import time

# How many connections may wait to be accepted (the gateway and the load
# generator open theirs in bursts).
BACKLOG = 1024
# Largest request head or body read; beyond, the connection is closed.
MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
NOT_IMPLEMENTED = (
    b"HTTP/1.1 501 Not Implemented\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
)


def completion(request: dict, n: int) -> bytes:
    """A whole chat completion answering `request`."""
    return json.dumps(
        {
            "id": f"chatcmpl-py{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        }
    ).encode()


class Server:
    def __init__(self) -> None:
        self.served = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                # A head longer than MAX_HEAD raises LimitOverrunError.
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                chunked = False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value.strip())
                    elif name == b"transfer-encoding":
                        chunked = True
                if chunked:
                    # Bodies with a Content-Length only (what the gateway and
                    # the benchmark send); anything else ends the connection.
                    writer.write(NOT_IMPLEMENTED)
                    await writer.drain()
                    break
                if length > MAX_BODY:
                    break
                body = await reader.readexactly(length)
                try:
                    request = json.loads(body)
                    if not isinstance(request, dict):
                        raise ValueError("not an object")
                    status, payload = b"200 OK", completion(request, self.served)
                except ValueError:
                    status, payload = b"400 Bad Request", b'{"error":{"message":"bad JSON"}}'
                self.served += 1
                writer.write(
                    b"HTTP/1.1 " + status
                    + b"\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(payload)).encode()
                    + b"\r\n\r\n"
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def main() -> None:
    server = Server()
    srv = await asyncio.start_server(
        server.handle, "127.0.0.1", 0, backlog=BACKLOG, limit=MAX_HEAD
    )
    port = srv.sockets[0].getsockname()[1]
    print(port, flush=True)
    # Stop when the benchmark closes our standard input (or dies).
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    srv.close()


if __name__ == "__main__":
    asyncio.run(main())
