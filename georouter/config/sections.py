"""The sections of ``clusters.toml`` after ``[[clusters]]`` and ``[router]``, one parser each.

Each takes its table and the shared list of problems, and returns its settings
with defaults where a value is missing or invalid (``parse`` raises once every
section has been read, so one run reports every problem).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from georouter.config.model import (
    ClientIpHeader,
    GeoipSettings,
    HealthSettings,
    LearnedSource,
    LimitsSettings,
    ProxySettings,
    SessionSettings,
    SessionSource,
)
from georouter.config.redisurl import RedisTarget, parse_redis_url
from georouter.config.sharedhealth import shared_keys
from georouter.config.values import (
    HTTP_TOKEN,
    Invalid,
    Section,
    boolean,
    choices,
    count,
    fmt,
    http_path,
    key_prefix,
    matching,
    number,
    path_text,
    quoted,
    seconds,
    statuses,
    string,
    type_name,
    user_path,
)
from georouter.errors import Problem


def parse_geoip(table: Any, problems: list[Problem], base_dir: Path | None) -> GeoipSettings:
    g = Section(table, "geoip", problems)
    database = g.get("database", path_text, "")
    db_path: Path | None = None
    if database:
        found = user_path(database, base_dir)
        if isinstance(found, Invalid):
            g.problem("database", found)
        else:
            db_path = found
    update_url = g.get("update_url", _download_url, None)
    update_sha256_url = g.get("update_sha256_url", _download_url, None)
    if update_url is not None and db_path is None and g.valid("database"):
        g.problem(
            "update_url",
            "needs geoip.database, the file to keep fresh (the bundled snapshot is never"
            " overwritten)",
        )
    if update_sha256_url is not None and update_url is None and g.valid("update_url"):
        g.problem("update_sha256_url", "is set without geoip.update_url")
    geoip = GeoipSettings(
        database=db_path,
        max_age_days=g.get("max_age_days", count(1, 36500), 30),
        cache_networks=g.get("cache_networks", count(0, 10_000_000), 65536),
        watch_s=g.get("watch_s", number(0, 3600), 5.0),
        update_url=update_url,
        update_sha256_url=update_sha256_url,
        # At least an hour: MaxMind publishes twice a week and limits daily downloads.
        update_interval_h=g.get("update_interval_h", number(1, 8760), 24.0),
        max_accuracy_km=g.get("max_accuracy_km", number(1, 100_000), 500.0),
    )
    g.finish()
    return geoip


def _download_url(value: Any) -> str | Invalid:
    """An http(s) URL to download from; unlike a cluster's URL it may have a query
    (``?suffix=tar.gz``), but never credentials, which come from the environment."""
    if not isinstance(value, str):
        return Invalid(f"must be a string, not {type_name(value)}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return Invalid(f"is not a valid URL ({exc})")
    if parts.scheme not in ("http", "https"):
        return Invalid(f"must be an http:// or https:// URL, not {quoted(value)}")
    if "@" in parts.netloc:
        # Not echoed: the value holds a secret.
        return Invalid(
            "must not contain a user or password ('user:password@'); MaxMind's are read"
            " from MAXMIND_ACCOUNT_ID and MAXMIND_LICENSE_KEY"
        )
    if not parts.hostname or port == 0:
        return Invalid(f"has no host or port 0: {quoted(value)}")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return Invalid(f"must not contain whitespace or control characters: {quoted(value)}")
    return value


def _passive(h: Section, defaults: HealthSettings) -> dict[str, Any]:
    """The passive health keys of ``[health]`` (outlier ejection on the data path)."""
    ejection_s = h.get("ejection_s", number(0.1, 86400), defaults.ejection_s)
    max_ejection_s = h.get("max_ejection_s", number(0.1, 86400), defaults.max_ejection_s)
    if h.valid("ejection_s", "max_ejection_s") and max_ejection_s < ejection_s:
        h.problem("max_ejection_s", f"must be at least ejection_s ({fmt(ejection_s)})")
    return {
        "passive_failures": h.get("passive_failures", count(0, 1000), defaults.passive_failures),
        "ejection_s": ejection_s,
        "max_ejection_s": max_ejection_s,
        "max_ejected_share": h.get("max_ejected_share", number(0, 1), defaults.max_ejected_share),
    }


def parse_health(table: Any, problems: list[Problem]) -> HealthSettings:
    h = Section(table, "health", problems)
    defaults = HealthSettings()
    interval_s = h.get(
        "interval_s",
        seconds(0.05, 86400, "probing faster only loads the clusters"),
        defaults.interval_s,
    )
    timeout_s = h.get(
        "timeout_s",
        seconds(0.01, 86400, "even a cluster on loopback may not answer faster"),
        defaults.timeout_s,
    )
    if h.valid("interval_s", "timeout_s") and timeout_s > interval_s:
        h.problem(
            "timeout_s",
            f"must be at most interval_s ({fmt(interval_s)}):"
            " a probe must finish before the next is due",
        )
    # 64: the shared health board keeps a cluster's window in one 64-bit word
    # (core.health.MAX_WINDOW, which this layer cannot import).
    window = h.get("window", count(0, 64), defaults.window)
    window_fall = h.get("window_fall", count(1, 64), defaults.window_fall)
    if h.valid("window", "window_fall") and window and window_fall > window:
        unset = "" if "window_fall" in h.table else f" (window_fall is {window_fall} unless set)"
        h.problem("window_fall", f"must be at most window ({window}){unset}")
    max_body_bytes = h.get("max_body_bytes", count(1, 16 << 20), defaults.max_body_bytes)
    expect_body = h.get("expect_body", string, defaults.expect_body)
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
        path=h.get("path", http_path, defaults.path),
        interval_s=interval_s,
        timeout_s=timeout_s,
        rise=h.get("rise", count(1, 1000), defaults.rise),
        fall=h.get("fall", count(1, 1000), defaults.fall),
        window=window,
        window_fall=window_fall,
        expect_status=h.get("expect_status", statuses, defaults.expect_status),
        expect_body=expect_body,
        max_body_bytes=max_body_bytes,
        **_passive(h, defaults),
        stabilize_s=h.get("stabilize_s", number(0, 86400), defaults.stabilize_s),
        ramp_s=h.get("ramp_s", number(0, 86400), defaults.ramp_s),
        **shared_keys(h, defaults),
    )
    h.finish()
    return settings


def parse_limits(table: Any, problems: list[Problem]) -> LimitsSettings:
    lim = Section(table, "limits", problems)
    d = LimitsSettings()
    per_s = lim.get("new_sessions_per_s", number(0, 1_000_000), d.new_sessions_per_s)
    burst = lim.get("new_sessions_burst", count(0, 10_000_000), d.new_sessions_burst)
    if lim.valid("new_sessions_per_s") and per_s > 0 and burst == 0:
        lim.problem(
            "new_sessions_burst",
            f"is 0, which turns the limit off although new_sessions_per_s is {fmt(per_s)};"
            " set new_sessions_per_s = 0 to mean no limit",
        )
    settings = LimitsSettings(
        header_bytes=lim.get("header_bytes", count(1024, 1 << 20), d.header_bytes),
        header_count=lim.get("header_count", count(10, 10_000), d.header_count),
        body_bytes=lim.get("body_bytes", count(1, 1 << 30), d.body_bytes),
        header_timeout_s=lim.get("header_timeout_s", number(0.1, 300), d.header_timeout_s),
        request_deadline_s=lim.get("request_deadline_s", number(0.1, 3600), d.request_deadline_s),
        max_in_flight=lim.get("max_in_flight", count(1, 1_000_000), d.max_in_flight),
        new_sessions_per_s=per_s,
        new_sessions_burst=burst,
        admin_failures=lim.get("admin_failures", count(0, 1_000_000), d.admin_failures),
        admin_lockout_s=lim.get("admin_lockout_s", number(1, 86400), d.admin_lockout_s),
    )
    lim.finish()
    return settings


# Headers that already mean something to HTTP, a proxy or georouter: a session id
# there would be read from (or overwritten by) what another party put in it.
HEADERS_TAKEN = frozenset(
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


def _session_header(client_ip_header: ClientIpHeader) -> Callable[[Any], str | Invalid]:
    token = matching(HTTP_TOKEN, "must be a header name")

    def check(value: Any) -> str | Invalid:
        name = token(value)
        if isinstance(name, Invalid):
            return name
        name = name.lower()
        if name == client_ip_header.value:
            return Invalid(f"{name!r} is router.client_ip_header; use a header of its own")
        if name in HEADERS_TAKEN:
            return Invalid(
                f"{name!r} already has a meaning in HTTP; use a header of its own,"
                " such as 'x-session-id'"
            )
        return name

    return check


def _state_dir(value: Any, base_dir: Path | None) -> Path | Invalid:
    text = path_text(value)
    if isinstance(text, Invalid):
        return text
    path = user_path(text, base_dir)
    if isinstance(path, Invalid):
        return path
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        return Invalid(f"cannot be resolved: {quoted(text)} ({exc})")
    for system in _SYSTEM_DIRS:
        if resolved == system or system in resolved.parents:
            return Invalid(
                f"is inside {system} ({quoted(str(resolved))}), a kernel interface,"
                " not a folder for the session store's files"
            )
    return path


def parse_sessions(
    table: Any,
    problems: list[Problem],
    base_dir: Path | None,
    client_ip_header: ClientIpHeader = ClientIpHeader.X_FORWARDED_FOR,
) -> SessionSettings:
    s = Section(table, "sessions", problems)
    defaults = SessionSettings()
    ttl_s = s.get("ttl_s", number(1, 365 * 86400), defaults.ttl_s)
    max_ttl_s = s.get("max_ttl_s", number(0, 10 * 365 * 86400), defaults.max_ttl_s)
    if max_ttl_s and max_ttl_s < ttl_s:
        s.problem("max_ttl_s", f"must be 0 (no cap) or at least ttl_s ({fmt(ttl_s)})")
    near_cache_s = s.get("near_cache_s", number(0, 3600), defaults.near_cache_s)
    if near_cache_s >= ttl_s:
        s.problem("near_cache_s", f"must be less than ttl_s ({fmt(ttl_s)}), so pins are renewed")
    # Not judged when unset: beside a config read from /dev/stdin it would be in /proc.
    default_state_dir = (base_dir or Path()) / defaults.state_dir
    state_dir = s.get("state_dir", lambda value: _state_dir(value, base_dir), default_state_dir)
    settings = SessionSettings(
        redis=s.get("redis_url", _redis_target, None),
        key_prefix=s.get("key_prefix", key_prefix, defaults.key_prefix),
        ttl_s=ttl_s,
        max_ttl_s=max_ttl_s,
        cookie=s.get("cookie", matching(HTTP_TOKEN, "must be a cookie name"), defaults.cookie),
        header=s.get("header", _session_header(client_ip_header), defaults.header),
        query=s.get(
            "query",
            matching(
                r"[A-Za-z0-9._~-]{1,64}",
                "must be a query parameter name (1-64 letters, digits, '.', '_', '~' or '-')",
            ),
            None,
        ),
        cookie_secure=s.get("cookie_secure", boolean, defaults.cookie_secure),
        learn=s.get("learn", _learned_sources, defaults.learn),
        connect_timeout_s=s.get("connect_timeout_s", number(0.001, 60), 0.05),
        command_timeout_s=s.get("command_timeout_s", number(0.001, 60), 0.05),
        pool_size=s.get("pool_size", count(1, 10_000), defaults.pool_size),
        local_cache_size=s.get("local_cache_size", _local_cache_size, defaults.local_cache_size),
        retry_interval_s=s.get("retry_interval_s", number(0.01, 3600), 1.0),
        near_cache_s=near_cache_s,
        state_dir=state_dir,
        unsigned_sources=s.get(
            "unsigned_sources", choices(SessionSource), defaults.unsigned_sources
        ),
    )
    s.finish()
    return settings


def parse_proxy(table: Any, problems: list[Problem]) -> ProxySettings:
    p = Section(table, "proxy", problems)
    d = ProxySettings()
    max_connections = p.get("max_connections", count(1, 100_000), d.max_connections)
    max_keepalive = p.get("max_keepalive", count(0, 100_000), d.max_keepalive)
    if p.valid("max_connections", "max_keepalive") and max_keepalive > max_connections:
        p.problem("max_keepalive", f"must be at most max_connections ({max_connections})")
    settings = ProxySettings(
        preserve_host=p.get("preserve_host", boolean, d.preserve_host),
        retries=p.get("retries", count(0, 5), d.retries),
        connect_timeout_s=p.get("connect_timeout_s", number(0.001, 600), d.connect_timeout_s),
        read_timeout_s=p.get("read_timeout_s", number(0.001, 86400), d.read_timeout_s),
        write_timeout_s=p.get("write_timeout_s", number(0.001, 86400), d.write_timeout_s),
        pool_timeout_s=p.get("pool_timeout_s", number(0.001, 600), d.pool_timeout_s),
        max_connections=max_connections,
        max_keepalive=max_keepalive,
        max_body_bytes=p.get("max_body_bytes", count(0, 1 << 50), d.max_body_bytes),
        body_idle_s=p.get("body_idle_s", number(0.1, 86400), d.body_idle_s),
        replay_body_bytes=p.get("replay_body_bytes", count(0, 64 << 20), d.replay_body_bytes),
        websocket_open_timeout_s=p.get(
            "websocket_open_timeout_s", number(0.01, 600), d.websocket_open_timeout_s
        ),
        websocket_max_message_bytes=p.get(
            "websocket_max_message_bytes", count(1, 1 << 30), d.websocket_max_message_bytes
        ),
    )
    p.finish()
    return settings


def _learned_sources(value: Any) -> tuple[LearnedSource, ...] | Invalid:
    if not isinstance(value, list):
        return Invalid(f"must be an array of strings, not {type_name(value)}")
    found: list[LearnedSource] = []
    for i, item in enumerate(value):
        kind, _, name = item.partition(":") if isinstance(item, str) else ("", "", "")
        if kind not in ("cookie", "header") or not re.fullmatch(HTTP_TOKEN, name):
            shown = quoted(item) if isinstance(item, str) else type_name(item)
            return Invalid(
                f"[{i}] must be 'cookie:NAME' or 'header:NAME' (NAME an HTTP token), not {shown}"
            )
        source = LearnedSource(SessionSource(kind), name.lower() if kind == "header" else name)
        if source in found:
            return Invalid(f"[{i}] {quoted(item)} is listed twice")
        found.append(source)
    return tuple(found)


def _local_cache_size(value: Any) -> int | Invalid:
    size = count(0, 100_000_000)(value)
    if isinstance(size, Invalid) or size >= _LOCAL_CACHE_MIN:
        return size
    # An entry costs memory only once a session uses it, so a small cap saves
    # nothing; it only drops sessions from the outage memory and the near cache.
    return Invalid(
        f"must be within {_LOCAL_CACHE_MIN}..100000000: it is how many sessions this edge"
        " keeps sticky while Redis is away (and how many pins its near cache holds),"
        " and an entry costs memory only once a session uses it"
    )


def _redis_target(value: Any) -> RedisTarget | Invalid:
    if not isinstance(value, str):
        return Invalid(f"must be a string, not {type_name(value)}")
    try:
        return parse_redis_url(value)
    except ValueError as exc:
        return Invalid(str(exc))
