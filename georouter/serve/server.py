"""Serving the app with Hypercorn on a socket we bind ourselves.

Binding here (not in Hypercorn) means the address is known, and printed,
before the first request, even for port 0, and a bad ``--listen`` is reported
as such instead of as a traceback from deep inside the server.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from starlette.types import ASGIApp

from georouter.errors import ListenError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (all interfaces)."""
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ListenError(f"expected HOST:PORT, not {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        host = host or "0.0.0.0"
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ListenError(f"{host!r} is not an IP address") from None
        if not (port_text.isascii() and port_text.isdigit() and int(port_text) <= 65535):
            raise ListenError(f"port must be 0..65535, not {port_text!r}")
        return cls(host, int(port_text))

    def bind(self, *, reuse_port: bool = False) -> socket.socket:
        """A listening socket. ``reuse_port``: other sockets may bind the same port
        (one per worker; Linux spreads connections evenly across them)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(1024)
        except OSError as exc:
            sock.close()
            raise ListenError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc
        sock.setblocking(False)
        return sock


def sibling(sock: socket.socket) -> socket.socket:
    """Another listening socket on ``sock``'s address (which must have SO_REUSEPORT)."""
    host, port = sock.getsockname()[:2]
    return ListenAddress(host, port).bind(reuse_port=True)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _hypercorn_config(sock: socket.socket) -> HypercornConfig:
    config = HypercornConfig()
    # Hypercorn takes ownership of the descriptor and closes it on shutdown.
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # Hypercorn never times out a slow request by default (a slowloris door).
    config.read_timeout = 30
    config.keep_alive_timeout = 5
    config.graceful_timeout = 5
    config.include_server_header = False
    return config


class ServerKind(StrEnum):
    """The ASGI server: Hypercorn (the default), or Uvicorn (the ``uvicorn`` extra)."""

    HYPERCORN = "hypercorn"
    UVICORN = "uvicorn"


async def serve(
    app: ASGIApp,
    sock: socket.socket,
    stop: asyncio.Event,
    *,
    kind: ServerKind = ServerKind.HYPERCORN,
) -> None:
    """Serve ``app`` on ``sock`` until ``stop`` is set; lifespan shutdown runs before return."""
    if kind is ServerKind.UVICORN:
        await _serve_uvicorn(app, sock, stop)
    else:
        await hypercorn_serve(app, _hypercorn_config(sock), shutdown_trigger=stop.wait)  # type: ignore[arg-type]


async def _serve_uvicorn(app: ASGIApp, sock: socket.socket, stop: asyncio.Event) -> None:
    import uvicorn  # noqa: PLC0415 - an optional extra

    config = uvicorn.Config(
        app,
        lifespan="on",
        # georouter resolves client addresses itself (see clientip); uvicorn's own
        # proxy-header handling would trust any peer's headers.
        proxy_headers=False,
        forwarded_allow_ips="",
        server_header=False,
        access_log=False,
        log_level="warning",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)

    async def stop_when_asked() -> None:
        await stop.wait()
        server.should_exit = True

    async with asyncio.TaskGroup() as tg:
        watcher = tg.create_task(stop_when_asked(), name="stop-watcher")
        try:
            # Uvicorn catches SIGINT/SIGTERM itself while serving, and re-raises them on
            # the way out, where stop_on_signals' handlers see them.
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the ``uvicorn`` extra), else asyncio's."""
    if importlib.util.find_spec("uvloop") is None:
        return None
    import uvloop  # noqa: PLC0415 - optional

    return uvloop.new_event_loop


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop`` (a graceful shutdown) instead of raising."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def configure_logging(level: str = "info", *, brief: bool = False) -> None:
    fmt = "georouter: %(message)s" if brief else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt)
