"""One request carried to one cluster, and its answer carried back, streamed both ways.

Nothing here decides where a request goes (``http.dataplane`` asks the router):
this module opens the upstream exchange with the cluster's pooled
``httpx.AsyncClient``, says how it failed (and whether anything was sent, so
the caller knows whether another cluster may be tried), and relays the
response to the client chunk by chunk, so a body of any size passes through a
bounded buffer. A client that hangs up ends the upstream exchange at once:
ASGI servers do not fail ``send`` after a disconnect, so ``relay`` watches
``receive`` for ``http.disconnect`` while it streams.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import httpx
from starlette.types import Message, Receive, Send

from georouter.config import ProxySettings
from georouter.proxy.headers import Headers

log = logging.getLogger(__name__)

T = TypeVar("T")

# Methods whose repetition has the effect of doing them once (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class ClientGone(Exception):
    """The client hung up before its request was read."""


class Failure(StrEnum):
    CONNECT = "connect"
    TIMEOUT = "timeout"
    PROTOCOL = "protocol"
    POOL = "pool"


class UpstreamFailed(Exception):
    """The cluster could not be asked, or gave no response."""

    def __init__(self, kind: Failure, detail: str, *, sent: bool) -> None:
        super().__init__(detail)
        self.kind = kind
        # Whether any byte of the request body was read from the client for it.
        self.sent = sent


def proxy_transport(
    settings: ProxySettings, *, share: int = 1, tls: ssl.SSLContext | None = None
) -> httpx.AsyncHTTPTransport:
    """A pooled, keep-alive connection to a cluster with ``1/share`` of the configured
    limits (rounded down, so ``share`` of them never exceed the limits).

    A transport, not a client: the client's layers (redirects, auth, a cookie jar)
    are all things a proxy must not do, and cost a sixth of a proxied request's CPU.
    """
    return httpx.AsyncHTTPTransport(
        limits=httpx.Limits(
            max_connections=settings.max_connections // share,
            max_keepalive_connections=settings.max_keepalive // share,
        ),
        # Loading the CA bundle costs tens of ms: the pools of an edge share one.
        verify=tls if tls is not None else True,
        # HTTP_PROXY and the like are for this host's own outbound traffic.
        trust_env=False,
    )


# Pools per cluster, taken in turn.
POOL_SHARDS = 8


class UpstreamPools:
    """Each cluster's connections, in a few small pools opened on its first request.

    Small pools rather than one: httpcore looks at every connection of a pool on
    each request (a poll() of each idle socket, encode/httpcore#928), so one
    pool's cost per request grows with its connections: measured here, 1.1 ms of
    CPU per request through one pool at 1 request in flight, 3.2 ms at 32; 1.1 ms
    at 32 when spread over 16 pools. Taken in turn, ``POOL_SHARDS`` pools each hold
    about 1/POOL_SHARDS of a cluster's connections and keep-alive limit. Limits are
    per cluster, as Envoy's circuit breakers are. A cluster removed by a reload
    keeps its (idle) pools until the edge stops.
    """

    def __init__(self, settings: ProxySettings) -> None:
        self._settings = settings
        self._tls = httpx.create_ssl_context()
        self._pools: dict[str, Iterator[httpx.AsyncHTTPTransport]] = {}
        self._opened: list[httpx.AsyncHTTPTransport] = []

    def for_cluster(self, name: str) -> httpx.AsyncHTTPTransport:
        turn = self._pools.get(name)
        if turn is None:
            # Never more pools than connections allowed: each pool needs one.
            n = min(POOL_SHARDS, self._settings.max_connections)
            shards = [proxy_transport(self._settings, share=n, tls=self._tls) for _ in range(n)]
            self._opened += shards
            turn = self._pools[name] = itertools.cycle(shards)
        return next(turn)

    async def __aenter__(self) -> UpstreamPools:
        return self

    async def __aexit__(self, *exc: object) -> None:
        opened, self._opened, self._pools = self._opened, [], {}
        for transport in opened:
            await transport.aclose()


def timeouts(settings: ProxySettings) -> httpx.Timeout:
    return httpx.Timeout(
        connect=settings.connect_timeout_s,
        read=settings.read_timeout_s,
        write=settings.write_timeout_s,
        pool=settings.pool_timeout_s,
    )


class RequestBody:
    """The client's request body as an upstream request reads it, replayable if small.

    The first ``keep`` bytes are kept, so if the whole body fits, a second
    cluster (a retry, a replay hint) can be sent the same body. Its size is
    bounded by ``http.limits``, which wraps ``receive``.
    """

    def __init__(self, receive: Receive, first: Message, *, keep: int) -> None:
        self._receive = receive
        self._first: Message | None = first
        self._keep = keep
        self.kept: list[bytes] = []
        self.size = 0
        self.started = False
        # The first message held the whole body (a GET's empty one, most small POSTs),
        # so ``receive`` is free from the start to watch for the client leaving.
        self.complete = not first.get("more_body", False)
        self.empty = self.complete and not first.get("body")

    @property
    def replayable(self) -> bool:
        """Whether the whole body is at hand to be sent again."""
        return not self.started or (self.complete and self.size <= self._keep)

    def stream(self) -> AsyncIterator[bytes]:
        if self.started:
            return self._again()
        return self._read()

    async def _again(self) -> AsyncIterator[bytes]:
        for chunk in self.kept:
            yield chunk

    async def _read(self) -> AsyncIterator[bytes]:
        self.started = True
        message = self._first
        self._first = None
        while True:
            if message is None:
                message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            message = None
            if chunk:
                self.size += len(chunk)
                if self.size <= self._keep:
                    self.kept.append(chunk)
                yield chunk
            if not more:
                self.complete = True
                return


async def first_message(receive: Receive) -> Message:
    """The first body message, which says whether there is a body at all."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    return message


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    method: str
    headers: Headers


async def open_exchange(
    pool: httpx.AsyncHTTPTransport, target: Target, body: RequestBody, limits: httpx.Timeout
) -> httpx.Response:
    """Send the request and wait for the cluster's response head (its body is streamed)."""
    content = None if body.empty else body.stream()
    request = httpx.Request(
        target.method,
        target.url,
        headers=target.headers,
        content=content,
        extensions={"timeout": limits.as_dict()},
    )
    try:
        response = await pool.handle_async_request(request)
    except httpx.PoolTimeout as exc:
        raise UpstreamFailed(Failure.POOL, "no free connection", sent=body.started) from exc
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise UpstreamFailed(Failure.CONNECT, _said(exc), sent=False) from exc
    except httpx.TimeoutException as exc:
        raise UpstreamFailed(Failure.TIMEOUT, _said(exc), sent=body.started) from exc
    except httpx.TransportError as exc:
        raise UpstreamFailed(Failure.PROTOCOL, _said(exc), sent=body.started) from exc
    response.request = request
    return response


def _said(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


async def unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T:
    """``work``'s result, or ``ClientGone`` as soon as the client hangs up (``work``
    is then cancelled, which closes its upstream connection)."""
    outcome: list[T | BaseException] = []

    async def run() -> None:
        try:
            outcome.append(await work)
        except Exception as exc:  # noqa: BLE001 (raised again below, outside the task group)
            outcome.append(exc)

    async with asyncio.TaskGroup() as tg:
        job = tg.create_task(run())
        gone = tg.create_task(_disconnected(receive))
        job.add_done_callback(lambda _: gone.cancel())
        gone.add_done_callback(lambda _: job.cancel())
    if not outcome:
        raise ClientGone
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def relay(
    response: httpx.Response,
    send: Send,
    receive: Receive,
    headers: Headers,
    *,
    watch_client: bool,
) -> bool:
    """Stream ``response`` to the client with ``headers``; False if it ended early.

    The response is always closed, so its connection goes back to the pool or
    (unfinished) is dropped. ``watch_client``: the request body has been read,
    so ``receive`` is free to watch for the client leaving.
    """
    try:
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        if not watch_client:
            return await _pump(response, send)
        async with asyncio.TaskGroup() as tg:
            pump = tg.create_task(_pump(response, send))
            gone = tg.create_task(_disconnected(receive))
            # Whichever ends first ends the other.
            pump.add_done_callback(lambda _: gone.cancel())
            gone.add_done_callback(lambda _: pump.cancel())
        if not pump.cancelled():
            return pump.result()
        log.debug("client left during the response from %s", response.request.url.host)
        return False
    finally:
        await response.aclose()


async def _pump(response: httpx.Response, send: Send) -> bool:
    try:
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except httpx.TransportError as exc:
        # The head is sent: all that is left is to end the client's connection.
        log.warning(
            "cluster at %s broke off its response: %s", response.request.url.host, _said(exc)
        )
        return False
    await send({"type": "http.response.body", "body": b""})
    return True
