"""The HTTP API: a Starlette app whose lifespan owns every service.

The lifespan opens the GeoIP database, the one ``httpx.AsyncClient`` and the
health monitor, in that order, and closes them in reverse; the monitor runs
in the lifespan's ``TaskGroup``. Every answer is JSON, errors included: a
client never sees a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from georouter import openapi
from georouter.clientip import IPAddress, TrustRule, parse_address
from georouter.config import Config
from georouter.geo import GeoDatabase
from georouter.metrics import Metrics
from georouter.monitor import HealthMonitor
from georouter.router import Decision, Router

log = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request handler may use; built and closed by the lifespan."""

    config: Config
    geo: GeoDatabase
    monitor: HealthMonitor
    router: Router
    metrics: Metrics
    trust: TrustRule


class ApiError(Exception):
    """An error answered to the client as ``{"error": code, "message": ..., ...}``."""

    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, object] = {"error": code, "message": message, **extra}


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, "invalid_parameter", f"{name} must be 1 or 0, not {raw!r}", parameter=name)


def _client_ip(request: Request, services: Services) -> IPAddress | None:
    peer = request.client.host if request.client else None
    lines = request.headers.getlist(services.trust.header.value)
    return services.trust.client_ip(peer, lines)


def _require_ready(services: Services) -> None:
    if not services.monitor.first_round_done.is_set():
        raise ApiError(
            503,
            "not_ready",
            "the first round of health checks has not finished; retry shortly",
        )


def _decision_response(decision: Decision, *, explain: bool) -> JSONResponse:
    status = 200 if decision.cluster is not None else 503
    return JSONResponse(decision.as_json(explain=explain), status_code=status)


async def route_one(request: Request) -> Response:
    services = _services(request)
    explain = _flag(request, "explain")
    raw_ip = request.query_params.get("ip")
    if raw_ip is not None:
        client = parse_address(raw_ip)
        if client is None:
            raise ApiError(
                400,
                "invalid_parameter",
                f"ip must be an IPv4 or IPv6 address, not {raw_ip[:64]!r}",
                parameter="ip",
            )
    else:
        client = _client_ip(request, services)
    _require_ready(services)
    return _decision_response(services.router.decide(client), explain=explain)


async def route_batch(request: Request) -> Response:
    services = _services(request)
    explain = _flag(request, "explain")
    try:
        body = json.loads(await _read_body(request, limit=MAX_BODY_BYTES))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "invalid_body", f"body must be JSON: {exc}") from exc
    items = _batch_items(body)
    clients: list[IPAddress | None] = []
    for i, item in enumerate(items):
        raw_ip = item.get("ip")
        if raw_ip is None:
            clients.append(_client_ip(request, services))
            continue
        client = parse_address(raw_ip) if isinstance(raw_ip, str) else None
        if client is None:
            raise ApiError(
                400,
                "invalid_body",
                f"requests[{i}].ip must be an IPv4 or IPv6 address, not {str(raw_ip)[:64]!r}",
                field=f"requests[{i}].ip",
            )
        clients.append(client)
    _require_ready(services)
    decide = services.router.decide
    return JSONResponse({"decisions": [decide(c).as_json(explain=explain) for c in clients]})


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
        unknown = set(item) - {"ip"}
        if unknown:
            raise ApiError(
                400,
                "invalid_body",
                f"requests[{i}] has unknown keys: {', '.join(sorted(unknown))}",
                field=f"requests[{i}]",
            )
    return items


async def list_clusters(request: Request) -> Response:
    services = _services(request)
    states = services.monitor.states
    info = services.geo.info
    warnings = []
    if info.stale:
        warnings.append(
            f"GeoIP database is {info.age_days:.0f} days old"
            f" (limit {services.config.geoip.max_age_days}): install a current one"
        )
    return JSONResponse(
        {
            "clusters": [
                {
                    "name": c.name,
                    "url": c.url,
                    "lat": c.lat,
                    "lon": c.lon,
                    "fallback": c.name == services.config.router.fallback,
                    "health": states[c.name].as_json(),
                }
                for c in services.config.clusters
            ],
            "geoip": info.as_json(),
            "warnings": warnings,
        }
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    services = _services(request)
    waiting = []
    if not services.monitor.first_round_done.is_set():
        waiting.append("first round of health checks")
    if waiting:
        return JSONResponse({"ready": False, "waiting_for": waiting}, status_code=503)
    return JSONResponse({"ready": True})


async def metrics(request: Request) -> Response:
    services = _services(request)
    up = sum(st.routable for st in services.monitor.states.values())
    gauges = {
        "georouter_clusters_up": float(up),
        "georouter_clusters": float(len(services.config.clusters)),
        "georouter_geoip_cached_networks": float(services.geo.cached_networks),
        "georouter_geoip_database_age_days": services.geo.info.age_days,
    }
    return PlainTextResponse(
        services.metrics.render(gauges), media_type="text/plain; version=0.0.4"
    )


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi.SPEC)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body, status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
        exc.status_code, "http_error"
    )
    return JSONResponse(
        {"error": code, "message": exc.detail}, status_code=exc.status_code, headers=exc.headers
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log, never to the client.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal", "message": "internal error"}, status_code=500)


def create_app(config: Config, *, clock: Callable[[], float] = time.time) -> Starlette:
    """The georouter ASGI app for ``config``; services open in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            geo = GeoDatabase(
                config.geoip.database,
                cache_networks=config.geoip.cache_networks,
                max_age_days=config.geoip.max_age_days,
                now=clock(),
            )
            stack.callback(geo.close)
            if geo.info.stale:
                log.warning(
                    "GeoIP database %s is %.0f days old (limit %d): locations drift as address"
                    " blocks move; install a current GeoIP2/GeoLite2 City database",
                    geo.info.path,
                    geo.info.age_days,
                    config.geoip.max_age_days,
                )
            client = await stack.enter_async_context(
                httpx.AsyncClient(headers={"user-agent": "georouter-health/1"})
            )
            monitor = HealthMonitor(config.clusters, config.health, client, clock=clock)
            metrics_ = Metrics()
            router = Router(config, locator=geo, health=monitor, metrics=metrics_)
            services = Services(
                config=config,
                geo=geo,
                monitor=monitor,
                router=router,
                metrics=metrics_,
                trust=TrustRule(
                    trusted=config.router.trusted_proxies,
                    header=config.router.client_ip_header,
                    max_hops=config.router.max_forwarded_hops,
                ),
            )
            async with asyncio.TaskGroup() as tg:
                probes = tg.create_task(monitor.run(), name="health-monitor")
                try:
                    yield {"services": services}
                finally:
                    probes.cancel()

    routes = [
        Route("/v1/route", route_one, methods=["GET"]),
        Route("/v1/route", route_batch, methods=["POST"]),
        Route("/v1/clusters", list_clusters, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
