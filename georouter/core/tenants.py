"""Tenant homes: which cluster a tenant's requests go to, and where that comes from. Pure.

A tenant (one customer account) may have a home cluster from the configuration
(``[[tenants.homes]]``) or set at run time through the admin API, kept in Redis
for every edge. The run-time home wins; one naming a cluster the running
configuration no longer has (a reload removed it) is ignored, so the
configured home, if any, holds instead, and the listing says why.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum

from georouter.config.model import TENANT_ID_PATTERN

_TENANT_ID = re.compile(TENANT_ID_PATTERN)
TENANT_ID_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def valid_tenant(raw: str) -> bool:
    """Whether ``raw`` may be a tenant id (``[tenants]``, the admin API, Redis)."""
    return _TENANT_ID.fullmatch(raw) is not None


class HomeSource(StrEnum):
    """Where a tenant's home comes from."""

    CONFIG = "config"
    RUNTIME = "runtime"


@dataclass(frozen=True, slots=True)
class StoredHome:
    """A home set through the admin API, as every edge reads it from Redis."""

    cluster: str
    # Unix seconds, and the peer address that set it.
    since: float = 0.0
    by: str = ""


@dataclass(frozen=True, slots=True)
class TenantView:
    """A tenant as one request (or the listing) sees it: its home, where the home
    comes from, and why it does not lead the ranking, if it does not."""

    tenant: str
    home: str | None = None
    source: HomeSource | None = None
    # "" while the home holds (or there is none).
    ignored: str = ""

    @property
    def applied(self) -> bool:
        return self.home is not None and not self.ignored

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "id": self.tenant,
            "home": self.home,
            "source": None if self.source is None else self.source.value,
            "applied": self.applied,
        }
        if self.ignored:
            body["ignored"] = self.ignored
        return body


def find_home(
    tenant: str,
    stored: Mapping[str, StoredHome],
    configured: Mapping[str, str],
    clusters: Collection[str],
) -> TenantView:
    """The home of ``tenant``: its run-time one if it names one of ``clusters``, else
    its configured one (always a configured cluster: the file was validated)."""
    found = stored.get(tenant)
    if found is not None and found.cluster in clusters:
        return TenantView(tenant, found.cluster, HomeSource.RUNTIME)
    home = configured.get(tenant)
    if home is not None:
        return TenantView(tenant, home, HomeSource.CONFIG)
    if found is not None:
        why = f"{found.cluster!r} is not a configured cluster (a reload removed it?)"
        return TenantView(tenant, found.cluster, HomeSource.RUNTIME, ignored=why)
    return TenantView(tenant)


def describe(
    tenant: str,
    stored: Mapping[str, StoredHome],
    configured: Mapping[str, str],
    clusters: Collection[str],
) -> dict[str, object]:
    """What the admin API says of one tenant: the home that holds, and both sources."""
    body = find_home(tenant, stored, configured, clusters).as_json()
    found = stored.get(tenant)
    runtime: dict[str, object] | None = None
    if found is not None:
        runtime = {"cluster": found.cluster, "since": found.since, "by": found.by}
        if found.cluster not in clusters:
            runtime["ignored"] = "not a configured cluster"
    body["runtime"] = runtime
    body["config"] = configured.get(tenant)
    return body


def every_home(
    stored: Mapping[str, StoredHome],
    configured: Mapping[str, str],
    clusters: Collection[str],
) -> list[dict[str, object]]:
    """Every tenant with a home, by id, as ``GET /v1/tenants`` lists them."""
    return [
        describe(tenant, stored, configured, clusters) for tenant in sorted({*stored, *configured})
    ]
