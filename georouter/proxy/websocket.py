"""A WebSocket carried to its cluster: the ASGI websocket scope on one side, a
``websockets`` client connection to the cluster's ``ws://``/``wss://`` URL on the
other, messages relayed both ways and close codes passed through.

The cluster's handshake comes first: only once it has accepted is the client
accepted (with the subprotocol the cluster chose), so a cluster that cannot
be reached can still be swapped for the next one, and one that refuses is a
refusal the client sees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import Receive, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from georouter.proxy.headers import Headers, end_to_end

log = logging.getLogger(__name__)

# The handshake's own headers: the client library makes its own for the cluster.
_HANDSHAKE = frozenset(
    {
        b"host",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"content-length",
    }
)
# Codes a close frame may not carry (RFC 6455 §7.4.1): what they mean is said otherwise.
_NO_STATUS, _ABNORMAL, _TLS = 1005, 1006, 1015
_INTERNAL_ERROR = 1011


class Unreachable(Exception):
    """The cluster could not be reached, or did not complete its handshake in time."""


class Refused(Exception):
    """The cluster answered the handshake with an HTTP status other than 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
class WebSocketTarget:
    url: str
    headers: Headers
    subprotocols: Sequence[str]


def ws_url(http_url: str) -> str:
    """``http://`` -> ``ws://``, ``https://`` -> ``wss://``."""
    scheme, sep, rest = http_url.partition("://")
    return ("wss" if scheme == "https" else "ws") + sep + rest


def upstream_handshake_headers(headers: Headers) -> Headers:
    return end_to_end(headers, _HANDSHAKE)


def requested_subprotocols(headers: Headers) -> list[str]:
    out: list[str] = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            out += [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
    return out


async def open_upstream(
    target: WebSocketTarget, *, open_timeout_s: float, max_message_bytes: int
) -> ClientConnection:
    try:
        return await connect(
            target.url,
            additional_headers=[
                (n.decode("latin-1"), v.decode("latin-1")) for n, v in target.headers
            ],
            subprotocols=[Subprotocol(p) for p in target.subprotocols] or None,
            # The client's own User-Agent is among the headers passed on.
            user_agent_header=None,
            # Proxy settings of the environment are for this host's own traffic.
            proxy=None,
            # Messages are relayed decoded; the client's compression is its server's.
            compression=None,
            open_timeout=open_timeout_s,
            max_size=max_message_bytes,
        )
    except InvalidStatus as exc:
        raise Refused(exc.response.status_code) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise Unreachable(str(exc) or type(exc).__name__) from exc


def _closing_code(code: int | None) -> int:
    if code is None or code in (_ABNORMAL, _TLS):
        return _INTERNAL_ERROR
    return 1000 if code == _NO_STATUS else code


async def relay_messages(
    upstream: ClientConnection, receive: Receive, send: Send, accept_headers: Headers
) -> None:
    """Accept the client and relay until either side closes; the other is then closed
    with the same code."""
    await send(
        {"type": "websocket.accept", "subprotocol": upstream.subprotocol, "headers": accept_headers}
    )

    async def from_client() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                code = message.get("code") or 1000
                await upstream.close(
                    code=1000 if code in (_NO_STATUS, _ABNORMAL) else code,
                    reason=message.get("reason") or "",
                )
                return
            if message.get("text") is not None:
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send(message["bytes"])

    async def from_cluster() -> None:
        try:
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        await send(
            {
                "type": "websocket.close",
                "code": _closing_code(upstream.close_code),
                "reason": upstream.close_reason or "",
            }
        )

    try:
        async with asyncio.TaskGroup() as tg:
            client_side = tg.create_task(from_client())
            cluster_side = tg.create_task(from_cluster())
            client_side.add_done_callback(lambda _: cluster_side.cancel())
            cluster_side.add_done_callback(lambda _: client_side.cancel())
    finally:
        await upstream.close()
