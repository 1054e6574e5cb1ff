"""The operator endpoints: cluster and session status, liveness, readiness, metrics, OpenAPI."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from georouter.config import Config, SessionSource
from georouter.core.breaker import BreakerState
from georouter.core.health import HealthState
from georouter.http import openapi
from georouter.http.common import JSON, Services, services
from georouter.metrics import Snapshot


async def list_clusters(request: Request) -> Response:
    svc = services(request)
    config = svc.runtime.config
    states = svc.health.states
    info = svc.geo.info
    warnings = []
    if info.stale:
        warnings.append(
            f"GeoIP database is {info.age_days:.0f} days old"
            f" (limit {config.geoip.max_age_days}): install a current one"
        )
    return JSON(
        {
            "clusters": [
                {
                    "name": c.name,
                    "url": c.url,
                    "lat": c.lat,
                    "lon": c.lon,
                    "fallback": c.name == config.router.fallback,
                    # A cluster added by a reload has no state on a worker's board yet.
                    "health": states.get(c.name, HealthState()).as_json(),
                }
                for c in config.clusters
            ],
            "geoip": info.as_json(),
            "sessions": _sessions_status(svc, config),
            "config": None if svc.reloader is None else svc.reloader.status(problems=False),
            "warnings": warnings,
        }
    )


def _sessions_status(svc: Services, config: Config) -> dict[str, object] | None:
    if svc.sessions is None or config.sessions.redis is None:
        return None
    status = svc.sessions.status()
    return {
        "redis": config.sessions.redis.redacted,
        "mode": config.sessions.redis.mode.value,
        "breaker": status.breaker.value,
        "near_cache": "on" if status.near_cache_on else "off",
        "near_cache_pins": status.near_cache_pins,
        "local_pins": status.remembered_pins,
        "pending_write_back": status.pending_write_back,
    }


async def healthz(request: Request) -> Response:
    return JSON({"status": "ok"})


async def readyz(request: Request) -> Response:
    svc = services(request)
    if svc.drain.draining:
        return JSON({"ready": False, "draining": True}, status_code=503)
    if not svc.health.ready:
        return JSON(
            {"ready": False, "waiting_for": ["first round of health checks"]}, status_code=503
        )
    return JSON({"ready": True})


async def metrics(request: Request) -> Response:
    svc = services(request)
    config = svc.runtime.config
    up = sum(st.routable for st in svc.health.states.values())
    gauges = {
        "georouter_clusters_up": float(up),
        "georouter_clusters": float(len(config.clusters)),
        "georouter_geoip_cached_networks": float(svc.geo.cached_networks),
        "georouter_geoip_database_age_days": svc.geo.info.age_days,
    }
    if svc.sessions is not None:
        status = svc.sessions.status()
        gauges["georouter_redis_breaker_open"] = float(status.breaker is BreakerState.OPEN)
        gauges["georouter_session_local_pins"] = float(status.remembered_pins)
        gauges["georouter_session_pending_write_back"] = float(status.pending_write_back)
    others: list[Snapshot] = []
    if svc.shared_metrics is not None:
        # The edge's counters, whichever worker answers: this one's (published now,
        # so the next scrape, answered by another, sees at least as much) and the rest.
        svc.shared_metrics.publish(svc.metrics)
        others = svc.shared_metrics.others()
    return PlainTextResponse(
        svc.metrics.render(gauges, others), media_type="text/plain; version=0.0.4"
    )


async def openapi_json(request: Request) -> Response:
    # What this edge accepts: with session keys set, a query id must be signed
    # unless the operator lets it in unsigned.
    svc = services(request)
    unsigned = svc.runtime.config.sessions.unsigned_sources
    query_signed = svc.signer is not None and SessionSource.QUERY not in unsigned
    return JSON(openapi.spec_for(query_signed=query_signed))
