"""Redis clients for the session map: standalone, Sentinel or Cluster, from a
``redis_url``, with our timeouts and no retries (retries belong to the breaker)."""

from __future__ import annotations

import inspect
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from georouter.config import SessionSettings
from georouter.config.redisurl import RedisMode, RedisTarget
from georouter.sessions.deadline import cap_s


def _no_retry() -> Retry:
    # Retries belong to the breaker, not to a request waiting for its answer.
    return Retry(NoBackoff(), 0)


def _options(settings: SessionSettings, *, reads_wait: bool = False) -> dict[str, Any]:
    # Backstops only: the store's fair deadline decides (see ``deadline``). A plain
    # 50 ms socket timeout fired whenever the edge itself was busy.
    backstop_s = cap_s(settings)
    return {
        "socket_timeout": None if reads_wait else backstop_s,
        "socket_connect_timeout": backstop_s,
        "retry": _no_retry(),
        # Replies stay bytes, decoded by the store with errors replaced: a value or
        # an announcement that is not UTF-8 (not ours) must not raise in the client.
        "decode_responses": False,
    }


def _sentinel_master(
    target: RedisTarget, settings: SessionSettings, options: dict[str, Any], **pool: Any
) -> Any:
    """A client for the master that the Sentinels name (found again after a failover)."""
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.nodes),
        sentinel_kwargs=_options(settings),
        **options,
    )
    return sentinel.master_for(
        target.service or "",
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        **pool,
    )


def check_target(target: RedisTarget) -> None:
    """Raise ValueError for a URL that redis-py would refuse only when connecting
    (a bad or unknown query option), so ``check`` and start-up report it."""
    if target.mode is not RedisMode.STANDALONE:
        return
    options = parse_url(target.url)
    if "path" in options:
        classes: tuple[type, ...] = (UnixDomainSocketConnection, AbstractConnection)
    elif target.tls:
        classes = (SSLConnection, Connection, AbstractConnection)
    else:
        classes = (Connection, AbstractConnection)
    accepted = {name for cls in classes for name in inspect.signature(cls).parameters}
    unknown = sorted(set(options) - accepted - {"connection_class"})
    if unknown:
        raise ValueError(f"has unknown option(s) in its query: {', '.join(unknown)}")


def make_client(target: RedisTarget, settings: SessionSettings) -> Any:
    """A redis-py asyncio client for ``target``, with timeouts and no retries."""
    options = _options(settings)
    if target.mode is RedisMode.STANDALONE:
        # Blocking: over `pool_size` in flight, a request waits (up to the timeout)
        # for a connection instead of failing at once with MaxConnectionsError.
        pool = aioredis.BlockingConnectionPool.from_url(
            target.url,
            max_connections=settings.pool_size,
            timeout=cap_s(settings),
            **options,
        )
        # from_pool: the client owns the pool, so closing the client closes its connections.
        return aioredis.Redis.from_pool(pool)
    if target.mode is RedisMode.SENTINEL:
        return _sentinel_master(target, settings, options, max_connections=settings.pool_size)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        max_connections=settings.pool_size,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        **options,
    )


def make_subscriber(target: RedisTarget, settings: SessionSettings) -> Any | None:
    """A client for the invalidation channel: it waits for messages, so no read timeout.

    None for Redis Cluster, where georouter keeps no near cache (every sticky
    read asks Redis).
    """
    options = _options(settings, reads_wait=True)
    if target.mode is RedisMode.STANDALONE:
        return aioredis.Redis.from_url(target.url, **options)
    if target.mode is RedisMode.SENTINEL:
        return _sentinel_master(target, settings, options)
    return None
