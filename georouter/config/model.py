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
    # Subtracted from a client's distance to this cluster when ranking: positive
    # grows its catchment, negative shrinks it (Route 53 geoproximity bias).
    bias_km: float = 0.0
    # Its share of new sessions among clusters within `router.tie_km` of the nearest.
    weight: float = 1.0


# MaxMind's continent codes, as the GeoIP2 record's `continent.code` gives them.
CONTINENTS = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})


@dataclass(frozen=True, slots=True)
class Rule:
    """A residency rule: clients it matches (by country, continent or address; any
    of them) go to its clusters, only (``strict``) or first."""

    name: str
    clusters: tuple[str, ...]
    strict: bool = False
    countries: frozenset[str] = frozenset()
    continents: frozenset[str] = frozenset()
    cidrs: tuple[Network, ...] = ()


@dataclass(frozen=True, slots=True)
class Override:
    """A network whose location the GeoIP database gets wrong: its clients are at
    ``cluster`` (ranked from it, it first) or at ``lat``/``lon``. ``country`` and
    ``continent``, if either is set, replace the database's for the residency rules."""

    cidr: Network
    cluster: str | None = None
    lat: float | None = None
    lon: float | None = None
    country: str | None = None
    continent: str | None = None


class RouterMode(StrEnum):
    """What an edge does with a request: answer where it should go, or take it there."""

    # The routing API only (`GET /v1/route`): the caller carries the request.
    API = "api"
    # Every request but the router's own is the application's, streamed to its cluster.
    PROXY = "proxy"
    # Every request but the router's own is answered 307 to its cluster.
    REDIRECT = "redirect"


# Where the router's own endpoints live in proxy and redirect modes, so they never
# shadow an application path.
DATA_PATH_API_PREFIX = "/_georouter"


class PinnedDown(StrEnum):
    """What a session pinned to a cluster that is down gets."""

    # Moved to the cluster a new session would get, for good (`failover`).
    REPIN = "repin"
    # Served there, its pin kept: home again once the cluster is back (`detour`).
    TEMPORARY = "temporary"
    # A 503: for applications that cannot move a session (`pinned_down`).
    STRICT = "strict"


class AllDown(StrEnum):
    """What a client gets when no cluster it may go to is routable."""

    # A 503 naming why each cluster was passed over.
    REFUSE = "503"
    # The fallback cluster (or the first its rule allows), whatever its health.
    FALLBACK = "fallback"
    # The cluster it would get if every cluster were healthy.
    IGNORE_HEALTH = "ignore_health"


@dataclass(frozen=True, slots=True)
class RouterSettings:
    fallback: str
    mode: RouterMode = RouterMode.API
    # "" in api mode; DATA_PATH_API_PREFIX unless set in proxy and redirect modes.
    api_prefix: str = ""
    # Proxy and redirect modes: the router's endpoints on an address of their own
    # (HOST:PORT), and every request on the main one the application's.
    admin_listen: str | None = None
    trusted_proxies: tuple[Network, ...] = ()
    client_ip_header: ClientIpHeader = ClientIpHeader.X_FORWARDED_FOR
    max_forwarded_hops: int = 20
    # How often a running edge looks for a changed config file (0: only on SIGHUP
    # or POST /v1/config/reload).
    watch_config_s: float = 2.0
    # Clusters whose biased distances are within this of the nearest share its new
    # sessions by `weight` (0: off, the nearest takes them all).
    tie_km: float = 0.0
    on_pinned_down: PinnedDown = PinnedDown.REPIN
    all_down: AllDown = AllDown.REFUSE
    # Fewer than this share of the clusters routable: health is ignored (Envoy's
    # panic threshold), as if all were up (0: never).
    panic_below: float = 0.0
    # A cluster reporting a load above `spill_low` takes a shrinking share of new
    # sessions, none above `spill_high`; the rest go on to the next cluster.
    spill_low: float = 0.8
    spill_high: float = 0.95
    # When the nearest cluster takes no new sessions (down, draining, full), they
    # spread over the routable clusters within this of the next one, in proportion
    # to weight times headroom (1 - load), not all onto that one (0: off).
    failover_spread_km: float = 0.0


@dataclass(frozen=True, slots=True)
class GeoipSettings:
    # None: the GeoLite2 City snapshot shipped by the maxminddb-geolite2 package.
    database: Path | None = None
    max_age_days: int = 30
    cache_networks: int = 65536
    # How often a running edge looks for a new file at `database` (0: never); a new
    # one is validated and swapped in without a restart.
    watch_s: float = 5.0
    # Where an edge downloads a fresh `database` from (a .mmdb, .mmdb.gz or .tar.gz)
    # every `update_interval_h`, with the same code as `georouter geodata update`.
    update_url: str | None = None
    # A file whose first word is the download's SHA-256 (MaxMind's `.sha256`).
    update_sha256_url: str | None = None
    update_interval_h: float = 24.0
    # A location less precise than this (its accuracy radius, km) is a country-level
    # guess: not ranked as if its point were the client's.
    max_accuracy_km: float = 500.0


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
    # Passive health (Envoy's outlier detection): this many connection errors or
    # 5xx answers in a row on the data path eject a cluster (0: off) for
    # `ejection_s`, doubled on each repeat up to `max_ejection_s`; at most
    # `max_ejected_share` of the clusters are ejected at once.
    passive_failures: int = 5
    ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejected_share: float = 0.5
    # Failback: a cluster back up after being down takes no new sessions for
    # `stabilize_s`, then a share ramping from 5% to all over `ramp_s` (0: at once).
    stabilize_s: float = 0.0
    ramp_s: float = 0.0
    # Shared health: every edge publishes its probe results to Redis, and a cluster
    # is down for routing only when at least `quorum` of the edges that reported in
    # the last `shared_window` intervals see it down; one only some edges cannot
    # reach is "down from here" at those edges alone.
    shared: bool = False
    quorum: float = 0.5
    shared_window: int = 3


class SessionSource(StrEnum):
    """Where a request may carry its session id."""

    QUERY = "query"
    HEADER = "header"
    COOKIE = "cookie"


@dataclass(frozen=True, slots=True)
class LearnedSource:
    """An id the application issues (``cookie:JSESSIONID``, ``header:Mcp-Session-Id``):
    pinned to the cluster whose response carried it, and followed on later requests."""

    source: SessionSource
    # A cookie's name as written; a header's in lower case.
    name: str

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


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
    # A query parameter that carries the session id on the data path (frameworks
    # such as Seaside keep theirs in the URL); None: not read.
    query: str | None = None
    # The router's own cookie is `Secure` unless a plain-HTTP setup turns it off.
    cookie_secure: bool = True
    # Application-issued ids that keep a session on the cluster that issued them; with
    # any set, the router issues no cookie of its own.
    learn: tuple[LearnedSource, ...] = ()
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
class ProxySettings:
    """The data path in proxy mode: how requests reach a cluster, and what they may cost."""

    # The client's Host header reaches the cluster (else the cluster URL's host).
    preserve_host: bool = True
    # Further clusters tried when one cannot be reached (before any request byte
    # was sent, or for an idempotent request whose body is kept).
    retries: int = 1
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 60.0
    write_timeout_s: float = 60.0
    pool_timeout_s: float = 5.0
    # Connections per edge process, all clusters together, and idle ones kept.
    max_connections: int = 512
    max_keepalive: int = 128
    # The largest request body passed on (counted as it streams; chunked too).
    max_body_bytes: int = 1 << 30
    # The longest wait for the client's next body bytes (nginx's client_body_timeout);
    # proxied bodies have no total deadline, so a big upload may take its time.
    body_idle_s: float = 30.0
    # A request body up to this size is kept, so a cluster's replay hint can send
    # the request to another cluster (and a failed idempotent request be retried).
    replay_body_bytes: int = 64 * 1024
    # A WebSocket's handshake with its cluster, and the largest message relayed.
    websocket_open_timeout_s: float = 10.0
    websocket_max_message_bytes: int = 16 << 20


# What a tenant id may be, wherever it is given (a header, a cookie, the admin API's
# path, a Redis field): short, and safe in a URL path and a log line as it is.
TENANT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


@dataclass(frozen=True, slots=True)
class TenantHome:
    """A tenant (customer account) whose requests go to its own ``cluster``."""

    tenant: str
    cluster: str


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """Where a request names its tenant, and the homes the file gives (the admin
    API's, kept in Redis, win over these)."""

    # A header's name in lower case; None: not read.
    header: str | None = None
    cookie: str | None = None
    homes: tuple[TenantHome, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    clusters: tuple[Cluster, ...]
    router: RouterSettings
    geoip: GeoipSettings = field(default_factory=GeoipSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    sessions: SessionSettings = field(default_factory=SessionSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    rules: tuple[Rule, ...] = ()
    overrides: tuple[Override, ...] = ()
    tenants: TenantSettings = field(default_factory=TenantSettings)
