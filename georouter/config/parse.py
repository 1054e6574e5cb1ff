"""Configuration: ``clusters.toml`` into the frozen dataclasses of ``model``.

``load(path)`` reads the file; ``parse(mapping)`` is pure and validates the
whole document at once, so one run of ``georouter check`` reports every
problem, each named by its key path (``clusters[2].lat: must be within
-90..90``). Unknown keys are errors: a typo must never be silently ignored.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from georouter.config.model import (
    MAX_CLUSTERS,
    ClientIpHeader,
    Cluster,
    Config,
    GeoipSettings,
    HealthSettings,
    LimitsSettings,
    Network,
    RouterSettings,
    SessionSettings,
    SessionSource,
)
from georouter.config.redisurl import RedisTarget, parse_redis_url
from georouter.errors import ConfigError, Problem

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)

# A key TOML lets stand unquoted; any other is shown quoted, its control
# characters escaped, so a problem's path cannot rewrite the operator's terminal.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


class _Section:
    """Reads one table, recording a problem per bad key and rejecting unknown keys."""

    def __init__(self, table: Any, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        # Keys whose value was refused: a rule relating keys is judged only without them.
        self.refused: set[str] = set()
        if isinstance(table, Mapping):
            self.table: Mapping[str, Any] = table
        else:
            self.table = {}
            self.problem("", "must be a table")

    def key(self, name: str) -> str:
        shown = name if _BARE_KEY.fullmatch(name) else _shown(name)
        return f"{self.path}.{shown}" if self.path else shown

    def problem(self, name: str, message: str) -> None:
        self.problems.append(Problem(self.key(name) if name else self.path, message))

    def get(
        self, name: str, kind: Callable[[Any], T | str], default: T, *, required: bool = False
    ) -> T:
        """The value of ``name`` checked by ``kind``, which returns a value or an error text."""
        self.seen.add(name)
        if name not in self.table:
            if required:
                self.problem(name, "is required")
            return default
        result = kind(self.table[name])
        if isinstance(result, _Error):
            self.problem(name, str(result))
            self.refused.add(name)
            return default
        return result  # type: ignore[return-value]

    def valid(self, *names: str) -> bool:
        """Whether none of ``names`` was refused (each is its value or its default)."""
        return not self.refused.intersection(names)

    def finish(self) -> None:
        for name in self.table:
            if name not in self.seen:
                self.problem(name, "unknown key")


class _Error(str):
    """An error text, distinguishable from a valid string value."""


def _shown(value: str, limit: int = 80) -> str:
    """``value`` quoted for a message: control characters escaped, a long one cut short."""
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


def _string(value: Any) -> str | _Error:
    if not isinstance(value, str):
        return _Error(f"must be a string, not {_type_name(value)}")
    return value


def _boolean(value: Any) -> bool | _Error:
    if not isinstance(value, bool):
        return _Error(f"must be true or false, not {_type_name(value)}")
    return value


def _path_text(value: Any) -> str | _Error:
    """A file or folder name: a string the operating system can take."""
    if not isinstance(value, str):
        return _Error(f"must be a string, not {_type_name(value)}")
    if "\0" in value:
        return _Error(f"must not contain a NUL character: {_shown(value)}")
    return value


def _user_path(text: str, base_dir: Path | None) -> Path | _Error:
    """``text`` with ``~`` expanded, relative to ``base_dir``."""
    try:
        path = Path(text).expanduser()
    except RuntimeError as exc:  # "~nobody/..." or no home directory
        return _Error(f"cannot expand '~' in {_shown(text)} ({exc})")
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def _clusters_array(value: Any) -> list[Any] | _Error:
    if not isinstance(value, list) or not value:
        return _Error("must be a non-empty array of [[clusters]] tables")
    if len(value) > MAX_CLUSTERS:
        return _Error(f"holds {len(value)} clusters; at most {MAX_CLUSTERS}")
    return value


def _matching(pattern: str, rule: str) -> Callable[[Any], str | _Error]:
    """A string matching ``pattern`` in full; otherwise "<rule>, not '<value>'"."""
    compiled = re.compile(pattern)

    def check(value: Any) -> str | _Error:
        if not isinstance(value, str):
            return _Error(f"must be a string, not {_type_name(value)}")
        if not compiled.fullmatch(value):
            return _Error(f"{rule}, not {_shown(value)}")
        return value

    return check


_cluster_name = _matching(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", "must be 1-63 letters, digits, '.', '_' or '-'"
)
_key_prefix = _matching(
    r"[A-Za-z0-9._:-]{1,64}", "must be 1-64 letters, digits, '.', '_', ':' or '-'"
)
# An HTTP token (RFC 9110), as cookie and header names must be.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}"


def _real(value: Any) -> float | _Error:
    """A TOML integer or float as a float (an integer too large for one is infinite)."""
    # bool is an int in Python; `lat = true` is a typo, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _Error(f"must be a number, not {_type_name(value)}")
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _number(low: float, high: float) -> Callable[[Any], float | _Error]:
    def check(value: Any) -> float | _Error:
        number = _real(value)
        if isinstance(number, _Error):
            return number
        if not math.isfinite(number) or not low <= number <= high:
            return _Error(f"must be within {_fmt(low)}..{_fmt(high)}")
        return number

    return check


def _positive(value: Any) -> float | _Error:
    number = _real(value)
    if isinstance(number, _Error):
        return number
    if not math.isfinite(number) or number <= 0:
        return _Error("must be greater than 0")
    return number


def _seconds(low: float, high: float, why: str) -> Callable[[Any], float | _Error]:
    """A positive number of seconds within ``low..high``; ``why`` explains the minimum."""

    def check(value: Any) -> float | _Error:
        number = _positive(value)
        if isinstance(number, _Error):
            return number
        if number < low:
            return _Error(f"must be at least {_fmt(low)}: {why}")
        if number > high:
            return _Error(f"must be at most {_fmt(high)}")
        return number

    return check


def _count(low: int, high: int) -> Callable[[Any], int | _Error]:
    def check(value: Any) -> int | _Error:
        if isinstance(value, bool) or not isinstance(value, int):
            return _Error(f"must be an integer, not {_type_name(value)}")
        if not low <= value <= high:
            return _Error(f"must be within {low}..{high}")
        return value

    return check


def _url(value: Any) -> str | _Error:
    if not isinstance(value, str):
        return _Error(f"must be a string, not {_type_name(value)}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return _Error(f"is not a valid URL ({exc})")
    if parts.scheme not in ("http", "https"):
        return _Error(f"must be an http:// or https:// URL, not {_shown(value)}")
    if "@" in parts.netloc:
        # Not echoed: the value holds a secret. A cluster's URL is sent to clients.
        return _Error(
            "must not contain a user or password ('user:password@'):"
            " the URL is sent to clients as their cluster's url"
        )
    if not parts.hostname:
        return _Error(f"has no host: {_shown(value)}")
    if port == 0:
        return _Error(f"has port 0: {_shown(value)}")
    if parts.query or parts.fragment:
        return _Error(f"must not have a query or fragment: {_shown(value)}")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return _Error(f"must not contain whitespace or control characters: {_shown(value)}")
    return value.rstrip("/")


def _http_path(value: Any) -> str | _Error:
    if not isinstance(value, str):
        return _Error(f"must be a string, not {_type_name(value)}")
    if not value.startswith("/") or any(ch.isspace() or not ch.isprintable() for ch in value):
        return _Error(f"must be a path starting with '/', not {_shown(value)}")
    return value


def _networks(value: Any) -> tuple[Network, ...] | _Error:
    if not isinstance(value, list):
        return _Error(f"must be a list of CIDR strings, not {_type_name(value)}")
    nets: list[Network] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            return _Error(f"[{i}] must be a CIDR string, not {_type_name(item)}")
        try:
            net = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            return _Error(f"[{i}] is not an IP address or CIDR: {_shown(item)}")
        if net.network_address != ipaddress.ip_interface(item.strip()).ip:
            # "10.0.0.1/8" is ambiguous: one proxy (a /32 was meant) or the whole network.
            return _Error(f"[{i}] has host bits set: {_shown(item)} (did you mean {str(net)!r}?)")
        # A mapped IPv6 range would never match: peers are normalised to IPv4 first.
        if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped:
            v4 = net.network_address.ipv4_mapped
            net = ipaddress.IPv4Network(f"{v4}/{max(net.prefixlen - 96, 0)}", strict=False)
        nets.append(net)
    return tuple(nets)


def _choice(enum: type[E]) -> Callable[[Any], E | _Error]:
    def check(value: Any) -> E | _Error:
        allowed = ", ".join(repr(m.value) for m in enum)
        if not isinstance(value, str):
            return _Error(f"must be one of {allowed}, not {_type_name(value)}")
        try:
            return enum(value)
        except ValueError:
            return _Error(f"must be one of {allowed}, not {_shown(value)}")

    return check


def _choices(enum: type[E]) -> Callable[[Any], tuple[E, ...] | _Error]:
    """An array of distinct ``enum`` values."""
    one = _choice(enum)

    def check(value: Any) -> tuple[E, ...] | _Error:
        if not isinstance(value, list):
            return _Error(f"must be an array, not {_type_name(value)}")
        chosen: list[E] = []
        for i, item in enumerate(value):
            result = one(item)
            if isinstance(result, _Error):
                return _Error(f"[{i}] {result}")
            if result in chosen:
                return _Error(f"[{i}] repeats {result.value!r}")
            chosen.append(result)
        return tuple(chosen)

    return check


def _statuses(value: Any) -> tuple[int, ...] | _Error:
    """HTTP status codes, 100..599."""
    if not isinstance(value, list):
        return _Error(f"must be an array of HTTP status codes, not {_type_name(value)}")
    codes: list[int] = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int):
            return _Error(f"[{i}] must be an integer, not {_type_name(item)}")
        if not 100 <= item <= 599:
            return _Error(f"[{i}] must be an HTTP status code within 100..599")
        codes.append(item)
    return tuple(codes)


def _type_name(value: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def _parse_cluster(table: Any, path: str, problems: list[Problem]) -> Cluster | None:
    s = _Section(table, path, problems)
    before = len(problems)
    name = s.get("name", _cluster_name, "", required=True)
    url = s.get("url", _url, "", required=True)
    lat = s.get("lat", _number(-90, 90), 0.0, required=True)
    lon = s.get("lon", _number(-180, 180), 0.0, required=True)
    health_url = s.get("health_url", _url, None)
    s.finish()
    if len(problems) > before:
        return None
    return Cluster(name=name, url=url, lat=lat, lon=lon, health_url=health_url)


def parse(document: Mapping[str, Any], *, base_dir: Path | None = None) -> Config:
    """Validate a decoded TOML document; raise ``ConfigError`` listing every problem.

    Relative file paths are resolved against ``base_dir`` (the config file's folder).
    """
    problems: list[Problem] = []
    top = _Section(document, "", problems)

    clusters: list[Cluster] = []
    # Every name written, valid entry or not, so a duplicate or a fallback is
    # judged against what the operator wrote rather than what survived validation.
    names_at: dict[str, int] = {}
    raw_clusters: list[Any] = top.get("clusters", _clusters_array, [], required=True)
    for i, raw in enumerate(raw_clusters):
        path = f"clusters[{i}]"
        cluster = _parse_cluster(raw, path, problems)
        name = raw.get("name") if isinstance(raw, Mapping) else None
        if isinstance(name, str) and name in names_at:
            first = f"clusters[{names_at[name]}]"
            message = f"duplicate name {_shown(name)} (first at {first})"
            problems.append(Problem(f"{path}.name", message))
            continue
        if isinstance(name, str):
            names_at[name] = i
        if cluster is not None:
            clusters.append(cluster)

    r = _Section(document.get("router", {}), "router", problems)
    top.seen.add("router")
    default_fallback = clusters[0].name if clusters else ""
    fallback = r.get("fallback", _string, default_fallback)
    if "fallback" in r.table and isinstance(r.table["fallback"], str) and fallback not in names_at:
        known = ", ".join(names_at) or "none"
        r.problem("fallback", f"names no cluster: {_shown(fallback)} (clusters: {known})")
    no_proxies: tuple[Network, ...] = ()
    trusted_proxies = r.get("trusted_proxies", _networks, no_proxies)
    # Only an acknowledgement: RouterSettings keeps no field for it.
    if not r.get("trust_all_proxies", _boolean, False):
        for i, net in enumerate(trusted_proxies):
            # Wider than a /8 (v4) or /16 (v6): a sum of such halves is "everyone" too.
            if net.prefixlen < (8 if net.version == 4 else 16):
                whom = (
                    "every peer"
                    if net.prefixlen == 0
                    else f"2^{net.max_prefixlen - net.prefixlen} addresses"
                )
                r.problem(
                    "trusted_proxies",
                    f"[{i}] {str(net)!r} trusts {whom}, so nearly any client could choose"
                    " its own address; if every peer in it really is a proxy, set"
                    " trust_all_proxies = true",
                )
    router = RouterSettings(
        fallback=fallback,
        trusted_proxies=trusted_proxies,
        client_ip_header=r.get(
            "client_ip_header", _choice(ClientIpHeader), ClientIpHeader.X_FORWARDED_FOR
        ),
        max_forwarded_hops=r.get("max_forwarded_hops", _count(1, 100), 20),
        watch_config_s=r.get("watch_config_s", _number(0, 3600), 2.0),
    )
    r.finish()

    g = _Section(document.get("geoip", {}), "geoip", problems)
    top.seen.add("geoip")
    database = g.get("database", _path_text, "")
    db_path: Path | None = None
    if database:
        found = _user_path(database, base_dir)
        if isinstance(found, _Error):
            g.problem("database", found)
        else:
            db_path = found
    geoip = GeoipSettings(
        database=db_path,
        max_age_days=g.get("max_age_days", _count(1, 36500), 30),
        cache_networks=g.get("cache_networks", _count(0, 10_000_000), 65536),
    )
    g.finish()

    health = _parse_health(document.get("health", {}), problems)
    top.seen.add("health")

    sessions = _parse_sessions(
        document.get("sessions", {}), problems, base_dir, router.client_ip_header
    )
    top.seen.add("sessions")

    limits = _parse_limits(document.get("limits", {}), problems)
    top.seen.add("limits")

    top.finish()
    if problems:
        raise ConfigError(problems)
    return Config(
        clusters=tuple(clusters),
        router=router,
        geoip=geoip,
        health=health,
        sessions=sessions,
        limits=limits,
    )


def _parse_health(table: Any, problems: list[Problem]) -> HealthSettings:
    h = _Section(table, "health", problems)
    defaults = HealthSettings()
    interval_s = h.get(
        "interval_s",
        _seconds(0.05, 86400, "probing faster only loads the clusters"),
        defaults.interval_s,
    )
    timeout_s = h.get(
        "timeout_s",
        _seconds(0.01, 86400, "even a cluster on loopback may not answer faster"),
        defaults.timeout_s,
    )
    if h.valid("interval_s", "timeout_s") and timeout_s > interval_s:
        h.problem(
            "timeout_s",
            f"must be at most interval_s ({_fmt(interval_s)}):"
            " a probe must finish before the next is due",
        )
    # 64: the shared health board keeps a cluster's window in one 64-bit word
    # (core.health.MAX_WINDOW, which this layer cannot import).
    window = h.get("window", _count(0, 64), defaults.window)
    window_fall = h.get("window_fall", _count(1, 64), defaults.window_fall)
    if h.valid("window", "window_fall") and window and window_fall > window:
        unset = "" if "window_fall" in h.table else f" (window_fall is {window_fall} unless set)"
        h.problem("window_fall", f"must be at most window ({window}){unset}")
    max_body_bytes = h.get("max_body_bytes", _count(1, 16 << 20), defaults.max_body_bytes)
    expect_body = h.get("expect_body", _string, defaults.expect_body)
    if len(expect_body) > 1024:
        h.problem("expect_body", f"must be at most 1024 characters, not {len(expect_body)}")
    elif (
        h.valid("max_body_bytes")
        and len(expect_body.encode("utf-8", "surrogatepass")) > max_body_bytes
    ):
        h.problem(
            "expect_body",
            f"is longer in UTF-8 than max_body_bytes ({max_body_bytes}), so no body could hold it",
        )
    settings = HealthSettings(
        path=h.get("path", _http_path, defaults.path),
        interval_s=interval_s,
        timeout_s=timeout_s,
        rise=h.get("rise", _count(1, 1000), defaults.rise),
        fall=h.get("fall", _count(1, 1000), defaults.fall),
        window=window,
        window_fall=window_fall,
        expect_status=h.get("expect_status", _statuses, defaults.expect_status),
        expect_body=expect_body,
        max_body_bytes=max_body_bytes,
    )
    h.finish()
    return settings


def _parse_limits(table: Any, problems: list[Problem]) -> LimitsSettings:
    lim = _Section(table, "limits", problems)
    d = LimitsSettings()
    per_s = lim.get("new_sessions_per_s", _number(0, 1_000_000), d.new_sessions_per_s)
    burst = lim.get("new_sessions_burst", _count(0, 10_000_000), d.new_sessions_burst)
    if lim.valid("new_sessions_per_s") and per_s > 0 and burst == 0:
        lim.problem(
            "new_sessions_burst",
            f"is 0, which turns the limit off although new_sessions_per_s is {_fmt(per_s)};"
            " set new_sessions_per_s = 0 to mean no limit",
        )
    settings = LimitsSettings(
        header_bytes=lim.get("header_bytes", _count(1024, 1 << 20), d.header_bytes),
        header_count=lim.get("header_count", _count(10, 10_000), d.header_count),
        body_bytes=lim.get("body_bytes", _count(1, 1 << 30), d.body_bytes),
        header_timeout_s=lim.get("header_timeout_s", _number(0.1, 300), d.header_timeout_s),
        request_deadline_s=lim.get("request_deadline_s", _number(0.1, 3600), d.request_deadline_s),
        max_in_flight=lim.get("max_in_flight", _count(1, 1_000_000), d.max_in_flight),
        new_sessions_per_s=per_s,
        new_sessions_burst=burst,
        admin_failures=lim.get("admin_failures", _count(0, 1_000_000), d.admin_failures),
        admin_lockout_s=lim.get("admin_lockout_s", _number(1, 86400), d.admin_lockout_s),
    )
    lim.finish()
    return settings


# Headers that already mean something to HTTP, a proxy or georouter: a session id
# there would be read from (or overwritten by) what another party put in it.
_HEADERS_TAKEN = frozenset(
    {
        "cookie",
        "set-cookie",
        "authorization",
        "proxy-authorization",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "via",
    }
)
# Kernel interfaces, never a place for the embedded redis-server's files.
_SYSTEM_DIRS = (Path("/proc"), Path("/sys"), Path("/dev"))
_LOCAL_CACHE_MIN = 1000


def _session_header(client_ip_header: ClientIpHeader) -> Callable[[Any], str | _Error]:
    token = _matching(_TOKEN, "must be a header name")

    def check(value: Any) -> str | _Error:
        name = token(value)
        if isinstance(name, _Error):
            return name
        name = name.lower()
        if name == client_ip_header.value:
            return _Error(f"{name!r} is router.client_ip_header; use a header of its own")
        if name in _HEADERS_TAKEN:
            return _Error(
                f"{name!r} already has a meaning in HTTP; use a header of its own,"
                " such as 'x-session-id'"
            )
        return name

    return check


def _state_dir(value: Any, base_dir: Path | None) -> Path | _Error:
    text = _path_text(value)
    if isinstance(text, _Error):
        return text
    path = _user_path(text, base_dir)
    if isinstance(path, _Error):
        return path
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        return _Error(f"cannot be resolved: {_shown(text)} ({exc})")
    for system in _SYSTEM_DIRS:
        if resolved == system or system in resolved.parents:
            return _Error(
                f"is inside {system} ({_shown(str(resolved))}), a kernel interface,"
                " not a folder for the session store's files"
            )
    return path


def _parse_sessions(
    table: Any,
    problems: list[Problem],
    base_dir: Path | None,
    client_ip_header: ClientIpHeader = ClientIpHeader.X_FORWARDED_FOR,
) -> SessionSettings:
    s = _Section(table, "sessions", problems)
    defaults = SessionSettings()
    ttl_s = s.get("ttl_s", _number(1, 365 * 86400), defaults.ttl_s)
    max_ttl_s = s.get("max_ttl_s", _number(0, 10 * 365 * 86400), defaults.max_ttl_s)
    if max_ttl_s and max_ttl_s < ttl_s:
        s.problem("max_ttl_s", f"must be 0 (no cap) or at least ttl_s ({_fmt(ttl_s)})")
    near_cache_s = s.get("near_cache_s", _number(0, 3600), defaults.near_cache_s)
    if near_cache_s >= ttl_s:
        s.problem("near_cache_s", f"must be less than ttl_s ({_fmt(ttl_s)}), so pins are renewed")
    # Not judged when unset: beside a config read from /dev/stdin it would be in /proc.
    default_state_dir = (base_dir or Path()) / defaults.state_dir
    state_dir = s.get("state_dir", lambda value: _state_dir(value, base_dir), default_state_dir)
    settings = SessionSettings(
        redis=s.get("redis_url", _redis_target, None),
        key_prefix=s.get("key_prefix", _key_prefix, defaults.key_prefix),
        ttl_s=ttl_s,
        max_ttl_s=max_ttl_s,
        cookie=s.get("cookie", _matching(_TOKEN, "must be a cookie name"), defaults.cookie),
        header=s.get("header", _session_header(client_ip_header), defaults.header),
        connect_timeout_s=s.get("connect_timeout_s", _number(0.001, 60), 0.05),
        command_timeout_s=s.get("command_timeout_s", _number(0.001, 60), 0.05),
        pool_size=s.get("pool_size", _count(1, 10_000), defaults.pool_size),
        local_cache_size=s.get("local_cache_size", _local_cache_size, defaults.local_cache_size),
        retry_interval_s=s.get("retry_interval_s", _number(0.01, 3600), 1.0),
        near_cache_s=near_cache_s,
        state_dir=state_dir,
        unsigned_sources=s.get(
            "unsigned_sources", _choices(SessionSource), defaults.unsigned_sources
        ),
    )
    s.finish()
    return settings


def _local_cache_size(value: Any) -> int | _Error:
    size = _count(0, 100_000_000)(value)
    if isinstance(size, _Error) or size >= _LOCAL_CACHE_MIN:
        return size
    # An entry costs memory only once a session uses it, so a small cap saves
    # nothing; it only drops sessions from the outage memory and the near cache.
    return _Error(
        f"must be within {_LOCAL_CACHE_MIN}..100000000: it is how many sessions this edge"
        " keeps sticky while Redis is away (and how many pins its near cache holds),"
        " and an entry costs memory only once a session uses it"
    )


def _redis_target(value: Any) -> RedisTarget | _Error:
    if not isinstance(value, str):
        return _Error(f"must be a string, not {_type_name(value)}")
    try:
        return parse_redis_url(value)
    except ValueError as exc:
        return _Error(str(exc))


def load(path: Path) -> Config:
    """Read and validate a ``clusters.toml`` file.

    Whatever the file holds, the outcome is a ``Config`` or a ``ConfigError``.
    """
    return load_version(path)[0]


def load_version(path: Path) -> tuple[Config, str]:
    """``load``, and the version of the file it read: the first 12 hex digits of
    the SHA-256 of exactly the bytes parsed (a file replaced meanwhile cannot
    give one file's config under another's version)."""
    try:
        with path.open("rb") as f:
            # Bounded: `--config /dev/zero` is an error, not all of memory.
            data = f.read(MAX_FILE_BYTES + 1)
        # The folder the operator named, links not followed: a Kubernetes ConfigMap's
        # file is a link into a directory that is replaced on every update.
        base_dir = path.absolute().parent
    except OSError as exc:
        raise ConfigError([Problem(str(path), f"cannot read: {exc.strerror or exc}")]) from exc
    except RuntimeError as exc:  # Path.resolve() in a symlink loop
        raise ConfigError([Problem(str(path), f"cannot read: {exc}")]) from exc
    if len(data) > MAX_FILE_BYTES:
        too_large = f"is larger than {MAX_FILE_BYTES >> 20} MiB; is it the right file?"
        raise ConfigError([Problem(str(path), too_large)])
    version = hashlib.sha256(data).hexdigest()[:12]
    return parse(_decode(data, str(path)), base_dir=base_dir), version


MAX_FILE_BYTES = 16 << 20
# CPython refuses to convert longer decimal strings to int (sys.get_int_max_str_digits).
_LONG_INTEGER = re.compile(r"[0-9][0-9_]{4299,}")


def _decode(data: bytes, where: str) -> dict[str, Any]:
    """The TOML document in ``data``; a ConfigError saying where it is broken."""

    def fail(message: str) -> ConfigError:
        return ConfigError([Problem(where, message)])

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise fail(
            f"is not UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start}"
            f" (line {line}, byte {column} of the line): {exc.reason}"
        ) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"invalid TOML: {exc}") from exc
    except RecursionError as exc:
        raise fail("invalid TOML: arrays or inline tables nested too deeply") from exc
    except ValueError as exc:
        # tomllib lets int()'s own errors through: an integer of over 4300 digits.
        for match in _LONG_INTEGER.finditer(text):
            digits = len(match.group().replace("_", ""))
            if digits > 4300:
                line = text.count("\n", 0, match.start()) + 1
                raise fail(
                    f"invalid TOML: an integer of {digits} digits (line {line});"
                    " no setting takes one of more than 4300"
                ) from exc
        raise fail(f"invalid TOML: {exc}") from exc
