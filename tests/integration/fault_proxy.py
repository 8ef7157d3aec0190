"""A fault-injecting HTTP proxy on loopback, in front of a real S3 API server (SeaweedFS).

Each accepted connection's first request is parsed far enough to count it and decide:

- ``pass``: relay it, and everything after it on that connection, to the upstream server;
- ``fail``: answer ``503 Service Unavailable`` (an S3 ``SlowDown`` error body) and close;
- ``hang``: read the request and never answer, until the client gives up or the proxy stops.

``fail_first=N`` fails the first N requests and passes the rest; ``mode`` applies to all
requests after that. Every answered failure says ``Connection: close``, so each retry of
the client arrives on a new connection and is counted.

``spare`` names requests (by their head) that always pass and count only as ``spared``:
the repository lock's lease objects and the bucket's settings, so a fault hits the backup's
uploads as before. A spared request is relayed with ``Connection: close`` so the next
request of the client comes on a new connection and is judged on its own.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Literal

Mode = Literal["pass", "fail", "hang"]

_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>injected by the fault proxy</Message></Error>"
)


def _read_head(conn: socket.socket) -> tuple[bytes, bytes] | None:
    """The request line and headers (up to the blank line), and whatever followed them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > 1 << 20:
            return None
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _closing(head: bytes) -> bytes:
    """The request head asking the server to close the connection after answering."""
    lines = [line for line in head[:-4].split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


class FaultProxy:
    """Start with ``with FaultProxy(upstream_port, ...) as proxy:``; ``proxy.url`` is its endpoint."""

    def __init__(
        self,
        upstream_port: int,
        mode: Mode = "pass",
        fail_first: int = 0,
        spare: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.mode: Mode = mode
        self.fail_first = fail_first
        self.spare = spare
        self.spared = 0  # relayed whatever the mode, not counted in requests
        self.requests = 0  # requests whose head was read (first request of each connection)
        self.failed = 0  # answered with 503
        self.hung = 0  # never answered
        self.passed = 0  # relayed upstream
        self._lock = threading.Lock()
        self._stop = threading.Event()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _decide(self) -> Mode:
        with self._lock:
            self.requests += 1
            if self.requests <= self.fail_first:
                self.failed += 1
                return "fail"
            if self.mode == "fail":
                self.failed += 1
            elif self.mode == "hang":
                self.hung += 1
            else:
                self.passed += 1
            return self.mode

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            got = _read_head(conn)
            if got is None:
                return
            head, rest = got
            if self.spare is not None and self.spare(head):
                with self._lock:
                    self.spared += 1
                self._relay(conn, _closing(head) + rest)
                return
            decision = self._decide()
            if decision == "pass":
                self._relay(conn, head + rest)
            elif decision == "fail":
                self._read_body(conn, head, rest)
                conn.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                    + f"Content-Length: {len(_SLOWDOWN)}\r\n".encode()
                    + b"Connection: close\r\n\r\n"
                    + _SLOWDOWN
                )
            else:
                while not self._stop.is_set():  # never answer; notice the client hanging up
                    ready, _, _ = select.select([conn], [], [], 0.1)
                    if ready and not conn.recv(65536):
                        return
        except OSError:
            return
        finally:
            conn.close()

    @staticmethod
    def _read_body(conn: socket.socket, head: bytes, rest: bytes) -> None:
        """Consume a request body the client is sending anyway, so it sees our answer, not a reset."""
        if (_header(head, b"expect") or b"").lower() == b"100-continue":
            return  # the client waits for us before sending the body: answer right away
        length = int(_header(head, b"content-length") or 0)
        remaining = length - len(rest)
        while remaining > 0:
            chunk = conn.recv(min(remaining, 65536))
            if not chunk:
                return
            remaining -= len(chunk)

    def _relay(self, conn: socket.socket, first: bytes) -> None:
        with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30) as up:
            up.sendall(first)
            pair = {conn: up, up: conn}
            while not self._stop.is_set():
                ready, _, _ = select.select(list(pair), [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
