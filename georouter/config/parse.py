"""Configuration: ``clusters.toml`` into the frozen dataclasses of ``model``.

``load(path)`` reads the file; ``parse(mapping)`` is pure and validates the
whole document at once, so one run of ``georouter check`` reports every
problem, each named by its key path (``clusters[2].lat: must be within
-90..90``). Unknown keys are errors: a typo must never be silently ignored.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from georouter.config.model import (
    ClientIpHeader,
    Cluster,
    Config,
    GeoipSettings,
    HealthSettings,
    Network,
    RouterSettings,
    SessionSettings,
)
from georouter.config.redisurl import RedisTarget, parse_redis_url
from georouter.errors import ConfigError, Problem

T = TypeVar("T")


class _Section:
    """Reads one table, recording a problem per bad key and rejecting unknown keys."""

    def __init__(self, table: Any, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        if isinstance(table, Mapping):
            self.table: Mapping[str, Any] = table
        else:
            self.table = {}
            self.problem("", "must be a table")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

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
            return default
        return result  # type: ignore[return-value]

    def finish(self) -> None:
        for name in self.table:
            if name not in self.seen:
                self.problem(name, "unknown key")


class _Error(str):
    """An error text, distinguishable from a valid string value."""


def _string(value: Any) -> str | _Error:
    if not isinstance(value, str):
        return _Error(f"must be a string, not {_type_name(value)}")
    return value


def _clusters_array(value: Any) -> list[Any] | _Error:
    if not isinstance(value, list) or not value:
        return _Error("must be a non-empty array of [[clusters]] tables")
    return value


def _matching(pattern: str, rule: str) -> Callable[[Any], str | _Error]:
    """A string matching ``pattern`` in full; otherwise "<rule>, not '<value>'"."""
    compiled = re.compile(pattern)

    def check(value: Any) -> str | _Error:
        if not isinstance(value, str):
            return _Error(f"must be a string, not {_type_name(value)}")
        if not compiled.fullmatch(value):
            return _Error(f"{rule}, not {value!r}")
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


def _number(low: float, high: float) -> Callable[[Any], float | _Error]:
    def check(value: Any) -> float | _Error:
        # bool is an int in Python; `lat = true` is a typo, not 1.0.
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _Error(f"must be a number, not {_type_name(value)}")
        if not math.isfinite(value) or not low <= value <= high:
            return _Error(f"must be within {_fmt(low)}..{_fmt(high)}")
        return float(value)

    return check


def _positive(value: Any) -> float | _Error:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _Error(f"must be a number, not {_type_name(value)}")
    if not math.isfinite(value) or value <= 0:
        return _Error("must be greater than 0")
    return float(value)


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
        return _Error(f"must be an http:// or https:// URL, not {value!r}")
    if not parts.hostname:
        return _Error(f"has no host: {value!r}")
    if port == 0:
        return _Error(f"has port 0: {value!r}")
    if parts.query or parts.fragment:
        return _Error(f"must not have a query or fragment: {value!r}")
    if any(ch.isspace() for ch in value):
        return _Error(f"must not contain whitespace: {value!r}")
    return value.rstrip("/")


def _http_path(value: Any) -> str | _Error:
    if not isinstance(value, str):
        return _Error(f"must be a string, not {_type_name(value)}")
    if not value.startswith("/") or any(ch.isspace() for ch in value):
        return _Error(f"must be a path starting with '/', not {value!r}")
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
            return _Error(f"[{i}] is not an IP address or CIDR: {item!r}")
        # A mapped IPv6 range would never match: peers are normalised to IPv4 first.
        if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped:
            v4 = net.network_address.ipv4_mapped
            net = ipaddress.IPv4Network(f"{v4}/{max(net.prefixlen - 96, 0)}", strict=False)
        nets.append(net)
    return tuple(nets)


def _choice(enum: type[ClientIpHeader]) -> Callable[[Any], ClientIpHeader | _Error]:
    def check(value: Any) -> ClientIpHeader | _Error:
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in enum)
            return _Error(f"must be one of {allowed}, not {value!r}")

    return check


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
            problems.append(Problem(f"{path}.name", f"duplicate name {name!r} (first at {first})"))
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
        r.problem("fallback", f"names no cluster: {fallback!r} (clusters: {known})")
    router = RouterSettings(
        fallback=fallback,
        trusted_proxies=r.get("trusted_proxies", _networks, ()),
        client_ip_header=r.get(
            "client_ip_header", _choice(ClientIpHeader), ClientIpHeader.X_FORWARDED_FOR
        ),
        max_forwarded_hops=r.get("max_forwarded_hops", _count(1, 100), 20),
    )
    r.finish()

    g = _Section(document.get("geoip", {}), "geoip", problems)
    top.seen.add("geoip")
    database = g.get("database", _string, "")
    db_path: Path | None = None
    if database:
        db_path = Path(database).expanduser()
        if not db_path.is_absolute() and base_dir is not None:
            db_path = base_dir / db_path
    geoip = GeoipSettings(
        database=db_path,
        max_age_days=g.get("max_age_days", _count(1, 36500), 30),
        cache_networks=g.get("cache_networks", _count(0, 10_000_000), 65536),
    )
    g.finish()

    h = _Section(document.get("health", {}), "health", problems)
    top.seen.add("health")
    health = HealthSettings(
        path=h.get("path", _http_path, "/healthz"),
        interval_s=h.get("interval_s", _positive, 5.0),
        timeout_s=h.get("timeout_s", _positive, 2.0),
        rise=h.get("rise", _count(1, 1000), 2),
        fall=h.get("fall", _count(1, 1000), 3),
    )
    h.finish()

    sessions = _parse_sessions(document.get("sessions", {}), problems, base_dir)
    top.seen.add("sessions")

    top.finish()
    if problems:
        raise ConfigError(problems)
    return Config(
        clusters=tuple(clusters), router=router, geoip=geoip, health=health, sessions=sessions
    )


def _parse_sessions(table: Any, problems: list[Problem], base_dir: Path | None) -> SessionSettings:
    s = _Section(table, "sessions", problems)
    defaults = SessionSettings()
    ttl_s = s.get("ttl_s", _number(1, 365 * 86400), defaults.ttl_s)
    max_ttl_s = s.get("max_ttl_s", _number(0, 10 * 365 * 86400), defaults.max_ttl_s)
    if max_ttl_s and max_ttl_s < ttl_s:
        s.problem("max_ttl_s", f"must be 0 (no cap) or at least ttl_s ({_fmt(ttl_s)})")
    near_cache_s = s.get("near_cache_s", _number(0, 3600), defaults.near_cache_s)
    if near_cache_s >= ttl_s:
        s.problem("near_cache_s", f"must be less than ttl_s ({_fmt(ttl_s)}), so pins are renewed")
    state_dir = Path(s.get("state_dir", _string, str(defaults.state_dir))).expanduser()
    if not state_dir.is_absolute() and base_dir is not None:
        state_dir = base_dir / state_dir
    settings = SessionSettings(
        redis=s.get("redis_url", _redis_target, None),
        key_prefix=s.get("key_prefix", _key_prefix, defaults.key_prefix),
        ttl_s=ttl_s,
        max_ttl_s=max_ttl_s,
        cookie=s.get("cookie", _matching(_TOKEN, "must be a cookie name"), defaults.cookie),
        header=s.get("header", _matching(_TOKEN, "must be a header name"), defaults.header).lower(),
        connect_timeout_s=s.get("connect_timeout_s", _number(0.001, 60), 0.05),
        command_timeout_s=s.get("command_timeout_s", _number(0.001, 60), 0.05),
        pool_size=s.get("pool_size", _count(1, 10_000), defaults.pool_size),
        local_cache_size=s.get("local_cache_size", _count(0, 100_000_000), 100_000),
        retry_interval_s=s.get("retry_interval_s", _number(0.01, 3600), 1.0),
        near_cache_s=near_cache_s,
        state_dir=state_dir,
    )
    s.finish()
    return settings


def _redis_target(value: Any) -> RedisTarget | _Error:
    if not isinstance(value, str):
        return _Error(f"must be a string, not {_type_name(value)}")
    try:
        return parse_redis_url(value)
    except ValueError as exc:
        return _Error(str(exc))


def load(path: Path) -> Config:
    """Read and validate a ``clusters.toml`` file."""
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise ConfigError([Problem(str(path), f"cannot read: {exc.strerror or exc}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(str(path), f"invalid TOML: {exc}")]) from exc
    return parse(document, base_dir=path.resolve().parent)
