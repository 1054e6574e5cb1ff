"""Admin operations on clusters: drain, undrain, force a state, end it.

Called by ``admin.AdminApi`` once the request has shown the token. The state
lives in Redis (``sessions.controls``), so what one edge is told holds at
every edge within a second. Every change is logged with what it was, when,
and the peer address it came from.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from georouter.core.controls import Forced
from georouter.errors import ApiError, StoreUnavailable
from georouter.http.common import JSON, Services
from georouter.sessions.controls import ClusterControls

log = logging.getLogger(__name__)

# The most an admin body may be, and the longest drain deadline or override.
MAX_BODY_BYTES = 4096
MAX_S = 7 * 86400.0
DEFAULT_DEADLINE_S = 600.0
DEFAULT_TTL_S = 300.0
MAX_REASON = 200


def _cluster(request: Request, svc: Services) -> str:
    name: str = request.path_params["name"]
    if name not in svc.runtime.clusters:
        raise ApiError(404, "unknown_cluster", "no cluster has that name", cluster=name[:64])
    return name


def peer(request: Request) -> str:
    return request.client.host if request.client else "an unknown address"


async def read_body(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_body", f"body must be JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(
            400, "invalid_body", f"unknown field {unknown[0][:64]!r}", field=unknown[0][:64]
        )
    return body


def _seconds(body: dict[str, Any], name: str, default: float, *, positive: bool) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, "invalid_body", f"{name} must be a number of seconds", field=name)
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_S or (positive and not seconds):
        least = "greater than 0" if positive else "at least 0"
        raise ApiError(
            400,
            "invalid_body",
            f"{name} must be {least} and at most {MAX_S:g} seconds, not {value}",
            field=name,
        )
    return seconds


def _controls(svc: Services) -> ClusterControls:
    assert svc.controls is not None, "the app always builds its cluster controls"
    return svc.controls


def unavailable(exc: StoreUnavailable) -> ApiError:
    return ApiError(503, "session_store_unavailable", f"Redis did not answer: {exc}")


async def drain(request: Request, svc: Services) -> Response:
    """``POST /v1/clusters/NAME/drain`` ``{"deadline_s": 600}``."""
    name = _cluster(request, svc)
    body = await read_body(request, frozenset({"deadline_s"}))
    deadline_s = _seconds(body, "deadline_s", DEFAULT_DEADLINE_S, positive=False)
    try:
        done = await _controls(svc).drain(name, deadline_s, by=peer(request))
    except StoreUnavailable as exc:
        raise unavailable(exc) from exc
    log.warning(
        "admin: cluster %s drained by %s: no new sessions; pinned ones move in %gs",
        name,
        peer(request),
        deadline_s,
    )
    return JSON({"cluster": name, "drain": done.as_json(done.since)})


async def undrain(request: Request, svc: Services) -> Response:
    """``POST /v1/clusters/NAME/undrain``."""
    name = _cluster(request, svc)
    try:
        was = await _controls(svc).undrain(name)
    except StoreUnavailable as exc:
        raise unavailable(exc) from exc
    log.warning("admin: cluster %s undrained by %s (was drained: %s)", name, peer(request), was)
    return JSON({"cluster": name, "drain": None, "was_drained": was})


async def override(request: Request, svc: Services) -> Response:
    """``POST /v1/clusters/NAME/override`` ``{"state": "down", "ttl_s": 300, "reason": ""}``."""
    name = _cluster(request, svc)
    body = await read_body(request, frozenset({"state", "ttl_s", "reason"}))
    raw_state = body.get("state")
    if raw_state not in ("down", "up"):
        raise ApiError(400, "invalid_body", 'state must be "down" or "up"', field="state")
    ttl_s = _seconds(body, "ttl_s", DEFAULT_TTL_S, positive=True)
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ApiError(
            400,
            "invalid_body",
            f"reason must be a string of at most {MAX_REASON} characters",
            field="reason",
        )
    state = Forced(raw_state)
    try:
        done = await _controls(svc).force(name, state, ttl_s, reason=reason, by=peer(request))
    except StoreUnavailable as exc:
        raise unavailable(exc) from exc
    log.warning(
        "admin: cluster %s overridden %s for %gs by %s (reason: %r)",
        name,
        state.value,
        ttl_s,
        peer(request),
        reason,
    )
    return JSON({"cluster": name, "override": done.as_json(done.since)})


async def end_override(request: Request, svc: Services) -> Response:
    """``DELETE /v1/clusters/NAME/override``."""
    name = _cluster(request, svc)
    try:
        was = await _controls(svc).unforce(name)
    except StoreUnavailable as exc:
        raise unavailable(exc) from exc
    log.warning("admin: override of cluster %s ended by %s (was set: %s)", name, peer(request), was)
    return JSON({"cluster": name, "override": None, "was_overridden": was})
