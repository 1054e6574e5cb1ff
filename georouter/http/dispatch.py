"""Which handler an ASGI request goes to: the router's endpoints under the API prefix
(or on the admin listener), the data path, and the routing question's fast path."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from georouter.errors import ApiError
from georouter.http import dataplane, wsproxy
from georouter.http import routing as api
from georouter.http.common import INTERNAL_ERROR, send_json

log = logging.getLogger(__name__)


class ByPrefix:
    """Proxy and redirect modes: the router's endpoints under ``prefix``, the rest
    to the data path, so no router path shadows an application's."""

    def __init__(
        self, prefix: str, api: ASGIApp, data: ASGIApp, *, admin_port: int | None = None
    ) -> None:
        self.prefix = prefix
        self.api = api
        self.data = data
        self.admin_port = admin_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.api(scope, receive, send)
            return
        if self.admin_port is not None:
            # An admin listener of its own (Envoy's admin port): no path is shared.
            server = scope.get("server")
            on_admin = server is not None and server[1] == self.admin_port
            await (self.api if on_admin else self.data)(scope, receive, send)
            return
        path: str = scope["path"]
        prefix = self.prefix
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            inner = path[len(prefix) :] or "/"
            scope = {**scope, "path": inner, "root_path": scope.get("root_path", "") + prefix}
            raw: bytes | None = scope.get("raw_path")
            if raw is not None:
                scope["raw_path"] = raw[len(prefix) :] or b"/"
            await self.api(scope, receive, send)
            return
        await self.data(scope, receive, send)


class DataPath:
    """The application's requests, with the same JSON error answers as the API's."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            try:
                await wsproxy.websocket_path(scope, receive, send)
            except Exception as exc:
                log.error("unhandled error on WebSocket %s", scope["path"], exc_info=exc)
            return
        try:
            await dataplane.data_path(scope, receive, send)
        except ApiError as exc:
            await send_json(send, exc.status, exc.body, exc.headers)
        except Exception as exc:
            log.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=exc)
            await send_json(send, 500, INTERNAL_ERROR)


class FastRoute:
    """``GET /v1/route`` straight to its handler; everything else to Starlette.

    The routing question is nearly all of an edge's traffic, and Starlette's
    middleware and route matching cost as much as the decision itself, so this
    one path skips them, with the same JSON error answers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/route" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        try:
            await api.route_one(scope, receive, send)
        except ApiError as exc:
            await send_json(send, exc.status, exc.body, exc.headers)
        except Exception as exc:
            log.error("unhandled error on GET /v1/route", exc_info=exc)
            await send_json(send, 500, INTERNAL_ERROR)
