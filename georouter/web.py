"""What every HTTP handler shares: the services, the JSON error, request parsing."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from georouter.clientip import IPAddress, TrustRule
from georouter.config import Config
from georouter.geo import GeoDatabase
from georouter.metrics import Metrics
from georouter.monitor import HealthMonitor
from georouter.router import Router
from georouter.sessionid import CookieSigner
from georouter.sessionmap import SessionMap


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request handler may use; built and closed by the app's lifespan."""

    config: Config
    geo: GeoDatabase
    monitor: HealthMonitor
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
    found: Services = request.state.services
    return found


def client_ip(request: Request, svc: Services) -> IPAddress | None:
    peer = request.client.host if request.client else None
    return svc.trust.client_ip(peer, request.headers.getlist(svc.trust.header.value))
