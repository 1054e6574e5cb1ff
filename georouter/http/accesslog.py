"""One access-log line per request, on standard output: JSON, or text for a terminal.

The outermost layer, so requests the limits refuse are logged too. A line has
the time, the peer (the TCP connection) and the client address the edge
resolved through its trusted proxies (both, as nginx logs
``$realip_remote_addr``), method, path, status, duration, the decision's
reason and cluster, a hash of the session id (never the id: it is a bearer
credential), whether the decision was made without Redis, and a request id,
taken from ``X-Request-Id`` or made, and sent back in the response.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TextIO

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from georouter.core.decision import SessionView

# What a handler leaves in the scope for the log: (reason, cluster, session id, degraded).
DECISION_KEY = "georouter.decision"
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")


class AccessLogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"
    OFF = "off"

    @classmethod
    def default(cls, stream: TextIO) -> AccessLogFormat:
        """JSON for a log collector, text for a person at a terminal."""
        return cls.TEXT if stream.isatty() else cls.JSON


def session_hash(session_id: str) -> str:
    """A short stable hash of a session id: lines of one session can be found
    together, and the log does not hand out the id itself."""
    return hashlib.blake2s(session_id.encode(), digest_size=8).hexdigest()


def note_decision(
    scope: Scope, reason: str, cluster: str | None, session: SessionView | None
) -> None:
    """What the access log says about the decision this request got."""
    scope[DECISION_KEY] = (
        reason,
        cluster,
        None if session is None else session.id,
        False if session is None else session.degraded,
    )


class AccessLog:
    """ASGI middleware writing one line per HTTP request to ``stream``."""

    def __init__(
        self,
        app: ASGIApp,
        fmt: AccessLogFormat,
        client_of: Callable[[Scope], str | None],
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.fmt = fmt
        self._client_of = client_of
        stream = stream or sys.stdout
        stream.flush()
        # One write(2) per line, unbuffered: a line is out as soon as its request
        # ends, without a flush of a text buffer (half the cost of the line).
        self._fd = stream.fileno()
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _REQUEST_ID.fullmatch(value):
                    request_id = value
                break
        if request_id is None:
            request_id = secrets.token_hex(8).encode()
        status = 0

        async def logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", request_id)],
                }
            await send(message)

        try:
            await self.app(scope, receive, logged)
        finally:
            self._write(scope, status, time.perf_counter() - started, request_id.decode())

    def _write(self, scope: Scope, status: int, duration_s: float, request_id: str) -> None:
        reason, cluster, session_id, degraded = scope.get(DECISION_KEY, (None, None, None, False))
        peer = scope.get("client")
        record = {
            "time": round(self._clock(), 3),
            "peer": peer[0] if peer else None,
            "client_ip": self._client_of(scope),
            "method": scope["method"],
            "path": scope["path"],
            "status": status,  # 0: the client left before an answer
            "duration_ms": round(duration_s * 1000, 3),
            "reason": reason,
            "cluster": cluster,
            "session": None if session_id is None else session_hash(session_id),
            "degraded": degraded,
            "request_id": request_id,
        }
        if self.fmt is AccessLogFormat.JSON:
            data = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        else:
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record["time"]))
            line = (
                f'{when} {record["peer"]} {record["client_ip"]} "{record["method"]}'
                f' {record["path"]}" {status} {record["duration_ms"]}ms'
                f" {reason or '-'} {cluster or '-'} session={record['session'] or '-'}"
                f"{' degraded' if degraded else ''} id={request_id}\n"
            )
            data = line.encode("utf-8", "replace")
        # A closed or full stdout must not fail the request it describes.
        with contextlib.suppress(OSError):
            os.write(self._fd, data)
