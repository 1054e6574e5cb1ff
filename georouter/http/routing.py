"""The routing API: ``GET /v1/route`` (the hot path) and ``POST /v1/route`` (a batch)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from georouter.config import SessionSource
from georouter.core.clientip import IPAddress, parse_address
from georouter.core.decision import Decision
from georouter.core.ratelimit import client_key
from georouter.core.tenants import TENANT_ID_RULE, valid_tenant
from georouter.errors import ApiError, NewSessionRefused
from georouter.http.accesslog import note_decision
from georouter.http.common import (
    JSON,
    Services,
    client_ip,
    flag,
    query_of,
    send_json,
    services,
)
from georouter.metrics import Family, Histogram, Metrics
from georouter.runtime import Runtime
from georouter.sessions.ids import valid_id

log = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_BODY_BYTES = 1 << 20
_ID_RULE = "1-128 characters of A-Z a-z 0-9 . _ ~ + / = : -"


def _address(raw: str, *, parameter: str | None = None, field: str | None = None) -> IPAddress:
    addr = parse_address(raw)
    if addr is not None:
        return addr
    message = f"{parameter or field} must be an IPv4 or IPv6 address, not {raw[:64]!r}"
    if parameter is not None:
        raise ApiError(400, "invalid_parameter", message, parameter=parameter)
    raise ApiError(400, "invalid_body", message, field=field)


def accepted_id(raw: str, source: SessionSource, svc: Services, rt: Runtime) -> str | None:
    """The session id ``raw`` names from ``source``, or None if it is not acceptable.

    With ``GEOROUTER_SESSION_KEYS`` set, an id must carry our signature unless
    the operator lists its source in ``[sessions] unsigned_sources``: an unsigned
    id from anywhere would let any client mint Redis keys.
    """
    if svc.signer is None or source in rt.config.sessions.unsigned_sources:
        return raw if valid_id(raw) else None
    return svc.signer.verify(raw)


def _id_rule(svc: Services, rt: Runtime, source: SessionSource) -> str:
    if svc.signer is None or source in rt.config.sessions.unsigned_sources:
        return _ID_RULE
    return "signed by this edge's GEOROUTER_SESSION_KEYS (<id>.<signature>)"


def session_of(request: Request, svc: Services, rt: Runtime, query: dict[str, str]) -> str | None:
    """The session id: ``session=``, else the session header, else the session cookie.

    A malformed or unsigned id that the caller sent on purpose (query or header)
    is a 400. A cookie that fails its check is ignored, and so creates no Redis key.
    """
    settings = rt.config.sessions
    raw = query.get("session")
    if raw is not None:
        found = accepted_id(raw, SessionSource.QUERY, svc, rt)
        if found is None:
            rule = _id_rule(svc, rt, SessionSource.QUERY)
            raise ApiError(400, "invalid_parameter", f"session must be {rule}", parameter="session")
        return found
    header_name = settings.header.encode("latin-1")
    header: str | None = None
    cookie_header: str | None = None
    # One pass over the raw headers: most requests carry neither, and building
    # Starlette's Headers and cookie dict for nothing costs more than the scan.
    for name, value in request.scope["headers"]:
        if name == header_name and header is None:
            header = value.decode("latin-1")
        elif name == b"cookie":
            cookie_header = value.decode("latin-1")
    if header is not None:
        found = accepted_id(header, SessionSource.HEADER, svc, rt)
        if found is None:
            rule = _id_rule(svc, rt, SessionSource.HEADER)
            raise ApiError(
                400, "invalid_header", f"{settings.header} must be {rule}", header=settings.header
            )
        return found
    if cookie_header is None:
        return None
    raw = request.cookies.get(settings.cookie)
    if raw is None:
        return None
    return accepted_id(raw, SessionSource.COOKIE, svc, rt)


def tenant_of(request: HTTPConnection, rt: Runtime, asked: str | None = None) -> str | None:
    """The tenant the request names: ``asked`` (the routing API's ``tenant=``), else
    its ``[tenants] header``, else its cookie.

    A malformed id asked for or in the header was sent on purpose: a 400. One in a
    cookie may be anyone's old cookie: ignored, so the request is routed by geography.
    """
    if asked is not None:
        if not valid_tenant(asked):
            message = f"tenant must be {TENANT_ID_RULE}"
            raise ApiError(400, "invalid_parameter", message, parameter="tenant")
        return asked
    settings = rt.config.tenants
    if settings.header is not None:
        raw = request.headers.get(settings.header)
        if raw is not None:
            if not valid_tenant(raw):
                message = f"{settings.header} must be a tenant id: {TENANT_ID_RULE}"
                raise ApiError(400, "invalid_header", message, header=settings.header)
            return raw
    if settings.cookie is not None:
        raw = request.cookies.get(settings.cookie)
        if raw is not None and valid_tenant(raw):
            return raw
    return None


def client_disconnects(metrics: Metrics) -> Family:
    """Requests whose client left mid-body (created on first use)."""
    return metrics.family(
        "georouter_client_disconnects_total",
        "Requests whose client hung up before its body was read.",
    )


def decision_latency(metrics: Metrics) -> Histogram:
    """How long the routing handlers' decisions take (created on first use)."""
    return metrics.histogram(
        "georouter_decision_duration_seconds",
        "Time to make a routing decision: locate the client, rank, resolve its session.",
    )


async def route_with_budget(
    svc: Services,
    rt: Runtime,
    request: HTTPConnection,
    client: IPAddress | None,
    session_id: str | None,
    *,
    client_is_peer: bool,
    tenant: str | None = None,
) -> Decision:
    """``router.route`` within the new-session budget (``_within_budget``), timed:
    every decision a handler makes is one observation of its latency."""
    started = time.perf_counter()
    decision = await _within_budget(
        svc, rt, request, client, session_id, client_is_peer=client_is_peer, tenant=tenant
    )
    decision_latency(svc.metrics).observe(time.perf_counter() - started)
    return decision


async def _within_budget(
    svc: Services,
    rt: Runtime,
    request: HTTPConnection,
    client: IPAddress | None,
    session_id: str | None,
    *,
    client_is_peer: bool,
    tenant: str | None = None,
) -> Decision:
    """``router.route``, within the new-session budget of the address that asks.

    The budget is the asking peer's (as resolved through trusted proxies), not
    the ``ip`` it asks about, which it chooses. It is looked at only when the
    near cache cannot answer, and a token is kept only when a session was
    pinned, so a client's returning sessions never use it up.
    """
    svc.recent_clients.append(client)
    budget = svc.new_sessions
    if session_id is None or svc.sessions is None or not budget.enabled:
        return await svc.router.route(client, session_id, rt, tenant=tenant)
    key = ""
    took = False

    def may_create() -> bool:
        # The token is taken before the session is pinned, so concurrent requests
        # cannot all see the same one; one that pinned nothing gets it back.
        nonlocal key, took
        key = client_key(client if client_is_peer else client_ip(request, rt.trust))
        took = budget.take(key, svc.monotonic())
        return took

    try:
        decision = await svc.router.route(
            client, session_id, rt, may_create=may_create, tenant=tenant
        )
    except NewSessionRefused:
        retry = max(1, math.ceil(budget.retry_after_s(key, svc.monotonic())))
        raise ApiError(
            429,
            "too_many_new_sessions",
            f"this address may start at most {budget.rate_per_s:g} new sessions a second"
            f" (bursts of {budget.burst}); retry in {retry}s",
            headers={"retry-after": str(retry)},
        ) from None
    except BaseException:
        if took:
            budget.refund(key)
        raise
    if took and not (decision.session is not None and decision.session.new):
        budget.refund(key)
    return decision


def _require_ready(svc: Services) -> None:
    if not svc.health.ready:
        raise ApiError(
            503, "not_ready", "the first round of health checks has not finished; retry shortly"
        )


def _require_sessions(svc: Services, session_id: str | None) -> None:
    if session_id is not None and svc.sessions is None:
        raise ApiError(400, "sessions_disabled", "sessions are not enabled on this edge")


async def route_one(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /v1/route``: the hot path, a plain ASGI app (see ``app.FastRoute``).

    Errors are raised as ``ApiError``; the caller answers them as JSON.
    """
    request = Request(scope, receive)
    svc = services(request)
    rt = svc.runtime
    query = query_of(request)
    explain = flag(query, "explain")
    raw_ip = query.get("ip")
    client = (
        _address(raw_ip, parameter="ip") if raw_ip is not None else client_ip(request, rt.trust)
    )
    session_id = session_of(request, svc, rt, query)
    if "session" in query:
        _require_sessions(svc, session_id)
    tenant = tenant_of(request, rt, query.get("tenant"))
    _require_ready(svc)
    decision = await route_with_budget(
        svc, rt, request, client, session_id, client_is_peer=raw_ip is None, tenant=tenant
    )
    status = 200 if decision.cluster is not None else 503
    cluster = decision.cluster.name if decision.cluster is not None else None
    note_decision(scope, decision.reason, cluster, decision.session)
    await send_json(send, status, decision.as_json(explain=explain))


async def _read_body(request: Request, svc: Services, *, limit: int) -> bytes:
    too_large = ApiError(413, "body_too_large", f"the body is over {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        # A client that leaves is not the edge's error: counted, and one debug
        # line at most (a traceback per abandoned body would let any client fill
        # the log disk).
        client_disconnects(svc.metrics).values[()] += 1
        log.debug("client %s left before sending its body", request.client)
        raise ApiError(499, "client_closed_request", "the client hung up") from None
    return b"".join(chunks)


def _batch_items(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or set(body) - {"requests"}:
        raise ApiError(400, "invalid_body", 'body must be an object {"requests": [...]}')
    items = body.get("requests")
    if not isinstance(items, list):
        raise ApiError(400, "invalid_body", "requests must be an array", field="requests")
    if len(items) > MAX_BATCH:
        raise ApiError(
            400,
            "invalid_body",
            f"requests holds {len(items)} items; at most {MAX_BATCH} per batch",
            field="requests",
        )
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(
                400, "invalid_body", f"requests[{i}] must be an object", field=f"requests[{i}]"
            )
        unknown = set(item) - {"ip", "session", "tenant"}
        if unknown:
            raise ApiError(
                400,
                "invalid_body",
                f"requests[{i}] has unknown keys: {', '.join(sorted(unknown))}",
                field=f"requests[{i}]",
            )
    return items


async def route_batch(request: Request) -> Response:
    svc = services(request)
    rt = svc.runtime
    explain = flag(query_of(request), "explain")
    try:
        # orjson refuses what would exhaust json's recursion or integer limits.
        body = orjson.loads(await _read_body(request, svc, limit=MAX_BODY_BYTES))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_body", f"body must be JSON: {exc}") from exc
    asks: list[tuple[IPAddress | None, str | None, str | None]] = []
    peer = client_ip(request, rt.trust)
    for i, item in enumerate(_batch_items(body)):
        raw_ip, session_id = item.get("ip"), item.get("session")
        if raw_ip is None:
            client = peer
        elif isinstance(raw_ip, str):
            client = _address(raw_ip, field=f"requests[{i}].ip")
        else:
            raise ApiError(
                400, "invalid_body", f"requests[{i}].ip must be a string", field=f"requests[{i}].ip"
            )
        if session_id is not None:
            found = (
                accepted_id(session_id, SessionSource.QUERY, svc, rt)
                if isinstance(session_id, str)
                else None
            )
            if found is None:
                raise ApiError(
                    400,
                    "invalid_body",
                    f"requests[{i}].session must be {_id_rule(svc, rt, SessionSource.QUERY)}",
                    field=f"requests[{i}].session",
                )
            session_id = found
        _require_sessions(svc, session_id)
        tenant = item.get("tenant")
        if tenant is not None and not (isinstance(tenant, str) and valid_tenant(tenant)):
            raise ApiError(
                400,
                "invalid_body",
                f"requests[{i}].tenant must be {TENANT_ID_RULE}",
                field=f"requests[{i}].tenant",
            )
        asks.append((client, session_id, tenant))
    _require_ready(svc)
    decisions = [
        (
            await route_with_budget(svc, rt, request, c, s, client_is_peer=c is peer, tenant=t)
        ).as_json(explain=explain)
        for c, s, t in asks
    ]
    return JSON({"decisions": decisions})
