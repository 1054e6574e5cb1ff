"""Serving the app with Hypercorn on a socket we bind ourselves.

Binding here (not in Hypercorn) means the address is known, and printed,
before the first request, even for port 0, and a bad ``--listen`` is reported
as such instead of as a traceback from deep inside the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from starlette.types import ASGIApp

from georouter.config import LimitsSettings
from georouter.config.values import host_port
from georouter.errors import ListenError
from georouter.http.common import Drain
from georouter.http.reload import ReloadRequests

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (all interfaces)."""
        try:
            return cls(*host_port(text))
        except ValueError as exc:
            raise ListenError(str(exc)) from None

    def bind(self, *, reuse_port: bool = False) -> socket.socket:
        """A listening socket. ``reuse_port``: other sockets may bind the same port
        (one per worker; Linux spreads connections evenly across them)."""
        if reuse_port:
            # SO_REUSEPORT would also let this edge share a port another edge (of the
            # same user) listens on, silently splitting its traffic and its sessions'
            # embedded Redis: prove the address free with a plain bind first.
            probe = ListenAddress(self.host, self.port)._bind(reuse_port=False)
            port = probe.getsockname()[1]
            probe.close()
            return ListenAddress(self.host, port)._bind(reuse_port=True)
        return self._bind(reuse_port=False)

    def _bind(self, *, reuse_port: bool) -> socket.socket:
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
    return ListenAddress(host, port)._bind(reuse_port=True)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _hypercorn_config(
    sock: socket.socket, limits: LimitsSettings, also: Sequence[socket.socket] = ()
) -> HypercornConfig:
    config = HypercornConfig()
    # Hypercorn takes ownership of the descriptors and closes them on shutdown.
    config.bind = [f"fd://{s.detach()}" for s in (sock, *also)]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # Hypercorn never times out a slow request by default (a slowloris door).
    config.read_timeout = 30
    # Hypercorn's idle timer runs from the connection (or the last response) until
    # a request's headers are complete, so it is the header deadline as well.
    config.keep_alive_timeout = limits.header_timeout_s
    config.graceful_timeout = 5
    config.include_server_header = False
    # Bytes buffered while headers arrive; the header limits proper are georouter's own.
    config.h11_max_incomplete_size = limits.header_bytes + 8192
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
    limits: LimitsSettings | None = None,
    drain: Drain | None = None,
    drain_s: float = 0.0,
    admin_sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` on ``sock`` (and ``admin_sock``) until ``stop`` is set; lifespan
    shutdown runs before return.

    With ``drain_s``, ``stop`` first starts a drain (``drain`` is what the app's
    ``/readyz`` reads): the edge keeps serving for ``drain_s``, or until ``stop``
    is set a second time, then finishes what is in flight and returns.
    """
    limits = limits or LimitsSettings()
    also = [] if admin_sock is None else [admin_sock]

    async def stopped() -> None:
        await stop.wait()
        if drain is None or drain_s <= 0:
            return
        stop.clear()
        drain.draining = True
        log.info("draining for %gs: /readyz answers 503, requests are still served", drain_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), drain_s)

    if kind is ServerKind.UVICORN:
        await _serve_uvicorn(app, [sock, *also], stopped, limits)
    else:
        config = _hypercorn_config(sock, limits, also)
        await hypercorn_serve(app, config, shutdown_trigger=stopped)  # type: ignore[arg-type]


def _header_deadline(
    base: type[asyncio.Protocol], timeout_s: float, max_bytes: int
) -> type[asyncio.Protocol]:
    """Uvicorn's HTTP protocol ``base`` with a deadline and a size cap on every
    request's headers.

    Uvicorn arms no timer until a request's headers are complete, so a client
    that trickles its headers (slowloris) held a connection for as long as it
    liked, and httptools buffers headers of any size until they are complete.
    Both of Uvicorn's protocols create ``self.cycle`` when a request's headers
    are complete, which is what ends the deadline and the count here.
    """

    class HeaderDeadline(base):  # type: ignore[valid-type,misc]
        _deadline: asyncio.TimerHandle | None = None
        _waiting_since_cycle: object = None
        _header_bytes = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            # Between requests: the last one answered and its body all received
            # (a body still arriving after an early answer, a 413, is not headers).
            between = cycle is None or (cycle.response_complete and not cycle.more_body)
            if self._deadline is None and between:
                self._arm()
            super().data_received(data)
            if self._deadline is None:
                return
            if self.cycle is not self._waiting_since_cycle:
                self._disarm()  # the headers are complete
                return
            # Still incomplete: one read (at most 256 KiB) is all that was buffered.
            self._header_bytes += len(data)
            if self._header_bytes > max_bytes and not self.transport.is_closing():
                self._disarm()
                self.transport.write(_HEADERS_TOO_LARGE)
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_bytes = 0
            self._waiting_since_cycle = self.cycle
            self._deadline = self.loop.call_later(timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


_TOO_LARGE_BODY = b'{"error":"headers_too_large","message":"the request headers are too large"}'
# Sent by the protocol itself: httptools would buffer the headers whole before
# the app, and georouter's own 431, could see them.
_HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)


async def _serve_uvicorn(
    app: ASGIApp,
    socks: list[socket.socket],
    stopped: Callable[[], Awaitable[None]],
    limits: LimitsSettings,
) -> None:
    import uvicorn  # noqa: PLC0415 - an optional extra
    from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: PLC0415

    base: type[asyncio.Protocol] = H11Protocol
    if importlib.util.find_spec("httptools") is not None:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415

        base = HttpToolsProtocol

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # georouter's own handlers (stop_on_signals) decide what a signal does:
            # Uvicorn's would exit at once, skipping the drain.
            yield

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
        http=_header_deadline(base, limits.header_timeout_s, limits.header_bytes + 8192),
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        # Headers arriving are buffered up to this (h11); the limits proper are georouter's.
        h11_max_incomplete_event_size=limits.header_bytes + 8192,
    )
    server = Server(config)

    async def stop_when_asked() -> None:
        await stopped()
        server.should_exit = True

    async with asyncio.TaskGroup() as tg:
        watcher = tg.create_task(stop_when_asked(), name="stop-watcher")
        try:
            await server.serve(sockets=socks)
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


def reload_on_hangup(requests: ReloadRequests) -> None:
    """SIGHUP asks for a configuration reload (it used to end the process, exit 129)."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, requests.ask)


def configure_logging(level: str = "info", *, brief: bool = False) -> None:
    fmt = "georouter: %(message)s" if brief else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt)
    # httpx logs every request at INFO: one line per health probe (about 190k a day
    # with eleven clusters). Probe results reach the log on state changes only.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
