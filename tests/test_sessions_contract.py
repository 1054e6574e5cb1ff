"""One contract, every session store: Redis (a real redis-server) and the memory store.

The session map relies on exactly these behaviours of a ``SessionStore``; the
first part runs against ``RedisSessionStore`` on a real ``redis-server`` and
against ``tests.memory_store`` (which the property tests use in Redis's place),
so a store that passes it can stand in for another. What only Redis can show
(TTLs, its clock, the announcement channel, its errors) follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from georouter.core.pin import Ask, Pin
from georouter.errors import StoreUnavailable
from georouter.sessions.clients import make_client, make_subscriber
from georouter.sessions.deadline import cap_s, patience_s
from georouter.sessions.redisstore import RedisSessionStore
from georouter.sessions.store import Change, SessionStore
from tests.harness import until
from tests.memory_store import MemoryStore
from tests.redis_harness import RedisServer, free_port
from tests.sessions_harness import Clock, redis_now_ms, session_settings

pytestmark = pytest.mark.anyio

MAX_AGE_S = 120


@dataclass
class Subject:
    """A store under the contract, with what only its test can do to it."""

    store: SessionStore
    # The store's own clock (Redis: TIME), in ms: pins made now are dated about this.
    now_ms: Callable[[], int]
    # As a restart without persistence does: every key gone.
    lose_everything: Callable[[], None]


@pytest.fixture(params=["redis", "memory"])
async def subject(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[Subject]:
    if request.param == "redis":
        settings = session_settings(redis_server.url, max_ttl_s=MAX_AGE_S)
        assert settings.redis is not None
        redis_store = RedisSessionStore(make_client(settings.redis, settings), settings)

        def flush() -> None:
            with redis_server.client() as c:
                c.flushall()

        yield Subject(redis_store, lambda: redis_now_ms(redis_server), flush)
        await redis_store.close()
    else:
        clock = Clock()
        shared = MemoryStore(clock_ms=clock, max_age_ms=MAX_AGE_S * 1000)
        yield Subject(shared.view("edge"), clock, shared.restart_empty)


async def test_unknown_session_has_no_pin(subject: Subject) -> None:
    store = subject.store
    assert await store.read("nobody") is None
    assert await store.peek("nobody") is None
    assert await store.read_many(["nobody", "nor-this-one"]) == [None, None]


async def test_first_claim_is_stored_and_read_back(subject: Subject) -> None:
    store = subject.store
    before = subject.now_ms()
    pin, written = await store.apply("s1", Ask.claim("eu-west"))
    assert written
    assert pin is not None
    assert pin.cluster == "eu-west"
    assert before - 1000 <= pin.pinned_at_ms <= subject.now_ms() + 1000  # the store's clock
    assert pin.version > 0
    for read in (await store.read("s1"), await store.peek("s1")):
        assert read is not None
        assert (read.cluster, read.pinned_at_ms, read.version) == (
            "eu-west",
            pin.pinned_at_ms,
            pin.version,
        )


async def test_first_pin_wins(subject: Subject) -> None:
    store = subject.store
    first, _ = await store.apply("s1", Ask.claim("eu-west"))
    second, written = await store.apply("s1", Ask.claim("ap-sydney"))
    assert not written
    assert first is not None
    assert second is not None
    assert (second.cluster, second.pinned_at_ms, second.version) == (
        "eu-west",
        first.pinned_at_ms,
        first.version,
    )
    read = await store.read("s1")
    assert read is not None
    assert read.cluster == "eu-west"


async def test_a_repin_replacing_nothing_is_a_claim(subject: Subject) -> None:
    store = subject.store
    made, written = await store.apply("s1", Ask.repin("eu-west", None))
    assert written
    assert made is not None
    assert made.cluster == "eu-west"
    held, written = await store.apply("s1", Ask.repin("us-east", None))
    assert not written
    assert held == made


async def test_claim_pins_an_unknown_session_and_otherwise_answers_its_pin(
    subject: Subject,
) -> None:
    store = subject.store
    first, made = await store.apply("s1", Ask.claim("eu-west"))
    assert first is not None
    assert (first.cluster, made) == ("eu-west", True)
    again, made = await store.apply("s1", Ask.claim("ap-sydney"))
    assert again is not None
    assert (again.cluster, again.pinned_at_ms, made) == ("eu-west", first.pinned_at_ms, False)
    tombstone, made = await store.apply("s1", Ask.forget())
    assert tombstone is not None
    assert tombstone.forgotten
    assert made
    renewed, made = await store.apply("s1", Ask.claim("ap-sydney"))  # forgotten: a new session
    assert renewed is not None
    assert (renewed.cluster, made) == ("ap-sydney", True)
    assert renewed.version > tombstone.version


async def test_concurrent_claims_all_get_one_cluster_and_one_maker(subject: Subject) -> None:
    results = await asyncio.gather(
        *(subject.store.apply("s1", Ask.claim(f"c{i}")) for i in range(200))
    )
    assert len({pin.cluster for pin, _ in results if pin is not None}) == 1
    assert all(pin is not None for pin, _ in results)
    assert sum(made for _, made in results) == 1


async def test_replace_only_what_was_expected(subject: Subject) -> None:
    store = subject.store
    first, _ = await store.apply("s1", Ask.claim("eu-west"))
    assert first is not None
    stale, written = await store.apply("s1", Ask.repin("us-east", "ap-sydney"))
    # The caller expected another cluster: nothing changes.
    assert (stale, written) == (first, False)
    moved, written = await store.apply("s1", Ask.repin("eu-central", "eu-west"))
    assert moved is not None
    assert (moved.cluster, written) == ("eu-central", True)
    # A failover keeps the session's age: the hard cap counts from the first pin.
    assert moved.pinned_at_ms == first.pinned_at_ms
    assert moved.version > first.version
    raced, written = await store.apply("s1", Ask.repin("us-east", "eu-west"))
    # Someone replaced it first: theirs holds.
    assert (raced, written) == (moved, False)


async def test_concurrent_first_pins_all_get_one_cluster(subject: Subject) -> None:
    clusters = ["eu-west", "us-east", "ap-sydney", "sa-east", "af-south"] * 40
    results = await asyncio.gather(
        *(subject.store.apply("race", Ask.repin(c, None)) for c in clusters)
    )
    assert len({pin.cluster for pin, _ in results if pin is not None}) == 1
    assert sum(written for _, written in results) == 1


async def test_concurrent_repins_all_get_one_cluster_and_one_writer(subject: Subject) -> None:
    store = subject.store
    await store.apply("race", Ask.claim("eu-west"))
    targets = ["us-east", "ap-sydney", "sa-east"] * 70
    results = await asyncio.gather(*(store.apply("race", Ask.repin(c, "eu-west")) for c in targets))
    clusters = {pin.cluster for pin, _ in results if pin is not None}
    assert len(clusters) == 1
    assert clusters <= set(targets)
    assert sum(written for _, written in results) == 1


async def test_forgotten_session_reads_as_a_tombstone_and_can_be_pinned_again(
    subject: Subject,
) -> None:
    store = subject.store
    await store.apply("s1", Ask.claim("eu-west"))
    await store.apply("s1", Ask.forget())
    read = await store.read("s1")
    assert read is not None
    assert read.forgotten
    fresh, written = await store.apply("s1", Ask.claim("ap-sydney"))
    assert fresh is not None
    assert (fresh.cluster, written) == ("ap-sydney", True)


async def test_a_session_never_seen_can_be_forgotten(subject: Subject) -> None:
    tombstone, written = await subject.store.apply("never", Ask.forget())
    assert tombstone is not None
    assert tombstone.forgotten
    assert written
    # So a pin of it that some edge remembers cannot be put back.
    remembered = Pin("eu-west", subject.now_ms(), tombstone.version - 1)
    held, written = await subject.store.apply("never", Ask.put_back(remembered))
    assert (held, written) == (tombstone, False)


async def test_every_write_has_a_newer_version_than_the_last(subject: Subject) -> None:
    store = subject.store
    versions = []
    for ask in [
        Ask.claim("eu-west"),
        Ask.repin("us-east", "eu-west"),
        Ask.repin("ap-sydney", "us-east"),
        Ask.forget(),
        Ask.claim("eu-west"),
        Ask.forget(),
    ]:
        pin, written = await store.apply("s1", ask)
        assert written
        assert pin is not None
        versions.append(pin.version)
    assert versions == sorted(set(versions))


async def test_a_pin_put_back_into_an_empty_store_keeps_its_time_and_version(
    subject: Subject,
) -> None:
    store = subject.store
    made, _ = await store.apply("s1", Ask.claim("eu-west"))
    assert made is not None
    subject.lose_everything()
    assert await store.read("s1") is None
    back, written = await store.apply("s1", Ask.put_back(made))
    assert written
    assert back is not None
    assert (back.cluster, back.pinned_at_ms, back.version) == (
        made.cluster,
        made.pinned_at_ms,
        made.version,
    )
    read = await store.read("s1")
    assert read is not None
    assert (read.cluster, read.pinned_at_ms, read.version) == (
        "eu-west",
        made.pinned_at_ms,
        made.version,
    )
    # A later write still compares newer than the pin put back.
    moved, _ = await store.apply("s1", Ask.repin("us-east", "eu-west"))
    assert moved is not None
    assert moved.version > made.version


async def test_a_put_back_never_replaces_the_same_or_a_newer_version(subject: Subject) -> None:
    store = subject.store
    old, _ = await store.apply("s1", Ask.claim("eu-west"))
    new, _ = await store.apply("s1", Ask.repin("us-east", "eu-west"))
    assert old is not None
    assert new is not None
    for stale in (old, new, new._replace(cluster="ap-sydney")):
        held, written = await store.apply("s1", Ask.put_back(stale))
        assert (held, written) == (new, False)
    # A newer version than what the key holds goes in, as is.
    newer = Pin("ap-sydney", old.pinned_at_ms, new.version + 5)
    held, written = await store.apply("s1", Ask.put_back(newer))
    assert held is not None
    assert written
    assert (held.cluster, held.pinned_at_ms, held.version) == (
        "ap-sydney",
        old.pinned_at_ms,
        new.version + 5,
    )


async def test_a_forgotten_session_is_not_put_back(subject: Subject) -> None:
    store = subject.store
    made, _ = await store.apply("s1", Ask.claim("eu-west"))
    tombstone, _ = await store.apply("s1", Ask.forget())
    assert made is not None
    assert tombstone is not None
    held, written = await store.apply("s1", Ask.put_back(made))
    assert (held, written) == (tombstone, False)
    read = await store.read("s1")
    assert read is not None
    assert read.forgotten


async def test_a_pin_past_the_age_cap_is_not_put_back(subject: Subject) -> None:
    store = subject.store
    ancient = Pin("eu-west", subject.now_ms() - (MAX_AGE_S + 60) * 1000, 7)
    held, written = await store.apply("s1", Ask.put_back(ancient))
    assert (held, written) == (None, False)
    assert await store.peek("s1") is None


async def test_a_pin_put_back_within_the_age_cap_is_live_and_keeps_its_first_time(
    subject: Subject,
) -> None:
    store = subject.store
    now = subject.now_ms()
    young = Pin("eu-west", now - (MAX_AGE_S - 60) * 1000, 3)
    held, written = await store.apply("young", Ask.put_back(young))
    assert written
    assert held is not None
    # Within the cap: a claim answers it, and a failover keeps its first time.
    assert (await store.apply("young", Ask.claim("us-east")))[0] == held
    moved, _ = await store.apply("young", Ask.repin("us-east", "eu-west"))
    assert moved is not None
    assert moved.pinned_at_ms == young.pinned_at_ms


async def test_sessions_are_independent(subject: Subject) -> None:
    store = subject.store
    await store.apply("a", Ask.claim("eu-west"))
    await store.apply("b", Ask.claim("ap-sydney"))
    await store.apply("c", Ask.claim("sa-east"))
    await store.apply("c", Ask.forget())
    a, b = await store.read("a"), await store.read("b")
    assert a is not None
    assert b is not None
    assert (a.cluster, b.cluster) == ("eu-west", "ap-sydney")
    many = await store.read_many(["b", "missing", "a", "c"])
    assert [p.cluster if p else None for p in many] == ["ap-sydney", None, "eu-west", "!"]


async def test_lost_data_is_told_once_per_loss_and_never_on_the_first_call(
    subject: Subject,
) -> None:
    store = subject.store
    await store.ping()
    assert not await store.lost_data()  # nothing to compare with yet
    await store.apply("s1", Ask.claim("eu-west"))
    assert not await store.lost_data()
    subject.lose_everything()
    assert await store.lost_data()
    assert not await store.lost_data()  # the same loss is told once


# What only Redis can show.


@pytest.fixture
async def redis_store(redis_server: RedisServer) -> AsyncIterator[RedisSessionStore]:
    settings = session_settings(redis_server.url)
    assert settings.redis is not None
    store = RedisSessionStore(make_client(settings.redis, settings), settings)
    yield store
    await store.close()


async def test_redis_read_slides_the_ttl(
    redis_store: RedisSessionStore, redis_server: RedisServer
) -> None:
    made, _ = await redis_store.apply("s1", Ask.claim("eu-west"))
    assert made is not None
    with redis_server.client() as c:
        c.pexpire("georouter:s:s1", 5_000)
        assert await redis_store.read("s1") is not None
        assert c.pttl("georouter:s:s1") > 59_000
        assert c.get("georouter:s:s1") == made.encode()
        c.pexpire("georouter:s:s1", 5_000)
        assert await redis_store.read_many(["s1"]) == [made._replace(ttl_ms=60_000)]
        assert c.pttl("georouter:s:s1") > 59_000


async def test_redis_claim_of_a_held_pin_renews_its_ttl(
    redis_store: RedisSessionStore, redis_server: RedisServer
) -> None:
    await redis_store.apply("s1", Ask.claim("eu-west"))
    with redis_server.client() as c:
        c.pexpire("georouter:s:s1", 5_000)
        _, written = await redis_store.apply("s1", Ask.claim("us-east"))
        assert not written
        assert c.pttl("georouter:s:s1") > 59_000


async def test_redis_forgets_an_idle_session_when_its_ttl_runs_out(
    redis_store: RedisSessionStore, redis_server: RedisServer
) -> None:
    await redis_store.apply("s1", Ask.claim("eu-west"))
    with redis_server.client() as c:
        c.pexpire("georouter:s:s1", 50)  # as if idle for all but 50 ms of its TTL

        def gone() -> bool:
            return c.exists("georouter:s:s1") == 0

        await until(gone, timeout_s=5, what="the idle key to expire")
    assert await redis_store.read("s1") is None
    fresh, written = await redis_store.apply("s1", Ask.claim("us-east"))
    assert fresh is not None
    assert (fresh.cluster, written) == ("us-east", True)


async def test_redis_session_past_its_hard_cap_is_over(redis_server: RedisServer) -> None:
    settings = session_settings(redis_server.url, max_ttl_s=120)
    assert settings.redis is not None
    store = RedisSessionStore(make_client(settings.redis, settings), settings)
    try:
        with redis_server.client() as c:
            # Pinned 10 minutes ago by Redis's clock: past the 2-minute cap.
            seconds, _ = c.time()
            c.set("georouter:s:old", f"eu-west|{(seconds - 600) * 1000}|5", px=60_000)
        assert await store.read("old") is None
        assert await store.read_many(["old"]) == [None]
        fresh, written = await store.apply("old", Ask.claim("ap-sydney"))
        assert fresh is not None
        assert written
        assert fresh.cluster == "ap-sydney"
        assert fresh.pinned_at_ms > (seconds - 5) * 1000
        assert fresh.version > 5
    finally:
        await store.close()


async def test_redis_read_hides_a_pin_past_the_cap_by_the_stores_clock(
    redis_server: RedisServer,
) -> None:
    settings = session_settings(redis_server.url, ttl_s=60, max_ttl_s=100)
    assert settings.redis is not None
    clock = Clock(redis_now_ms(redis_server))
    store = RedisSessionStore(make_client(settings.redis, settings), settings, clock_ms=clock)
    try:
        await store.apply("s1", Ask.claim("eu-west"))
        clock.ms += 59_000
        assert await store.read("s1") is not None
        clock.ms += 59_000
        assert await store.read("s1") is None  # 118 s old: past the 100 s cap
    finally:
        await store.close()


async def test_redis_reads_a_pin_of_an_earlier_release_as_version_0(
    redis_store: RedisSessionStore, redis_server: RedisServer
) -> None:
    with redis_server.client() as c:
        seconds, _ = c.time()
        c.set("georouter:s:legacy", f"eu-west|{seconds * 1000}", px=60_000)
    read = await redis_store.read("legacy")
    assert read is not None
    assert (read.cluster, read.pinned_at_ms, read.version) == ("eu-west", seconds * 1000, 0)
    held, written = await redis_store.apply("legacy", Ask.claim("us-east"))
    assert held is not None
    assert (held.cluster, written) == ("eu-west", False)
    moved, written = await redis_store.apply("legacy", Ask.repin("us-east", "eu-west"))
    assert moved is not None
    assert (moved.cluster, moved.pinned_at_ms, written) == ("us-east", seconds * 1000, True)
    assert moved.version > 0


async def test_redis_keys_always_carry_a_ttl(
    redis_store: RedisSessionStore, redis_server: RedisServer
) -> None:
    await redis_store.apply("a", Ask.claim("eu-west"))
    await redis_store.apply("a", Ask.repin("us-east", "eu-west"))
    await redis_store.apply("b", Ask.forget())
    await redis_store.apply("c", Ask.put_back(Pin("eu-west", redis_now_ms(redis_server), 1)))
    with redis_server.client() as c:
        keys = c.keys("georouter:s:*")
        assert sorted(keys) == ["georouter:s:a", "georouter:s:b", "georouter:s:c"]
        for key in keys:
            assert 0 < c.pttl(key) <= 60_000


async def test_peek_shows_the_ttl_left_and_does_not_renew_it(
    redis_store: RedisSessionStore, redis_server: RedisServer
) -> None:
    await redis_store.apply("s1", Ask.claim("eu-west"))
    pin = await redis_store.peek("s1")
    assert pin is not None
    assert pin.cluster == "eu-west"
    assert pin.ttl_ms is not None
    assert 59_000 < pin.ttl_ms <= 60_000
    with redis_server.client() as c:
        c.pexpire("georouter:s:s1", 5_000)
        peeked = await redis_store.peek("s1")
        assert peeked is not None
        assert peeked.ttl_ms is not None
        assert peeked.ttl_ms <= 5_000
        assert c.pttl("georouter:s:s1") <= 5_000


async def test_redis_that_was_flushed_or_restarted_empty_is_told_as_lost_data(
    redis_store: RedisSessionStore, redis_server: RedisServer
) -> None:
    assert not await redis_store.lost_data()
    with redis_server.client() as c:
        assert c.exists("georouter:epoch") == 1  # the marker of a Redis that kept its data
    redis_server.restart_empty()
    # The restart broke the pooled connection: a call may fail once (the store does not
    # retry; the session map's breaker does), and a failed call leaves the marker seen.
    with contextlib.suppress(StoreUnavailable):
        await redis_store.ping()
    assert await redis_store.lost_data()
    assert not await redis_store.lost_data()


async def test_every_edge_hears_of_a_loss_noticed_first_by_another(
    redis_server: RedisServer,
) -> None:
    settings = session_settings(redis_server.url)
    assert settings.redis is not None
    first = RedisSessionStore(make_client(settings.redis, settings), settings)
    second = RedisSessionStore(make_client(settings.redis, settings), settings)
    try:
        assert not await first.lost_data()
        assert not await second.lost_data()
        with redis_server.client() as c:
            c.flushall()
        assert await first.lost_data()  # writes the new marker...
        assert await second.lost_data()  # ...which the other edge sees as a change too
    finally:
        await first.close()
        await second.close()


@contextlib.asynccontextmanager
async def announcing(redis_server: RedisServer, origin: str) -> AsyncIterator[RedisSessionStore]:
    settings = session_settings(redis_server.url)
    assert settings.redis is not None
    store = RedisSessionStore(
        make_client(settings.redis, settings),
        settings,
        origin=origin,
        subscriber=make_subscriber(settings.redis, settings),
    )
    try:
        yield store
    finally:
        await store.close()


async def test_redis_announces_every_write_to_the_other_edges_with_the_pin_written(
    redis_server: RedisServer,
) -> None:
    async with (
        announcing(redis_server, "edge-a") as a,
        announcing(redis_server, "edge-b") as b,
    ):
        assert a.announces_changes
        heard: list[Change | None] = []
        subscribed = asyncio.Event()

        async def listen() -> None:
            async for change in b.changes():
                heard.append(change)
                if change is None:
                    subscribed.set()

        listener = asyncio.create_task(listen())
        try:
            async with asyncio.timeout(5):
                await subscribed.wait()
            made, _ = await a.apply("s1", Ask.claim("eu-west"))
            await a.apply("s1", Ask.claim("us-east"))  # no write: nothing to announce
            await b.apply("s2", Ask.claim("ap-sydney"))  # b's own write: not told to b
            moved, _ = await a.apply("s1", Ask.repin("us-east", "eu-west"))
            forgotten, _ = await a.apply("s3", Ask.forget())
            await until(lambda: len(heard) >= 4, timeout_s=5, what="three announcements")
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        assert made is not None
        assert moved is not None
        assert forgotten is not None
        assert heard == [
            None,
            Change("s1", made._replace(ttl_ms=None)),
            Change("s1", moved._replace(ttl_ms=None)),
            Change("s3", forgotten._replace(ttl_ms=None)),
        ]


async def test_redis_announcements_name_the_origin_the_session_and_the_value(
    redis_server: RedisServer,
) -> None:
    settings = session_settings(redis_server.url)
    assert settings.redis is not None
    store = RedisSessionStore(
        make_client(settings.redis, settings), settings, origin="edge-" + secrets.token_hex(2)
    )
    with redis_server.client() as c, c.pubsub(ignore_subscribe_messages=True) as pubsub:
        pubsub.subscribe("georouter:pins")
        try:
            made, _ = await store.apply("s1", Ask.claim("eu-west"))
            assert made is not None
            message = None
            for _ in range(50):
                message = pubsub.get_message(timeout=0.1)
                if message is not None:
                    break
        finally:
            await store.close()
    assert message is not None
    assert message["data"] == f"{store.origin} s1 {made.encode()}"


async def test_every_redis_failure_is_store_unavailable_within_the_deadline() -> None:
    settings = session_settings(
        f"redis://127.0.0.1:{free_port()}/0", command_timeout_s=0.05, connect_timeout_s=0.05
    )
    assert settings.redis is not None
    store = RedisSessionStore(make_client(settings.redis, settings), settings)
    loop = asyncio.get_running_loop()
    try:
        calls = [
            lambda: store.read("s1"),
            lambda: store.read_many(["s1", "s2"]),
            lambda: store.apply("s1", Ask.claim("eu-west")),
            lambda: store.apply("s1", Ask.forget()),
            lambda: store.peek("s1"),
            store.ping,
            store.lost_data,
        ]
        for call in calls:
            started = loop.time()
            with pytest.raises(StoreUnavailable):
                await call()
            assert loop.time() - started < cap_s(settings) + 0.5
    finally:
        await store.close()


async def test_a_hung_redis_is_store_unavailable_after_the_calls_patience(
    redis_server: RedisServer,
) -> None:
    settings = session_settings(redis_server.url, command_timeout_s=0.05, connect_timeout_s=0.05)
    assert settings.redis is not None
    store = RedisSessionStore(make_client(settings.redis, settings), settings)
    await store.ping()
    redis_server.pause()
    loop = asyncio.get_running_loop()
    try:
        for call in (lambda: store.apply("s1", Ask.claim("eu-west")), lambda: store.read("s1")):
            started = loop.time()
            with pytest.raises(StoreUnavailable):
                await call()
            # Not before its patience (a slow Redis is not a dead one), and not much
            # after: at most the cap, when this loop was busy; a margin for the machine.
            assert patience_s(settings) - 0.01 < loop.time() - started < cap_s(settings) + 0.5
    finally:
        redis_server.resume()
        await store.close()
