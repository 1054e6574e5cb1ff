"""Admin operations on sessions, behind a bearer token.

They answer only when ``GEOROUTER_ADMIN_TOKEN`` is set and the request presents
it; the token is compared in constant time on digests, so a wrong, missing or
non-ASCII token is a 401, never a 500.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request
from starlette.responses import Response

from georouter.errors import ApiError, StoreUnavailable
from georouter.http.common import JSON, Services, services
from georouter.sessions.ids import valid_id
from georouter.sessions.map import SessionMap


def tokens_equal(presented: str, expected: str) -> bool:
    """Constant-time comparison of two tokens of any length or charset.

    ``hmac.compare_digest`` raises on non-ASCII ``str``; comparing digests of
    the UTF-8 bytes never raises and hides the expected length as well.
    """
    a = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)


def _authorised(request: Request) -> tuple[Services, SessionMap]:
    svc = services(request)
    if svc.admin_token is None:
        raise ApiError(
            403,
            "admin_disabled",
            "the admin API is off: set GEOROUTER_ADMIN_TOKEN on the edge to enable it",
        )
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not tokens_equal(presented.strip(), svc.admin_token):
        raise ApiError(
            401,
            "unauthorized",
            "a valid admin bearer token is required",
            headers={"www-authenticate": 'Bearer realm="georouter-admin"'},
        )
    if svc.sessions is None:
        raise ApiError(404, "sessions_disabled", "sessions are not enabled on this edge")
    return svc, svc.sessions


def _session_id(request: Request) -> str:
    session_id: str = request.path_params["session_id"]
    if not valid_id(session_id):
        raise ApiError(
            400,
            "invalid_parameter",
            "a session id is 1-128 characters of A-Z a-z 0-9 . _ ~ + / = : -",
            parameter="session_id",
        )
    return session_id


async def get_session(request: Request) -> Response:
    _, sessions = _authorised(request)
    session_id = _session_id(request)
    try:
        pin = await sessions.peek(session_id)
    except StoreUnavailable as exc:
        raise ApiError(503, "session_store_unavailable", f"Redis did not answer: {exc}") from exc
    if pin is None:
        raise ApiError(404, "unknown_session", "no such session", session=session_id)
    return JSON(
        {
            "id": session_id,
            "pinned": pin.cluster,
            "pinned_at_ms": pin.pinned_at_ms,
            "ttl_s": None if pin.ttl_ms is None else round(pin.ttl_ms / 1000, 3),
        }
    )


async def delete_session(request: Request) -> Response:
    _, sessions = _authorised(request)
    session_id = _session_id(request)
    try:
        await sessions.forget(session_id)
    except StoreUnavailable as exc:
        raise ApiError(503, "session_store_unavailable", f"Redis did not answer: {exc}") from exc
    return JSON({"id": session_id, "forgotten": True})
