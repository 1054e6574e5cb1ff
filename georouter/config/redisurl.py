"""Where the shared session map lives: ``sessions.redis_url`` in its five forms. Pure.

``redis://``, ``rediss://`` and ``unix://`` URLs are handed to redis-py as
written; ``redis+sentinel://`` and ``redis+cluster://`` (``rediss+...`` for
TLS) name the seed nodes of a Sentinel or Cluster deployment, a form redis-py
has no URL for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

# Redis numbers its databases with a C int; SELECT refuses anything beyond.
MAX_DB = 2**31 - 1
_DIGITS = re.compile(r"[0-9]{1,10}")


class RedisMode(StrEnum):
    STANDALONE = "standalone"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where the shared session map lives, parsed from ``sessions.redis_url``.

    ``redis://``, ``rediss://`` and ``unix://`` are handed to redis-py as written;
    ``redis+sentinel://[user:pass@]h1:26379,h2:26379/service[/db]`` and
    ``redis+cluster://[user:pass@]h1:7000,h2:7001`` (``rediss+...`` for TLS) name
    the seed nodes of a Sentinel or Cluster deployment.
    """

    mode: RedisMode
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @property
    def redacted(self) -> str:
        """The URL without its password, fit for logs and API answers."""
        url = re.sub(r"([?&]password=)[^&]*", r"\1***", self.url)
        scheme, sep, rest = url.partition("://")
        netloc, slash, path = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        if not at or ":" not in userinfo:
            return url
        user = userinfo.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{hosts}{slash}{path}"


def parse_redis_url(value: str) -> RedisTarget:
    """A ``sessions.redis_url`` value; ValueError says what is wrong with it."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ValueError(
            f"must be a redis://, rediss://, unix://, redis+sentinel:// or"
            f" redis+cluster:// URL, not {value!r}"
        )
    scheme = scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"is not a valid URL ({exc})") from None
        if scheme == "unix" and not parts.path:
            raise ValueError(f"names no socket path: {value!r}")
        if scheme != "unix" and not parts.hostname:
            raise ValueError(f"has no host: {value!r}")
        return RedisTarget(
            mode=RedisMode.STANDALONE, url=value, db=_standalone_db(parts), tls=scheme == "rediss"
        )
    base, _, mode_name = scheme.partition("+")
    if base not in ("redis", "rediss") or mode_name not in ("sentinel", "cluster"):
        raise ValueError(
            f"unknown scheme {scheme!r}: use redis, rediss, unix, redis+sentinel or redis+cluster"
        )
    mode = RedisMode(mode_name)
    netloc, _, path = rest.partition("/")
    if "?" in path or "#" in path:
        # No option of a query would reach the client: it would end up in the names.
        raise ValueError(f"must not have a query or fragment: {scheme}:// URLs take none")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username, password = (user or None), (pw if colon else None)
    nodes: list[tuple[str, int]] = []
    default_port = 26379 if mode is RedisMode.SENTINEL else 6379
    for item in hosts.split(","):
        node = _host_port(item, default_port)
        if node is None:
            raise ValueError(f"has a bad host:port {item!r}")
        nodes.append(node)
    segments = [p for p in path.split("/") if p]
    service: str | None = None
    db = 0
    if mode is RedisMode.SENTINEL:
        if not segments:
            raise ValueError("names no master: redis+sentinel://host:26379,.../MASTER_NAME[/DB]")
        service = segments.pop(0)
    if segments:
        if len(segments) > 1 or mode is RedisMode.CLUSTER:
            raise ValueError(f"has an unexpected path {path!r}")
        db = _db(segments[0])
    return RedisTarget(
        mode=mode,
        url=value,
        nodes=tuple(nodes),
        service=service,
        db=db,
        username=username,
        password=password,
        tls=base == "rediss",
    )


def _db(text: str) -> int:
    """A database number as written in a URL: 0..MAX_DB, in ASCII digits."""
    if not _DIGITS.fullmatch(text) or int(text) > MAX_DB:
        raise ValueError(f"has a bad database number {text!r}: use 0..{MAX_DB}")
    return int(text)


def _standalone_db(parts: SplitResult) -> int:
    """The database of a redis://, rediss:// or unix:// URL, as redis-py reads it:
    ``?db=N`` if given, else (not for unix://) the path ``/N``."""
    dbs = parse_qs(parts.query).get("db")
    if dbs:
        checked = [_db(text) for text in dbs]
        return checked[0]  # as redis-py does; every one checked
    path = unquote(parts.path)
    if parts.scheme.lower() == "unix" or path in ("", "/"):
        return 0
    # redis-py would quietly ignore a path that is not a number, or join "/1/2" into 12.
    if not path.startswith("/"):
        raise ValueError(f"has an unexpected path {path!r}")
    return _db(path[1:])


def _host_port(item: str, default_port: int) -> tuple[str, int] | None:
    item = item.strip()
    if item.startswith("["):
        host, close, port_part = item[1:].partition("]")
        if not close or (port_part and not port_part.startswith(":")):
            return None
        port_text = port_part[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        return None
    if not port_text:
        return host, default_port
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 0 < int(port_text) <= 65535:
        return None
    return host, int(port_text)
