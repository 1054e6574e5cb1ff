"""Admin operations on tenant homes: set, read, delete, list.

Called by ``admin.AdminApi`` once the request has shown the token. Run-time
homes live in Redis (``sessions.tenants``), so a home set at one edge holds at
every edge within a second; they win over ``[[tenants.homes]]``, and deleting
one lets the configured home, if any, apply again. Every change is logged
with what it was and the peer address it came from.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from georouter.core.tenants import TENANT_ID_RULE, describe, every_home, valid_tenant
from georouter.errors import ApiError, StoreUnavailable
from georouter.http.clusteradmin import peer, read_body, unavailable
from georouter.http.common import JSON, Services
from georouter.sessions.tenants import MAX_HOMES, TenantHomes

log = logging.getLogger(__name__)


def _tenant(request: Request) -> str:
    tenant: str = request.path_params["tenant_id"]
    if not valid_tenant(tenant):
        raise ApiError(
            400, "invalid_parameter", f"a tenant id is {TENANT_ID_RULE}", parameter="tenant_id"
        )
    return tenant


def _homes(svc: Services) -> TenantHomes:
    assert svc.tenants is not None, "the app always builds its tenant homes"
    return svc.tenants


def _described(svc: Services, tenant: str) -> dict[str, object]:
    rt = svc.runtime
    return describe(tenant, _homes(svc).homes, rt.homes, rt.clusters)


async def put_home(request: Request, svc: Services) -> Response:
    """``PUT /v1/tenants/ID`` ``{"cluster": "eu-west"}``."""
    tenant = _tenant(request)
    body = await read_body(request, frozenset({"cluster"}))
    cluster = body.get("cluster")
    if not isinstance(cluster, str):
        raise ApiError(400, "invalid_body", "cluster must be a cluster's name", field="cluster")
    if cluster not in svc.runtime.clusters:
        raise ApiError(404, "unknown_cluster", "no cluster has that name", cluster=cluster[:64])
    homes = _homes(svc)
    if tenant not in homes.homes and len(homes.homes) >= MAX_HOMES:
        raise ApiError(
            409, "too_many_homes", f"{MAX_HOMES} tenants have run-time homes; delete some first"
        )
    try:
        await homes.put(tenant, cluster, by=peer(request))
    except StoreUnavailable as exc:
        raise unavailable(exc) from exc
    log.warning("admin: tenant %s homed at cluster %s by %s", tenant, cluster, peer(request))
    return JSON(_described(svc, tenant))


async def get_home(request: Request, svc: Services) -> Response:
    """``GET /v1/tenants/ID``: its home, and whether it comes from the config or run time."""
    tenant = _tenant(request)
    found = _described(svc, tenant)
    if found["home"] is None:
        raise ApiError(404, "no_home", "that tenant has no home cluster", tenant=tenant)
    return JSON(found)


async def delete_home(request: Request, svc: Services) -> Response:
    """``DELETE /v1/tenants/ID``: the run-time home goes; a configured one applies again."""
    tenant = _tenant(request)
    try:
        was = await _homes(svc).delete(tenant)
    except StoreUnavailable as exc:
        raise unavailable(exc) from exc
    log.warning(
        "admin: run-time home of tenant %s deleted by %s (was set: %s)", tenant, peer(request), was
    )
    return JSON({**_described(svc, tenant), "was_set": was})


async def list_homes(request: Request, svc: Services) -> Response:
    """``GET /v1/tenants``: every tenant with a home, run-time or configured."""
    rt = svc.runtime
    return JSON({"tenants": every_home(_homes(svc).homes, rt.homes, rt.clusters)})
