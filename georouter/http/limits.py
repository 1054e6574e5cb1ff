"""Request limits enforced by georouter itself, so both servers answer the same way.

Hypercorn and Uvicorn disagree on what they refuse (Uvicorn accepted a 1 MiB
header and 10,000 headers; neither times out a slow body), so the limits of
``[limits]`` are checked here, before any handler runs: header bytes and
count (431), body bytes (413, as soon as a ``Content-Length`` says so, else
counted as the body streams in), a deadline on reading the whole request
(408), and a cap on requests in progress (503). Each refusal is a JSON body
with ``Connection: close``: a client that broke a limit gets no second try on
the same connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from georouter.config import LimitsSettings
from georouter.errors import ApiError
from georouter.http.common import Drain, send_json
from georouter.metrics import Metrics

log = logging.getLogger(__name__)

_CLOSE = {"connection": "close"}


@dataclass(frozen=True, slots=True)
class DataPathLimits:
    """Bodies of application requests (proxy mode): ``[proxy] max_body_bytes`` (0: no
    limit) and, instead of a deadline on the whole body, one on each wait for more."""

    api_prefix: str
    body_bytes: int
    idle_s: float

    def covers(self, path: str) -> bool:
        prefix = self.api_prefix
        return not (path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] in ("", "/"))


class Limits:
    """ASGI middleware: the ``[limits]`` table, for every HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        settings: LimitsSettings,
        metrics: Metrics,
        drain: Drain,
        data_path: DataPathLimits | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.drain = drain
        self.data_path = data_path
        self.in_flight = 0
        self._refused: Counter[tuple[str, ...]] = metrics.family(
            "georouter_requests_refused_total",
            "Requests refused by a [limits] rule, by rule.",
            ("limit",),
        ).values
        # Every rule's series from the start, so a first refusal is a rate, not a gap.
        for limit in (
            "header_count",
            "header_bytes",
            "body_bytes",
            "in_flight",
            "request_deadline",
        ):
            self._refused[(limit,)] += 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if len(headers) > settings.header_count:
            await self._refuse(
                send,
                431,
                "header_count",
                "too_many_headers",
                f"at most {settings.header_count} request headers",
            )
            return
        size = 0
        declared = -1
        chunked = False
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"content-length":
                declared = int(value) if value.isdigit() else -1
            elif name == b"transfer-encoding":
                chunked = True
        if size > settings.header_bytes:
            await self._refuse(
                send,
                431,
                "header_bytes",
                "headers_too_large",
                f"request headers are over {settings.header_bytes} bytes",
            )
            return
        body_bytes, idle_s = settings.body_bytes, 0.0
        if self.data_path is not None and self.data_path.covers(scope["path"]):
            body_bytes, idle_s = self.data_path.body_bytes, self.data_path.idle_s
        if body_bytes and declared > body_bytes:
            await self._refuse(
                send, 413, "body_bytes", "body_too_large", f"the body is over {body_bytes} bytes"
            )
            return
        if self.in_flight >= settings.max_in_flight:
            await self._refuse(
                send,
                503,
                "in_flight",
                "overloaded",
                f"this edge is serving {settings.max_in_flight} requests; retry shortly",
                retry_after=True,
            )
            return
        self.in_flight += 1
        try:
            # HTTP/2 (Hypercorn speaks h2c) may send a body with neither header.
            if declared > 0 or chunked or (declared < 0 and scope["http_version"] == "2"):
                receive = self._bounded(receive, body_bytes, idle_s)
            if self.drain.draining:
                send = _closing(send)
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _bounded(self, receive: Receive, limit: int, idle_s: float) -> Receive:
        """``receive`` that refuses a body over ``limit`` (0: none), or one that arrives
        too slowly: after the request deadline, or with ``idle_s``, a wait that long."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.request_deadline_s
        if idle_s:
            late = f"no more of the body came within {idle_s:g}s"
        else:
            late = f"the request was not received within {self.settings.request_deadline_s:g}s"
        seen = 0
        refused = self._refused

        async def bounded() -> Message:
            nonlocal seen
            try:
                async with asyncio.timeout_at(loop.time() + idle_s if idle_s else deadline):
                    message = await receive()
            except TimeoutError:
                refused[("request_deadline",)] += 1
                raise ApiError(408, "request_timeout", late, headers=_CLOSE) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if limit and seen > limit:
                    refused[("body_bytes",)] += 1
                    raise ApiError(
                        413, "body_too_large", f"the body is over {limit} bytes", headers=_CLOSE
                    )
            return message

        return bounded

    async def _refuse(
        self,
        send: Send,
        status: int,
        limit: str,
        error: str,
        message: str,
        *,
        retry_after: bool = False,
    ) -> None:
        self._refused[(limit,)] += 1
        headers = dict(_CLOSE)
        if retry_after:
            headers["retry-after"] = "1"
        await send_json(send, status, {"error": error, "message": message}, headers)


def _closing(send: Send) -> Send:
    """``send`` that ends the connection after the response (Envoy's HTTP/1 drain):
    a keep-alive client then reconnects, through the balancer, to another edge."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [*message.get("headers", []), (b"connection", b"close")],
            }
        await send(message)

    return closing
