"""The routing API: ``GET /v1/route`` (the hot path) and ``POST /v1/route`` (a batch)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from georouter.core.clientip import IPAddress, parse_address
from georouter.errors import ApiError
from georouter.http.common import JSON, Services, client_ip, query_of, send_json, services
from georouter.runtime import Runtime
from georouter.sessions.ids import valid_id

MAX_BATCH = 1000
MAX_BODY_BYTES = 1 << 20
_ID_RULE = "1-128 characters of A-Z a-z 0-9 . _ ~ + / = : -"


def _flag(query: dict[str, str], name: str) -> bool:
    raw = query.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ApiError(
        400, "invalid_parameter", f"{name} must be 1 or 0, not {raw[:32]!r}", parameter=name
    )


def _address(raw: str, *, parameter: str | None = None, field: str | None = None) -> IPAddress:
    addr = parse_address(raw)
    if addr is not None:
        return addr
    message = f"{parameter or field} must be an IPv4 or IPv6 address, not {raw[:64]!r}"
    if parameter is not None:
        raise ApiError(400, "invalid_parameter", message, parameter=parameter)
    raise ApiError(400, "invalid_body", message, field=field)


def session_of(request: Request, svc: Services, rt: Runtime, query: dict[str, str]) -> str | None:
    """The session id: ``session=``, else the session header, else the session cookie.

    A malformed id that the caller sent on purpose (query or header) is a 400. A
    cookie that fails its signature check is ignored, and so creates no Redis key.
    """
    settings = rt.config.sessions
    raw = query.get("session")
    if raw is not None:
        if not valid_id(raw):
            raise ApiError(
                400, "invalid_parameter", f"session must be {_ID_RULE}", parameter="session"
            )
        return raw
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
        if not valid_id(header):
            raise ApiError(
                400,
                "invalid_header",
                f"{settings.header} must be {_ID_RULE}",
                header=settings.header,
            )
        return header
    if cookie_header is None:
        return None
    raw = request.cookies.get(settings.cookie)
    if raw is None:
        return None
    if svc.signer is not None:
        return svc.signer.verify(raw)
    return raw if valid_id(raw) else None


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
    explain = _flag(query, "explain")
    raw_ip = query.get("ip")
    client = (
        _address(raw_ip, parameter="ip") if raw_ip is not None else client_ip(request, rt.trust)
    )
    session_id = session_of(request, svc, rt, query)
    if "session" in query:
        _require_sessions(svc, session_id)
    _require_ready(svc)
    decision = await svc.router.route(client, session_id, rt)
    status = 200 if decision.cluster is not None else 503
    await send_json(send, status, decision.as_json(explain=explain))


async def _read_body(request: Request, *, limit: int) -> bytes:
    too_large = ApiError(413, "body_too_large", f"the body is over {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
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
        unknown = set(item) - {"ip", "session"}
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
    explain = _flag(query_of(request), "explain")
    try:
        # orjson refuses what would exhaust json's recursion or integer limits.
        body = orjson.loads(await _read_body(request, limit=MAX_BODY_BYTES))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_body", f"body must be JSON: {exc}") from exc
    asks: list[tuple[IPAddress | None, str | None]] = []
    for i, item in enumerate(_batch_items(body)):
        raw_ip, session_id = item.get("ip"), item.get("session")
        if raw_ip is None:
            client = client_ip(request, rt.trust)
        elif isinstance(raw_ip, str):
            client = _address(raw_ip, field=f"requests[{i}].ip")
        else:
            raise ApiError(
                400, "invalid_body", f"requests[{i}].ip must be a string", field=f"requests[{i}].ip"
            )
        if session_id is not None and not (isinstance(session_id, str) and valid_id(session_id)):
            raise ApiError(
                400,
                "invalid_body",
                f"requests[{i}].session must be {_ID_RULE}",
                field=f"requests[{i}].session",
            )
        _require_sessions(svc, session_id)
        asks.append((client, session_id))
    _require_ready(svc)
    route = svc.router.route
    decisions = [(await route(c, s, rt)).as_json(explain=explain) for c, s in asks]
    return JSON({"decisions": decisions})
