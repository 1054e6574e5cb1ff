"""The configuration as frozen dataclasses: what ``clusters.toml`` means once validated."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from georouter.config.redisurl import RedisTarget

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientIpHeader(StrEnum):
    """Which forwarding header a trusted proxy sets.

    Only one is read, never "whichever is present": a trusted proxy that
    appends to ``X-Forwarded-For`` passes a client's own ``Forwarded`` header
    through untouched, so reading both would let any client choose its address.
    """

    X_FORWARDED_FOR = "x-forwarded-for"
    FORWARDED = "forwarded"


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    url: str
    lat: float
    lon: float
    health_url: str | None = None


@dataclass(frozen=True, slots=True)
class RouterSettings:
    fallback: str
    trusted_proxies: tuple[Network, ...] = ()
    client_ip_header: ClientIpHeader = ClientIpHeader.X_FORWARDED_FOR
    max_forwarded_hops: int = 20


@dataclass(frozen=True, slots=True)
class GeoipSettings:
    # None: the GeoLite2 City snapshot shipped by the maxminddb-geolite2 package.
    database: Path | None = None
    max_age_days: int = 30
    cache_networks: int = 65536


@dataclass(frozen=True, slots=True)
class HealthSettings:
    path: str = "/healthz"
    interval_s: float = 5.0
    timeout_s: float = 2.0
    rise: int = 2
    fall: int = 3


@dataclass(frozen=True, slots=True)
class SessionSettings:
    # None: `georouter serve` starts a private redis-server (the embedded default).
    redis: RedisTarget | None = None
    key_prefix: str = "georouter"
    ttl_s: float = 1800.0
    # Hard cap on a session's life however active it is; 0: no cap.
    max_ttl_s: float = 86400.0
    cookie: str = "georouter_session"
    header: str = "x-session-id"
    connect_timeout_s: float = 0.05
    command_timeout_s: float = 0.05
    pool_size: int = 64
    local_cache_size: int = 100_000
    retry_interval_s: float = 1.0
    # How long a pin read from Redis is used without asking again; changes made by
    # other edges still reach it at once through the invalidation channel. 0: off.
    near_cache_s: float = 30.0
    # The embedded redis-server keeps its append-only file here.
    state_dir: Path = Path("state")


@dataclass(frozen=True, slots=True)
class Config:
    clusters: tuple[Cluster, ...]
    router: RouterSettings
    geoip: GeoipSettings = field(default_factory=GeoipSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    sessions: SessionSettings = field(default_factory=SessionSettings)
