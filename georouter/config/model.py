"""The configuration as frozen dataclasses: what ``clusters.toml`` means once validated."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from georouter.config.redisurl import RedisTarget

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Clusters one configuration may name: the shared health board has room for this many.
MAX_CLUSTERS = 1024


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
    # How often a running edge looks for a changed config file (0: only on SIGHUP
    # or POST /v1/config/reload).
    watch_config_s: float = 2.0


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
    # Besides `fall` failures in a row: `window_fall` failures among the last
    # `window` probes take an up cluster down (gdnsd's down counter), so a
    # cluster that fails every other probe does not stay up. window = 0: off.
    window: int = 10
    window_fall: int = 5
    # What a healthy answer is: one of these statuses (empty: any 2xx), and a
    # body containing `expect_body` (empty: any body).
    expect_status: tuple[int, ...] = ()
    expect_body: str = ""
    # The most of a probe's body that is read; a longer body fails the probe.
    max_body_bytes: int = 65536


class SessionSource(StrEnum):
    """Where a request may carry its session id."""

    QUERY = "query"
    HEADER = "header"
    COOKIE = "cookie"


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
    # With GEOROUTER_SESSION_KEYS set, ids from these sources are accepted
    # unsigned; every other source must carry `<id>.<signature>`.
    unsigned_sources: tuple[SessionSource, ...] = ()


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """What one client or one request may cost an edge, whichever server runs it."""

    # Request line excluded: the headers' names and values, in bytes, and their count.
    header_bytes: int = 16384
    header_count: int = 100
    body_bytes: int = 1 << 20
    # From a connection's first byte (or its last response) to a request's last
    # header, and from there to the request's last body byte.
    header_timeout_s: float = 5.0
    request_deadline_s: float = 10.0
    # Requests in progress per process; beyond it a 503 and the connection closes.
    max_in_flight: int = 1000
    # New sessions one client address may start (IPv6 by /64): a token bucket of
    # `new_sessions_burst` refilled at `new_sessions_per_s`. 0: no limit.
    new_sessions_per_s: float = 20.0
    new_sessions_burst: int = 200
    # Wrong admin tokens one address may present within `admin_lockout_s` before
    # it is refused with 429 until the window has passed.
    admin_failures: int = 10
    admin_lockout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Config:
    clusters: tuple[Cluster, ...]
    router: RouterSettings
    geoip: GeoipSettings = field(default_factory=GeoipSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    sessions: SessionSettings = field(default_factory=SessionSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
