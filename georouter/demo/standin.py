"""A stand-in cluster: a real HTTP server on loopback that answers as one cluster would.

``georouter demo`` runs one per configured cluster so the router has something
real to probe and route to, and the tests use the same class to take clusters
down (connection refused, or an unhealthy status) and bring them back.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], standin: StandIn) -> None:
        self.standin = standin
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self.lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client hanging up mid-request is routine for a cluster; stay quiet.
        pass

    def drop_connections(self) -> None:
        # A dead cluster also breaks the keep-alive connections it had.
        with self.lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        standin = self.server.standin
        length = int(self.headers.get("content-length") or 0)
        body_in = self.rfile.read(length) if length else b""
        standin.requests += 1
        if self.path.split("?")[0] == standin.health_path:
            # A slow health endpoint, as from an overloaded cluster (tests set it).
            standin.health_gate.wait(timeout=30)
            status = standin.health_status
            payload = {"cluster": standin.name, "status": status}
            if standin.load is not None:
                # The load a cluster reports for georouter's spill (README, "Load").
                payload["load"] = standin.load
        else:
            status = 200
            payload = {
                "cluster": standin.name,
                "method": self.command,
                "path": self.path,
                "body_bytes": len(body_in),
            }
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-cluster", standin.name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class StandIn:
    """One stand-in cluster on ``host``; ``port=0`` picks a free port once and keeps it."""

    def __init__(
        self, name: str, *, host: str = "127.0.0.1", port: int = 0, health_path: str = "/healthz"
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.health_path = health_path
        self.health_status = int(HTTPStatus.OK)
        # Cleared: health requests hang until it is set again (or 30 s pass).
        self.health_gate = threading.Event()
        self.health_gate.set()
        # Reported in the health answer's JSON as "load" (None: not reported).
        self.load: float | None = None
        self.requests = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> StandIn:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"standin:{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: new connections are refused, as from a dead cluster."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
