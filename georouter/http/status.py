"""The operator endpoints: cluster and session status, liveness, readiness, metrics, OpenAPI."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from georouter.config import Config, SessionSource
from georouter.core.admission import Admission
from georouter.core.controls import NO_CONTROLS
from georouter.core.health import HealthState
from georouter.core.quorum import Agreement
from georouter.http import exposition, openapi
from georouter.http.common import JSON, Services, services


async def list_clusters(request: Request) -> Response:
    svc = services(request)
    config = svc.runtime.config
    states = svc.health.states
    info = svc.geo.info
    now = svc.clock()
    controls = svc.controls.controls if svc.controls is not None else NO_CONTROLS
    unroutable = svc.router.unroutable()
    held, _ = svc.router.admissions()
    router = config.router
    shared = svc.shared_health
    agreement = None if shared is None else shared.agreement()
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
                    # What this process's data path saw of it (passive health).
                    "ejection": None
                    if svc.passive is None
                    else svc.passive.outlier(c.name).as_json(now),
                    # The operator's drain and override, shared by every edge.
                    **controls.as_json(c.name, now),
                    # Whether a new session may go there now, and if not why.
                    "routable": c.name not in unroutable,
                    "why_not": unroutable.get(c.name),
                    # The share of its new sessions it takes now (load, failback).
                    "new_session_share": _share(held.get(c.name)),
                    # What the edges agree on (`[health] shared`; null when off).
                    "shared": None if agreement is None else _verdict(agreement, c.name),
                }
                for c in config.clusters
            ],
            "policy": {
                "panic": svc.runtime.panicking(unroutable),
                "panic_below": router.panic_below,
                "routable": sum(c.name not in unroutable for c in config.clusters),
                "all_down": router.all_down.value,
                "on_pinned_down": router.on_pinned_down.value,
            },
            "geoip": info.as_json(),
            "sessions": _sessions_status(svc, config),
            "config": None if svc.reloader is None else svc.reloader.status(problems=False),
            "warnings": warnings,
            "shared_health": None if shared is None else shared.status(),
        }
    )


def _share(admission: Admission | None) -> dict[str, object]:
    if admission is None:
        return {"share": 1.0, "held": None, "why": None}
    return {
        "share": round(admission.share, 4),
        "held": admission.held.value,
        "why": admission.why,
    }


def _verdict(agreement: Agreement, name: str) -> dict[str, object]:
    if name in agreement.down:
        verdict, why = "down", agreement.down[name]
    elif name in agreement.here_only:
        verdict, why = "down_from_here", agreement.here_only[name]
    else:
        verdict, why = "up", None
    views = agreement.views.get(name, ())
    return {"verdict": verdict, "why": why, "edges": [v.as_json() for v in views]}


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
    body, content_type = exposition.render(request)
    return Response(body, headers={"content-type": content_type})


async def openapi_json(request: Request) -> Response:
    # What this edge accepts: with session keys set, a query id must be signed
    # unless the operator lets it in unsigned.
    svc = services(request)
    unsigned = svc.runtime.config.sessions.unsigned_sources
    query_signed = svc.signer is not None and SessionSource.QUERY not in unsigned
    return JSON(openapi.spec_for(query_signed=query_signed))
