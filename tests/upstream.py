"""An application cluster for the data-path tests: a real HTTP/1.1 server on loopback.

It answers what a proxied request looked like when it arrived (method, raw
target, headers, body length and SHA-256), streams bodies of any size without
holding them, and misbehaves on request: answers slowly, never, resets the
connection, or breaks off a body. It records what it saw, including a client
(the edge) that went away in the middle of a response.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# 64 KiB of a fixed pattern: a body of any length is this, repeated and cut.
PATTERN = bytes(range(256)) * 256


def pattern_bytes(length: int) -> Iterator[bytes]:
    """``length`` bytes of the pattern, in 64 KiB pieces (what ``/bytes/N`` sends)."""
    left = length
    while left > 0:
        piece = PATTERN[: min(left, len(PATTERN))]
        left -= len(piece)
        yield piece


def pattern_sha256(length: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern_bytes(length):
        digest.update(piece)
    return digest.hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # A real server's backlog: the standard library's 5 drops the connections of a
    # burst, and the edge's connects then wait for SYN retransmissions.
    request_queue_size = 1024

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _body(self) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                line = self.rfile.readline()
                chunk = int(line.split(b";")[0].strip() or b"0", 16)
                if chunk == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = chunk
                while left:
                    piece = self.rfile.read(min(left, 1 << 16))
                    if not piece:
                        raise ConnectionError("body cut short")
                    digest.update(piece)
                    size += len(piece)
                    left -= len(piece)
                self.rfile.readline()
        else:
            left = int(self.headers.get("content-length") or 0)
            while left:
                piece = self.rfile.read(min(left, 1 << 16))
                if not piece:
                    raise ConnectionError("body cut short")
                digest.update(piece)
                size += len(piece)
                left -= len(piece)
        return size, digest.hexdigest()

    def _handle(self) -> None:
        up = self.server.upstream
        size, sha = self._body()
        with up.lock:
            up.requests += 1
            up.seen.append({"method": self.command, "target": self.path})
        if up.mode == "reset":
            # Read the request, then drop the connection without an answer.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if up.mode == "hang":
            # No answer, until the edge gives up on it and closes the connection.
            self.connection.settimeout(0.05)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not up.stopping.is_set():
                try:
                    if self.connection.recv(1) == b"":
                        up.abort_seen.set()
                        break
                except TimeoutError:
                    continue
                except OSError:
                    up.abort_seen.set()
                    break
            self.close_connection = True
            return
        path = self.path.split("?")[0]
        if path.startswith("/bytes/"):
            self._send_bytes(int(path.removeprefix("/bytes/")), chunked="chunked" in self.path)
            return
        if path == "/slow":
            self._send_slowly()
            return
        if path == "/break":
            self.send_response(200)
            self.send_header("content-length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        status = int(path.removeprefix("/status/")) if path.startswith("/status/") else 200
        if up.mode == "error":
            status = 503
        body = json.dumps(
            {
                "cluster": up.name,
                "method": self.command,
                "target": self.path,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "body_bytes": size,
                "body_sha256": sha,
            }
        ).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-app", "kept")
        self.send_header("set-cookie", f"app={up.name}; Path=/")
        for name, value in up.extra_headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_bytes(self, length: int, *, chunked: bool) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        if chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(length))
        self.end_headers()
        for piece in pattern_bytes(length):
            if chunked:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                self.wfile.write(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _send_slowly(self) -> None:
        up = self.server.upstream
        self.send_response(200)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            # Until the edge goes away (or 30 s): a response nobody is reading.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not up.stopping.is_set():
                self.wfile.write(b"400\r\n" + b"s" * 1024 + b"\r\n")
                self.wfile.flush()
                up.stopping.wait(0.05)
        except OSError:
            with up.lock:
                up.aborted += 1
            up.abort_seen.set()
            self.close_connection = True


class Upstream:
    """One application cluster; ``mode`` is "ok", "reset", "hang" or "error" (503)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode = "ok"
        self.extra_headers: list[tuple[str, str]] = []
        self.requests = 0
        self.aborted = 0
        self.seen: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.abort_seen = threading.Event()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Upstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()


for _method in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
    setattr(_Handler, f"do_{_method}", _Handler._handle)
