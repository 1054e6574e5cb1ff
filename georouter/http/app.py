"""The Starlette app; its lifespan owns every service.

The lifespan opens the GeoIP database, the one ``httpx.AsyncClient``, the
Redis client and the health monitor, and closes them in reverse; background
work (health probes, the Redis breaker's recovery) runs in the lifespan's
``TaskGroup``. Every answer is JSON, errors included: no traceback reaches a
client.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TextIO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Scope

from georouter.config import Config, RouterMode
from georouter.core.ratelimit import TokenBuckets
from georouter.errors import ApiError
from georouter.geoip import refresh as geoip_refresh
from georouter.geoip.database import GeoDatabase
from georouter.http import admin, paths, status
from georouter.http import routing as api
from georouter.http.accesslog import AccessLog, AccessLogFormat
from georouter.http.common import (
    INTERNAL_ERROR,
    JSON,
    Drain,
    HealthSource,
    Services,
    error_body,
)
from georouter.http.dispatch import ByPrefix, DataPath, FastRoute
from georouter.http.exposition import STATE_KEY, registry_for
from georouter.http.limits import DataPathLimits, Limits
from georouter.http.reload import ConfigFile, Reloader, ReloadRequests
from georouter.http.responses import CountResponses
from georouter.metrics import Metrics
from georouter.metricsboard import SharedMetrics, publish_metrics
from georouter.probes.active import HealthMonitor, probe_client
from georouter.probes.passive import PassiveHealth
from georouter.probes.routable import RoutableView
from georouter.proxy.forward import UpstreamPools
from georouter.router import Router
from georouter.runtime import Runtime
from georouter.sessions.clients import make_client, make_subscriber
from georouter.sessions.controls import ClusterControls
from georouter.sessions.ids import CookieSigner
from georouter.sessions.map import SessionMap
from georouter.sessions.redisstore import RedisSessionStore
from georouter.sessions.sharedhealth import SharedHealth
from georouter.sessions.tenants import TenantHomes

log = logging.getLogger(__name__)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_body(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSON(
        {"error": code, "message": exc.detail}, status_code=exc.status_code, headers=exc.headers
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log, never to the client.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSON(INTERNAL_ERROR, status_code=500)


def create_app(
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    admin_token: str | None = None,
    signer: CookieSigner | None = None,
    health: HealthSource | None = None,
    drain: Drain | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    config_file: ConfigFile | None = None,
    reload_requests: ReloadRequests | None = None,
    reload_everywhere: Callable[[], None] | None = None,
    on_started: Callable[[], None] | None = None,
    shared_metrics: SharedMetrics | None = None,
    access_log: AccessLogFormat = AccessLogFormat.OFF,
    access_stream: TextIO | None = None,
    admin_port: int | None = None,
    edge: str | None = None,
) -> ASGIApp:
    """The georouter ASGI app for ``config``. Sessions are on when ``config`` names a Redis.

    Without ``health`` the app probes the clusters itself; a worker process is
    given the shared board its prober publishes to instead. ``admin_port``: the
    port of the edge's admin listener, which alone serves the router's endpoints
    (in proxy and redirect modes every other request is the application's).
    ``edge``: this edge's id in shared health (default: host name and process id).
    """

    def clock_ms() -> int:
        return int(clock() * 1000)

    metrics = Metrics()
    drain = drain or Drain()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            if shared_metrics is not None:
                # Before anything counts: a replacement worker goes on from its slot.
                shared_metrics.carry_over(metrics)
            geo = GeoDatabase.configured(config.geoip, now=clock())
            stack.callback(geo.close)
            if geo.info.stale:
                log.warning(
                    "GeoIP database %s is %.0f days old (limit %d): locations drift as address"
                    " blocks move; install a current GeoIP2/GeoLite2 City database",
                    geo.info.path,
                    geo.info.age_days,
                    config.geoip.max_age_days,
                )
            http = await stack.enter_async_context(probe_client())
            upstream = None
            if config.router.mode is RouterMode.PROXY:
                upstream = await stack.enter_async_context(UpstreamPools(config.proxy))
            sessions = None
            if config.sessions.redis is not None:
                store = RedisSessionStore(
                    make_client(config.sessions.redis, config.sessions),
                    config.sessions,
                    clock_ms=clock_ms,
                    origin=secrets.token_hex(8),
                    subscriber=make_subscriber(config.sessions.redis, config.sessions),
                    metrics=metrics,
                )
                stack.push_async_callback(store.close)
                sessions = SessionMap(store, config.sessions, metrics, clock_ms=clock_ms)
                log.info("sessions shared through %s", config.sessions.redis.redacted)
            monitor = None
            source: HealthSource
            if health is None:
                source = monitor = HealthMonitor(
                    config.clusters, config.health, http, clock=clock, metrics=metrics
                )
            else:
                source = health
            controls = _controls(
                config,
                store.client if sessions is not None else None,
                clock,
                names=lambda: (c.name for c in router.runtime.config.clusters),
            )
            stack.push_async_callback(controls.close)
            tenants = TenantHomes(
                controls.client,
                config.sessions,
                subscriber=_subscriber(config, controls.client),
                clock=clock,
            )
            stack.push_async_callback(tenants.close)
            passive = PassiveHealth(lambda: router.runtime.config, clock=clock)
            shared = SharedHealth(
                store.client if sessions is not None else None,
                config.sessions,
                edge=edge or f"{socket.gethostname()}:{os.getpid()}",
                settings=lambda: router.runtime.config.health,
                names=lambda: (c.name for c in router.runtime.config.clusters),
                states=lambda: source.states,
                unroutable=source.unroutable,
            )
            view = RoutableView(
                source.unroutable,
                passive=passive,
                controls=lambda: (controls.version, controls.controls),
                clock=clock,
                states=lambda: source.states,
                config=lambda: router.runtime.config,
                shared=shared.agreement,
            )
            router = Router(
                Runtime.of(config),
                locator=geo,
                health=view,
                metrics=metrics,
                sessions=sessions,
                pinned=view.pinned,
                admissions=view.admissions,
                operator=view.operator,
                detours=view.detours,
                homes=tenants.current,
            )
            # Before the first request: a drain or home made before this edge started
            # holds here.
            await controls.load()
            await tenants.load()
            reloader = None
            if config_file is not None:

                def apply(new: Config) -> None:
                    # One step, no await: the next request sees all of the new file.
                    router.swap(Runtime.of(new))
                    if monitor is not None:
                        monitor.reconfigure(new.clusters, new.health)

                reloader = Reloader(
                    config_file, config, apply, metrics, clock=clock, propagate=reload_everywhere
                )
            services = Services(
                geo=geo,
                health=source,
                router=router,
                metrics=metrics,
                sessions=sessions,
                signer=signer,
                admin_token=admin_token,
                new_sessions=TokenBuckets(
                    config.limits.new_sessions_per_s, config.limits.new_sessions_burst
                ),
                monotonic=monotonic,
                clock=clock,
                drain=drain,
                reloader=reloader,
                shared_metrics=shared_metrics,
                upstream=upstream,
                passive=passive,
                controls=controls,
                shared_health=shared,
                tenants=tenants,
            )
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(controls.follow(), name="cluster-controls"),
                    tg.create_task(shared.follow(), name="shared-health"),
                    tg.create_task(tenants.follow(), name="tenant-homes"),
                ]
                if monitor is not None:
                    tasks.append(tg.create_task(monitor.run(), name="health-monitor"))
                # Every process follows its GeoIP file; the one that probes (the whole
                # edge, or the prober of workers) is the one that downloads it.
                tasks += geoip_refresh.start(
                    tg, lambda: router.runtime.config.geoip, geo=geo, download=health is None
                )
                if sessions is not None:
                    tasks.append(tg.create_task(sessions.run(), name="redis-recovery"))
                    tasks.append(tg.create_task(sessions.follow_changes(), name="pin-changes"))
                    tasks.append(tg.create_task(sessions.refresh_near(), name="near-refresh"))
                if reloader is not None:
                    tasks.append(
                        tg.create_task(reloader.follow(reload_requests), name="config-reload")
                    )
                if shared_metrics is not None:
                    tasks.append(
                        tg.create_task(
                            publish_metrics(shared_metrics, metrics), name="metrics-publish"
                        )
                    )
                # Start-up is done: what exists now (modules, the GeoIP reader, the
                # clients) lives as long as the process. Frozen, full collections skip
                # it; each one otherwise stalled the event loop for 20-50 ms here,
                # long enough for Redis calls in flight to time out.
                gc.freeze()
                if on_started is not None:
                    on_started()
                try:
                    yield {"services": services, STATE_KEY: registry_for(services)}
                finally:
                    for task in tasks:
                        task.cancel()

    # This app's own count of wrong admin tokens per address (never shared state).
    admin_api = admin.AdminApi(config.limits, clock=monotonic)
    routes = [
        # One route per path, so a 405's Allow lists all its methods. GET /v1/route
        # is answered by FastRoute before Starlette; this route serves HEAD and POST.
        paths.one_route("/v1/route", get=api.route_one, post=request_response(api.route_batch)),
        # Any session id reaches the handler, newline and all, to be answered 400.
        paths.any_tail(
            paths.one_route(
                "/v1/sessions/{session_id:path}",
                get=request_response(admin_api.get_session),
                delete=request_response(admin_api.delete_session),
            )
        ),
        Route("/v1/config", admin_api.get_config, methods=["GET"]),
        Route("/v1/config/reload", admin_api.reload_config, methods=["POST"]),
        Route("/v1/clusters", status.list_clusters, methods=["GET"]),
        Route("/v1/clusters/{name}/drain", admin_api.drain, methods=["POST"]),
        Route("/v1/clusters/{name}/undrain", admin_api.undrain, methods=["POST"]),
        paths.one_route(
            "/v1/clusters/{name}/override",
            post=request_response(admin_api.override),
            delete=request_response(admin_api.end_override),
        ),
        Route("/v1/tenants", admin_api.list_tenants, methods=["GET"]),
        paths.one_route(
            "/v1/tenants/{tenant_id}",
            get=request_response(admin_api.get_tenant),
            put=request_response(admin_api.put_tenant),
            delete=request_response(admin_api.delete_tenant),
        ),
        Route("/healthz", status.healthz, methods=["GET"]),
        Route("/readyz", status.readyz, methods=["GET"]),
        Route("/metrics", status.metrics, methods=["GET"]),
        Route("/openapi.json", status.openapi_json, methods=["GET"]),
    ]
    starlette = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    # An unknown path is the JSON 404, never a redirect to a path the API does not serve
    # (``/v1/route/`` was a bare 307 with an empty body).
    starlette.router.redirect_slashes = False
    app: ASGIApp = FastRoute(starlette)
    data_path = None
    if config.router.mode is not RouterMode.API:
        prefix = config.router.api_prefix
        app = ByPrefix(prefix, app, DataPath(), admin_port=admin_port)
        data_path = DataPathLimits(prefix, config.proxy.max_body_bytes, config.proxy.body_idle_s)
    app = Limits(app, config.limits, metrics, drain, data_path)
    app = CountResponses(app, metrics)
    if access_log is not AccessLogFormat.OFF:
        app = AccessLog(app, access_log, _resolved_client, stream=access_stream, clock=clock)
    return app


def _controls(
    config: Config,
    client: Any | None,
    clock: Callable[[], float],
    *,
    names: Callable[[], Iterable[str]],
) -> ClusterControls:
    """Drains and overrides through the session map's Redis (without one: this
    process's own), read for the clusters ``names`` gives at the time."""
    subscriber = _subscriber(config, client)
    return ClusterControls(client, config.sessions, names=names, subscriber=subscriber, clock=clock)


def _subscriber(config: Config, client: Any | None) -> Any | None:
    """A connection of its own for one channel's announcements (None without Redis)."""
    redis = config.sessions.redis
    if client is None or redis is None:
        return None
    return make_subscriber(redis, config.sessions)


def _resolved_client(scope: Scope) -> str | None:
    """The client address as the edge resolves it (through its trusted proxies)."""
    svc: Services | None = scope.get("state", {}).get("services")
    peer = scope.get("client")
    if svc is None:
        return peer[0] if peer else None
    rule = svc.runtime.trust
    name = rule.header.value.encode("latin-1")
    values = [v.decode("latin-1") for n, v in scope["headers"] if n == name]
    found = rule.client_ip(peer[0] if peer else None, values)
    return None if found is None else str(found)
