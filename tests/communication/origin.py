"""A real HTTP origin server on loopback for the HTTP function's tests (Dandelion's oracle routes).

``/get`` → ``ok get``; ``/get_large`` → 8192 x ``a``; ``/matrix`` → u64
``[2,1,2,3,4]``; ``POST /post`` → ``ok post``; ``/status/N`` → status N;
``/redirect?to=URL`` → 302 to URL; ``/short`` declares 100 bytes and sends 10;
``/big?n=N`` → N bytes. A :class:`Listener` is a bare socket that records
whether anything ever connected to it.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        if split.path == "/get":
            self._send(200, b"ok get", {"Content-Type": "text/plain"})
        elif split.path == "/get_large":
            self._send(200, b"a" * 8192)
        elif split.path == "/matrix":
            self._send(200, struct.pack("<5Q", 2, 1, 2, 3, 4))
        elif split.path.startswith("/status/"):
            self._send(int(split.path.rsplit("/", 1)[1]), b"status body")
        elif split.path == "/redirect":
            self._send(302, b"", {"Location": query["to"][0]})
        elif split.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
        elif split.path == "/big":
            self._send(200, b"b" * int(query["n"][0]))
        else:
            self._send(404, b"not found")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        received = self.rfile.read(length)
        if self.path == "/post":
            self._send(200, b"ok post", {"X-Received": str(len(received))})
        else:
            self._send(404, b"not found")


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that stop reading (size-limit tests) break the pipe on purpose


@contextmanager
def origin_server(host: str = "127.0.0.1") -> Iterator[str]:
    """Serve the routes above on ``host`` (a free port); yields ``http://host:port``."""
    server = _QuietServer((host, 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Listener:
    """A listening socket that remembers whether anyone connected (to prove nothing was sent)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind((host, 0))
        self.socket.listen(8)
        self.socket.setblocking(False)
        self.host = host
        self.port: int = self.socket.getsockname()[1]

    def connected(self) -> bool:
        """Whether a connection is waiting to be accepted (or was)."""
        try:
            connection, _ = self.socket.accept()
        except BlockingIOError:
            return False
        connection.close()
        return True

    def close(self) -> None:
        self.socket.close()
