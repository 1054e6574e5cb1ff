"""WebSockets on the data path (proxy mode): routed as HTTP requests are, then relayed.

A WebSocket is sticky by session like any request: its handshake carries the
session cookie, header or query parameter, and a new client is given the
router's cookie in the handshake's answer. Refusals (not ready, no cluster,
over budget, a cluster that refuses or cannot be reached) are HTTP answers with
a JSON body where the server offers the ``websocket.http.response`` extension,
and a close before the handshake completes (a 403 from the server) otherwise.
"""

from __future__ import annotations

import logging

import orjson
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from georouter.config import RouterMode
from georouter.errors import ApiError
from georouter.http.accesslog import note_decision
from georouter.http.common import Services
from georouter.http.dataplane import (
    decision_headers,
    forwarded_headers,
    reroute,
    route,
    target_url,
    upstream_failed,
)
from georouter.proxy.websocket import (
    Refused,
    Unreachable,
    WebSocketTarget,
    open_upstream,
    relay_messages,
    requested_subprotocols,
    upstream_handshake_headers,
    ws_url,
)

log = logging.getLogger(__name__)


async def refuse(scope: Scope, send: Send, status: int, body: dict[str, object]) -> None:
    """Answer a WebSocket handshake with an HTTP error instead of the upgrade."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    payload = orjson.dumps(body)
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": payload})


async def websocket_path(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    svc: Services = scope["state"]["services"]
    rt = svc.runtime
    if rt.config.router.mode is not RouterMode.PROXY:
        mode = rt.config.router.mode
        said = f"WebSockets are carried in proxy mode only; this edge is in {mode} mode"
        await refuse(scope, send, 400, {"error": "websocket_not_proxied", "message": said})
        return
    try:
        routed = await route(HTTPConnection(scope), svc, rt)
    except ApiError as exc:
        await refuse(scope, send, exc.status, exc.body)
        return
    settings = rt.config.proxy
    avoid: dict[str, str] = {}
    while True:
        decision = routed.decision
        cluster = decision.cluster
        if cluster is None:
            note_decision(scope, decision.reason, None, decision.session)
            await refuse(scope, send, 503, decision.as_json())
            return
        target = WebSocketTarget(
            ws_url(target_url(cluster.url, scope)),
            upstream_handshake_headers(forwarded_headers(scope, rt, cluster.url)),
            requested_subprotocols(scope["headers"]),
        )
        try:
            upstream = await open_upstream(
                target,
                open_timeout_s=settings.websocket_open_timeout_s,
                max_message_bytes=settings.websocket_max_message_bytes,
            )
        except Unreachable as exc:
            upstream_failed(svc, cluster.name, "connect")
            if len(avoid) < settings.retries:
                log.info("cluster %s: WebSocket failed (%s); trying the next", cluster.name, exc)
                avoid[cluster.name] = "connect failed from this edge"
                routed = await reroute(svc, rt, routed, avoid)
                continue
            note_decision(scope, decision.reason, cluster.name, decision.session)
            await refuse(
                scope,
                send,
                502,
                {
                    "error": "upstream_unreachable",
                    "message": f"cluster {cluster.name}: {exc}",
                    "cluster": cluster.name,
                },
            )
            return
        except Refused as exc:
            note_decision(scope, decision.reason, cluster.name, decision.session)
            await refuse(
                scope,
                send,
                exc.status,
                {
                    "error": "upstream_refused",
                    "message": f"cluster {cluster.name} refused the WebSocket: {exc}",
                    "cluster": cluster.name,
                },
            )
            return
        break
    note_decision(scope, decision.reason, cluster.name, decision.session)
    await relay_messages(upstream, receive, send, [*decision_headers(decision), *routed.cookies])
