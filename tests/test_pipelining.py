"""Commands asked for together go to a real Redis as one pipeline; errors stay per command."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from georouter.config import SessionSettings
from georouter.core.pin import Ask
from georouter.metrics import Metrics
from georouter.sessions.clients import make_client
from georouter.sessions.map import SessionMap
from georouter.sessions.pipelining import MAX_BATCH, AutoPipeline
from georouter.sessions.redisstore import RedisSessionStore
from georouter.sessions.scripts import PIN_SCRIPT
from tests.redis_harness import RedisServer
from tests.sessions_harness import session_settings

pytestmark = pytest.mark.anyio

PIN_SCRIPT_SHA = hashlib.sha1(PIN_SCRIPT.encode()).hexdigest()


class CountingRedis(aioredis.Redis):
    """A real client that counts what it sends: pipelines, and commands sent alone."""

    pipelines = 0
    alone = 0

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        self.pipelines += 1
        return super().pipeline(transaction=transaction, shard_hint=shard_hint)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.alone += 1
        return await super().execute_command(*args, **options)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[CountingRedis]:
    c = CountingRedis(
        host="127.0.0.1", port=redis_server.port, decode_responses=True, socket_timeout=2
    )
    yield c
    await c.aclose()


async def test_commands_asked_while_one_is_in_flight_go_out_as_one_pipeline(
    client: CountingRedis,
) -> None:
    await client.mset({f"k{i}": f"v{i}" for i in range(100)})
    pipeline = AutoPipeline(client, deadline_s=2)
    replies = await asyncio.gather(*(pipeline.execute("GET", f"k{i}") for i in range(100)))
    assert replies == [f"v{i}" for i in range(100)]
    # The MSET, then the first GET at once (Redis was idle), then the other 99 together.
    assert (client.alone, client.pipelines) == (2, 1)


async def test_a_large_batch_is_split_into_bounded_pipelines(client: CountingRedis) -> None:
    pipeline = AutoPipeline(client, deadline_s=2)
    count = MAX_BATCH * 2 + 1
    replies = await asyncio.gather(*(pipeline.execute("ECHO", str(i)) for i in range(count)))
    assert replies == [str(i) for i in range(count)]
    assert (client.alone, client.pipelines) == (1, 2)


async def test_a_command_asked_while_redis_is_idle_is_sent_at_once_alone(
    client: CountingRedis,
) -> None:
    pipeline = AutoPipeline(client, deadline_s=2)
    assert await pipeline.execute("ECHO", "a") == "a"
    assert await pipeline.execute("ECHO", "b") == "b"
    assert (client.pipelines, client.alone) == (0, 2)
    await client.hset("h", "f", "v")
    assert isinstance(await pipeline.execute("GET", "h"), ResponseError)  # answered, not raised


async def test_a_command_redis_refuses_fails_alone(client: CountingRedis) -> None:
    await client.hset("h", "f", "v")
    await client.set("s", "ok")
    pipeline = AutoPipeline(client, deadline_s=2)
    wrong, right, also = await asyncio.gather(
        pipeline.submit("GET", "h"), pipeline.submit("GET", "s"), pipeline.execute("GET", "h")
    )
    assert isinstance(wrong, ResponseError)
    assert "WRONGTYPE" in str(wrong)
    assert right == "ok"
    assert isinstance(also, ResponseError)


async def test_callers_that_give_up_on_a_hung_redis_leave_no_half_read_connection(
    client: CountingRedis, redis_server: RedisServer
) -> None:
    pipeline = AutoPipeline(client, deadline_s=0.3)
    redis_server.pause()
    try:

        async def bounded(i: int) -> object:
            # As the session store calls it: the caller bounds its own wait.
            try:
                async with asyncio.timeout(0.3):
                    return await pipeline.execute("ECHO", str(i))
            except TimeoutError as exc:
                return exc

        replies = await asyncio.gather(*(bounded(i) for i in range(10)))
    finally:
        redis_server.resume()
    assert all(isinstance(r, Exception) for r in replies), replies
    # The paused Redis answers the abandoned ECHOs once resumed; a connection reused
    # half-read would hand one of those ("0".."9") to the next command.
    assert [await pipeline.execute("ECHO", f"after{i}") for i in range(3)] == [
        "after0",
        "after1",
        "after2",
    ]


async def test_commands_queued_behind_a_hung_redis_get_an_error_by_the_pipelines_deadline(
    client: CountingRedis, redis_server: RedisServer
) -> None:
    deadline_s = 0.3
    pipeline = AutoPipeline(client, deadline_s=deadline_s, cap_s=deadline_s * 3)
    redis_server.pause()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # No deadline of the callers' own (the client's socket timeout is 2 s): only
        # the pipeline's bounds the wait. The outer bound only keeps a failure short.
        async with asyncio.timeout(5):
            replies = await asyncio.gather(*(pipeline.submit("ECHO", str(i)) for i in range(10)))
        waited = loop.time() - started
    finally:
        redis_server.resume()
    assert all(isinstance(r, TimeoutError) for r in replies), replies
    assert waited >= deadline_s - 0.001
    assert waited < deadline_s + 1.0  # the deadline, with a generous margin
    assert client.pipelines == 1  # the ten went out together
    assert await pipeline.execute("ECHO", "after") == "after"


async def test_a_caller_that_stops_waiting_does_not_disturb_the_others(
    client: CountingRedis,
) -> None:
    pipeline = AutoPipeline(client, deadline_s=2)
    abandoned = pipeline.submit("ECHO", "gone")
    kept = pipeline.submit("ECHO", "kept")
    abandoned.cancel()
    assert await kept == "kept"
    assert abandoned.cancelled()


@pytest.fixture
def settings(redis_server: RedisServer) -> SessionSettings:
    found = session_settings(redis_server.url, ttl_s=60, command_timeout_s=2, connect_timeout_s=2)
    assert found.redis is not None
    return found


@pytest.fixture
async def store(settings: SessionSettings) -> AsyncIterator[RedisSessionStore]:
    assert settings.redis is not None
    made = RedisSessionStore(make_client(settings.redis, settings), settings)
    yield made
    await made.close()


async def test_scripts_are_loaded_again_after_redis_forgets_them(
    store: RedisSessionStore, redis_server: RedisServer
) -> None:
    first, written = await store.apply("a", Ask.claim("eu-west"))
    assert (first and first.cluster, written) == ("eu-west", True)
    with redis_server.client() as c:
        c.script_flush()  # as after a restart, or a failover to a replica
        assert c.script_exists(PIN_SCRIPT_SHA) == [False]
    second, written = await store.apply("b", Ask.claim("us-east"))
    assert (second and second.cluster, written) == ("us-east", True)
    with redis_server.client() as c:
        assert c.script_exists(PIN_SCRIPT_SHA) == [True]  # loaded again
    assert [p and p.cluster for p in await store.read_many(["a", "b"])] == ["eu-west", "us-east"]


async def test_read_many_answers_in_order_and_renews_every_ttl(
    store: RedisSessionStore, redis_server: RedisServer
) -> None:
    await store.apply("one", Ask.claim("eu-west"))
    await store.apply("two", Ask.claim("ap-sydney"))
    await store.apply("gone", Ask.forget())
    with redis_server.client() as c:
        c.pexpire("georouter:s:one", 5_000)
        c.set("georouter:s:junk", "not a pin", px=5_000)
    pins = await store.read_many(["two", "missing", "one", "gone", "junk"])
    assert [p and p.cluster for p in pins] == ["ap-sydney", None, "eu-west", "!", None]
    with redis_server.client() as c:
        assert c.pttl("georouter:s:one") > 50_000  # renewed to the full 60 s


async def test_concurrent_first_requests_of_many_sessions_share_round_trips(
    store: RedisSessionStore, settings: SessionSettings, redis_server: RedisServer
) -> None:
    m = SessionMap(store, settings, Metrics())
    with redis_server.client() as c:
        connections_before = int(c.info("stats")["total_connections_received"])
    outcomes = await asyncio.gather(
        *(m.resolve(f"user{i}", "eu-west", lambda _: True) for i in range(200))
    )
    assert all(o.pin is not None and o.pin.cluster == "eu-west" for o in outcomes)
    reads = await asyncio.gather(*(m.resolve(f"user{i}", None, lambda _: True) for i in range(200)))
    assert all(r.pin is not None and r.pin.cluster == "eu-west" for r in reads)
    with redis_server.client() as c:
        assert len(c.keys("georouter:s:user*")) == 200
        # 400 commands over a handful of connections (one each would have taken
        # the whole pool of 64): they went out pipelined.
        opened = int(c.info("stats")["total_connections_received"]) - connections_before
        assert opened < 20
