"""Admin operations on sessions, behind a bearer token.

They answer only when ``GEOROUTER_ADMIN_TOKEN`` is set and the request presents
it; the token is compared in constant time on digests, so a wrong, missing or
non-ASCII token is a 401, never a 500.

Guessing is bounded: ``[limits] admin_failures`` wrong tokens from one client
address (IPv6 by /64) within ``admin_lockout_s`` lock that address out, with
429 and ``Retry-After``, right token or not, until the window has passed. Each
wrong token is logged with its address, up to the lockout, which is logged
once: a flood of guesses cannot flood the log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from georouter.config import LimitsSettings
from georouter.core.ratelimit import FailureWindow, client_key
from georouter.errors import ApiError, StoreUnavailable
from georouter.http import clusteradmin, dryrun, tenantadmin
from georouter.http.common import JSON, Services, client_ip, flag, query_of, services
from georouter.http.reload import Reloader
from georouter.sessions.ids import valid_id
from georouter.sessions.map import SessionMap

log = logging.getLogger(__name__)


def tokens_equal(presented: str, expected: str) -> bool:
    """Constant-time comparison of two tokens of any length or charset.

    ``hmac.compare_digest`` raises on non-ASCII ``str``; comparing digests of
    the UTF-8 bytes never raises and hides the expected length as well.
    """
    a = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)


def _disabled() -> ApiError:
    return ApiError(
        403,
        "admin_disabled",
        "the admin API is off: set GEOROUTER_ADMIN_TOKEN on the edge to enable it",
    )


def _unauthorised() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "a valid admin bearer token is required",
        headers={"www-authenticate": 'Bearer realm="georouter-admin"'},
    )


def _presented_token_ok(request: Request, expected: str) -> bool:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and tokens_equal(presented.strip(), expected)


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


class AdminApi:
    """The admin handlers of one app, with that app's count of wrong tokens per address.

    ``clock`` is monotonic seconds (the lockout must not move with wall-clock steps).
    """

    def __init__(
        self, limits: LimitsSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._failures = FailureWindow(limits.admin_failures, limits.admin_lockout_s)
        self._clock = clock

    def _authorised(self, request: Request) -> tuple[Services, SessionMap]:
        svc = self._admin(request)
        if svc.sessions is None:
            raise ApiError(404, "sessions_disabled", "sessions are not enabled on this edge")
        return svc, svc.sessions

    def _admin(self, request: Request) -> Services:
        """The services, once the request has shown the admin token."""
        svc = services(request)
        if svc.admin_token is None:
            raise _disabled()
        address = client_ip(request, svc.runtime.trust)
        key = client_key(address)
        now = self._clock()
        wait = self._failures.locked_out(key, now)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise ApiError(
                429,
                "too_many_failures",
                f"too many wrong admin tokens from this address; retry in {retry_after}s",
                headers={"retry-after": str(retry_after)},
            )
        if not _presented_token_ok(request, svc.admin_token):
            self._failed(svc, key, address, now)
            raise _unauthorised()
        return svc

    def _failed(self, svc: Services, key: str, address: object, now: float) -> None:
        window = self._failures
        count = window.failed(key, now)
        svc.metrics.family(
            "georouter_admin_auth_failures_total",
            "Admin requests refused for a missing or wrong token.",
        ).values[()] += 1
        shown = address if address is not None else "an unknown address"
        if window.limit <= 0:
            # No lockout: still one line per address per window, not one per guess.
            if count == 1:
                log.warning(
                    "admin: wrong or missing token from %s (further ones from it in the"
                    " next %gs are not logged)",
                    shown,
                    window.window_s,
                )
        elif count < window.limit:
            log.warning(
                "admin: wrong or missing token from %s (%d of %d allowed within %gs)",
                shown,
                count,
                window.limit,
                window.window_s,
            )
        elif count == window.limit:
            log.warning(
                "admin: %d wrong or missing tokens from %s within %gs: refusing it"
                " until the window has passed",
                count,
                shown,
                window.window_s,
            )

    async def get_session(self, request: Request) -> Response:
        _, sessions = self._authorised(request)
        session_id = _session_id(request)
        try:
            pin = await sessions.peek(session_id)
        except StoreUnavailable as exc:
            raise ApiError(
                503, "session_store_unavailable", f"Redis did not answer: {exc}"
            ) from exc
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

    async def delete_session(self, request: Request) -> Response:
        _, sessions = self._authorised(request)
        session_id = _session_id(request)
        try:
            await sessions.forget(session_id)
        except StoreUnavailable as exc:
            raise ApiError(
                503, "session_store_unavailable", f"Redis did not answer: {exc}"
            ) from exc
        return JSON({"id": session_id, "forgotten": True})

    def _reloader(self, request: Request) -> Reloader:
        svc = self._admin(request)
        if svc.reloader is None:
            raise ApiError(
                404, "reload_unavailable", "this edge was not started from a configuration file"
            )
        return svc.reloader

    async def get_config(self, request: Request) -> Response:
        """``GET /v1/config``: the running file's version, when it was loaded, the last reload."""
        return JSON(self._reloader(request).status())

    async def reload_config(self, request: Request) -> Response:
        """``POST /v1/config/reload[?dry_run=1]``: read the file again; 200 if it now
        runs (or would, or is unchanged), 422 if it is invalid or needs a restart. A dry
        run that would apply also says its ``impact`` here (``http.dryrun``)."""
        reloader = self._reloader(request)
        dry_run = flag(query_of(request), "dry_run")
        outcome = reloader.reload(dry_run=dry_run)
        if not dry_run and reloader.propagate is not None:
            # This process answers; every other one of the edge reloads as on SIGHUP.
            reloader.propagate()
        status = 200 if outcome.result in ("ok", "unchanged") else 422
        body = outcome.as_json()
        if dry_run and outcome.result == "ok":
            # What it would do here: sessions it would move, clients it would send elsewhere.
            body["impact"] = await dryrun.impact(services(request), reloader.source)
        return JSON(body, status_code=status)

    # Cluster drains and overrides (``http.clusteradmin``), shared by every edge.

    async def drain(self, request: Request) -> Response:
        return await clusteradmin.drain(request, self._admin(request))

    async def undrain(self, request: Request) -> Response:
        return await clusteradmin.undrain(request, self._admin(request))

    async def override(self, request: Request) -> Response:
        return await clusteradmin.override(request, self._admin(request))

    async def end_override(self, request: Request) -> Response:
        return await clusteradmin.end_override(request, self._admin(request))

    # Tenant homes (``http.tenantadmin``), shared by every edge.

    async def put_tenant(self, request: Request) -> Response:
        return await tenantadmin.put_home(request, self._admin(request))

    async def get_tenant(self, request: Request) -> Response:
        return await tenantadmin.get_home(request, self._admin(request))

    async def delete_tenant(self, request: Request) -> Response:
        return await tenantadmin.delete_home(request, self._admin(request))

    async def list_tenants(self, request: Request) -> Response:
        return await tenantadmin.list_homes(request, self._admin(request))
