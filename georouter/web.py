"""What every HTTP handler shares: the services, the JSON error, request parsing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote_plus

import orjson
from starlette.requests import Request
from starlette.responses import Response

from georouter.clientip import IPAddress, TrustRule
from georouter.config import Config
from georouter.geo import GeoDatabase
from georouter.health import HealthState
from georouter.metrics import Metrics
from georouter.router import Router
from georouter.sessionid import CookieSigner
from georouter.sessionmap import SessionMap


class HealthSource(Protocol):
    """Cluster health as the API sees it: this process's monitor, or the shared board."""

    @property
    def states(self) -> Mapping[str, HealthState]: ...

    @property
    def ready(self) -> bool: ...

    def unroutable(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request handler may use; built and closed by the app's lifespan."""

    config: Config
    geo: GeoDatabase
    health: HealthSource
    router: Router
    metrics: Metrics
    trust: TrustRule
    sessions: SessionMap | None
    signer: CookieSigner | None
    admin_token: str | None


class ApiError(Exception):
    """An error answered as ``{"error": code, "message": ..., **extra}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers
        self.body: dict[str, object] = {"error": code, "message": message, **extra}


def services(request: Request) -> Services:
    found: Services = request.scope["state"]["services"]
    return found


def query_of(request: Request) -> dict[str, str]:
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


class JSON(Response):
    """A JSON response rendered by orjson (several times faster than json.dumps)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def client_ip(request: Request, svc: Services) -> IPAddress | None:
    peer = request.client.host if request.client else None
    return svc.trust.client_ip(peer, request.headers.getlist(svc.trust.header.value))
