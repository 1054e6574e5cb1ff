"""What every HTTP handler shares: the services, JSON answers, request parsing."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote_plus

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Send

from georouter.core.clientip import IPAddress, TrustRule
from georouter.core.health import HealthState
from georouter.core.ratelimit import TokenBuckets
from georouter.errors import ApiError
from georouter.geoip.database import GeoDatabase
from georouter.http.reload import Reloader
from georouter.metrics import Metrics
from georouter.metricsboard import SharedMetrics
from georouter.probes.passive import PassiveHealth
from georouter.proxy.forward import UpstreamPools
from georouter.router import Router
from georouter.runtime import Runtime
from georouter.sessions.controls import ClusterControls
from georouter.sessions.ids import CookieSigner
from georouter.sessions.map import SessionMap
from georouter.sessions.sharedhealth import SharedHealth
from georouter.sessions.tenants import TenantHomes


class HealthSource(Protocol):
    """Cluster health as the API sees it: this process's monitor, or the shared board."""

    @property
    def states(self) -> Mapping[str, HealthState]: ...

    @property
    def ready(self) -> bool: ...

    def unroutable(self) -> Mapping[str, str]: ...


# How many recent client addresses an edge keeps (``Services.recent_clients``).
RECENT_CLIENTS = 1024


@dataclass(slots=True)
class Drain:
    """Set once the edge is shutting down: it still serves, but says it is not ready,
    so the load balancer in front stops sending it new connections first."""

    draining: bool = False


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request handler may use; built and closed by the app's lifespan."""

    geo: GeoDatabase
    health: HealthSource
    router: Router
    metrics: Metrics
    sessions: SessionMap | None
    signer: CookieSigner | None
    admin_token: str | None
    # New sessions per client address (`[limits] new_sessions_*`).
    new_sessions: TokenBuckets = field(default_factory=lambda: TokenBuckets(0, 0))
    monotonic: Callable[[], float] = time.monotonic
    # Wall-clock seconds (drain deadlines and ejections are told in it).
    clock: Callable[[], float] = time.time
    drain: Drain = field(default_factory=Drain)
    # Present when the edge runs from a file it can read again.
    reloader: Reloader | None = None
    # A worker's place on its edge's metrics board (None: a single process).
    shared_metrics: SharedMetrics | None = None
    # The one client to every cluster, in proxy mode.
    upstream: UpstreamPools | None = None
    # What this process's data path has seen of each cluster (passive health).
    passive: PassiveHealth | None = None
    # Drains and overrides, shared by every edge through Redis.
    controls: ClusterControls | None = None
    # Every edge's probe results and the verdict on them (`[health] shared`).
    shared_health: SharedHealth | None = None
    # Tenant homes set at run time, shared by every edge through Redis.
    tenants: TenantHomes | None = None
    # The client addresses of the latest routing decisions, for a reload's dry run to
    # re-rank (``http.dryrun``); never answered to anyone. Bounded: old ones drop off.
    recent_clients: deque[IPAddress | None] = field(
        default_factory=lambda: deque(maxlen=RECENT_CLIENTS)
    )

    @property
    def runtime(self) -> Runtime:
        """The current runtime snapshot: read it once per request."""
        return self.router.runtime


def services(request: HTTPConnection) -> Services:
    found: Services = request.scope["state"]["services"]
    return found


def query_of(request: HTTPConnection) -> dict[str, str]:
    """The query parameters (the last of repeated names wins, as in Starlette).

    Parsed here rather than by ``request.query_params`` because every routing
    request needs it and the common case (plain ASCII, nothing escaped) needs
    no unquoting at all.
    """
    raw: bytes = request.scope.get("query_string", b"")
    out: dict[str, str] = {}
    if not raw:
        return out
    for part in raw.split(b"&"):
        if not part:
            continue
        name_b, _, value_b = part.partition(b"=")
        name, value = name_b.decode("latin-1"), value_b.decode("latin-1")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        out[name] = value
    return out


def flag(query: dict[str, str], name: str) -> bool:
    """A 1/0 query flag; a bare ``?name`` or ``name=`` is true."""
    raw = query.get(name)
    if raw is None:
        return False
    # Spaces and tabs only: str.strip() also takes control characters (\x1c-\x1f) as space.
    value = raw.strip(" \t").lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ApiError(
        400, "invalid_parameter", f"{name} must be 1 or 0, not {raw[:32]!r}", parameter=name
    )


class JSON(Response):
    """A JSON response rendered by orjson (several times faster than json.dumps)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def client_ip(request: HTTPConnection, trust: TrustRule) -> IPAddress | None:
    peer = request.client.host if request.client else None
    return trust.client_ip(peer, request.headers.getlist(trust.header.value))


async def send_json(
    send: Send,
    status: int,
    content: object,
    headers: dict[str, str] | None = None,
    *,
    raw_headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """A complete JSON response, without building a Response object."""
    body = orjson.dumps(content)
    raw = [_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *raw_headers]
    if headers:
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


_JSON_HEADERS = (b"content-type", b"application/json")


def error_body(exc: ApiError) -> JSON:
    return JSON(exc.body, status_code=exc.status, headers=exc.headers)


INTERNAL_ERROR: dict[str, object] = {"error": "internal", "message": "internal error"}
