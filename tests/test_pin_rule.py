"""The pin rule, one table of cases: the pure function, the Lua script on a real
redis-server, and the in-memory store all give the same answer to each."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest

from georouter.config import SessionSettings
from georouter.config.redisurl import parse_redis_url
from georouter.core.pin import TOMBSTONE, Ask, Pin, apply
from georouter.sessions.clients import make_client, make_subscriber
from georouter.sessions.redisstore import RedisSessionStore
from tests.harness import until
from tests.memory_store import MemoryStore
from tests.redis_harness import RedisServer

pytestmark = pytest.mark.anyio

MAX_AGE_MS = 3_600_000
NOW_MS = int(time.time() * 1000)  # the stored pins' times are relative to the real clock
OLD = NOW_MS - 1000  # a live pin's time
ANCIENT = NOW_MS - 2 * MAX_AGE_MS  # past the age cap
# Above any clock (µs), below 2**53: Lua numbers are doubles, exact up to there.
FUTURE_VERSION = 5 * 10**15


class Case(NamedTuple):
    stored: str | None  # the key's raw value before the ask
    ask: Ask
    # Expected after: the cluster (None: no key), where its time comes from, where its
    # version comes from, and whether the ask wrote.
    cluster: str | None
    at: str  # "stored" | "now" | "restore"
    version: str  # "stored" | "new" | "restore"
    written: bool


def p(cluster: str, at: int, version: int) -> str:
    return Pin(cluster, at, version).encode()


X5 = Pin("x", OLD, 5)
X9 = Pin("x", OLD, 9)
CASES = {
    "claim_of_a_new_session_pins_it": Case(None, Ask.claim("x"), "x", "now", "new", True),
    "claim_of_a_pinned_session_answers_its_pin": Case(
        p("y", OLD, 7), Ask.claim("x"), "y", "stored", "stored", False
    ),
    "claim_after_a_forget_pins_anew": Case(
        p(TOMBSTONE, OLD, 7), Ask.claim("x"), "x", "now", "new", True
    ),
    "claim_of_a_pin_past_its_age_cap_pins_anew": Case(
        p("y", ANCIENT, 7), Ask.claim("x"), "x", "now", "new", True
    ),
    "claim_reads_a_legacy_two_field_pin": Case(
        f"y|{OLD}", Ask.claim("x"), "y", "stored", "stored", False
    ),
    "claim_over_a_value_that_is_not_ours_pins": Case(
        "hello", Ask.claim("x"), "x", "now", "new", True
    ),
    "claim_after_a_future_version_counts_up_from_it": Case(
        p(TOMBSTONE, OLD, FUTURE_VERSION), Ask.claim("x"), "x", "now", "new", True
    ),
    "repin_replaces_the_cluster_it_expects_and_keeps_the_time": Case(
        p("y", OLD, 7), Ask.repin("x", "y"), "x", "stored", "new", True
    ),
    "repin_leaves_a_pin_another_edge_changed": Case(
        p("z", OLD, 7), Ask.repin("x", "y"), "z", "stored", "stored", False
    ),
    "repin_of_a_vanished_pin_pins_anew": Case(None, Ask.repin("x", "y"), "x", "now", "new", True),
    "repin_to_the_cluster_it_already_has_writes_nothing": Case(
        p("x", OLD, 7), Ask.repin("x", "y"), "x", "stored", "stored", False
    ),
    "repin_replaces_a_legacy_pin": Case(
        f"y|{OLD}", Ask.repin("x", "y"), "x", "stored", "new", True
    ),
    "restore_puts_back_a_lost_pin_with_its_time_and_version": Case(
        None, Ask.put_back(X5), "x", "restore", "restore", True
    ),
    "restore_never_overrides_a_newer_forget": Case(
        p(TOMBSTONE, OLD, 9), Ask.put_back(X5), TOMBSTONE, "stored", "stored", False
    ),
    "restore_of_a_pin_newer_than_the_forget_wins": Case(
        p(TOMBSTONE, OLD, 5), Ask.put_back(X9), "x", "restore", "restore", True
    ),
    "restore_leaves_a_newer_pin": Case(
        p("y", OLD, 7), Ask.put_back(X5), "y", "stored", "stored", False
    ),
    "restore_replaces_an_older_pin": Case(
        p("y", OLD, 5), Ask.put_back(X9), "x", "restore", "restore", True
    ),
    "restore_of_the_same_version_writes_nothing": Case(
        p("x", OLD, 5), Ask.put_back(X5), "x", "stored", "stored", False
    ),
    "restore_of_a_pin_past_its_age_cap_writes_nothing": Case(
        None, Ask.put_back(Pin("x", ANCIENT, 5)), None, "stored", "stored", False
    ),
    "a_pin_made_without_redis_leaves_a_forget_made_after_it": Case(
        p(TOMBSTONE, OLD, 9), Ask.claim("x")._replace(since=5), TOMBSTONE, "stored", "stored", False
    ),
    "a_failover_made_without_redis_leaves_a_forget_made_after_it": Case(
        p(TOMBSTONE, OLD, 9),
        Ask.repin("x", "y")._replace(since=5),
        TOMBSTONE,
        "stored",
        "stored",
        False,
    ),
    "a_pin_made_without_redis_after_the_forget_pins": Case(
        p(TOMBSTONE, OLD, 5), Ask.claim("x")._replace(since=9), "x", "now", "new", True
    ),
    "forget_writes_a_tombstone": Case(p("x", OLD, 7), Ask.forget(), TOMBSTONE, "now", "new", True),
    "forget_of_an_unknown_session_writes_a_tombstone": Case(
        None, Ask.forget(), TOMBSTONE, "now", "new", True
    ),
}


def check(
    case: Case, after: Pin | None, written: bool, *, now: tuple[int, int], floor: int
) -> None:
    """``after`` is what the store holds; ``now`` the window of the store's clock in ms,
    ``floor`` the least version its clock could have given."""
    assert written is case.written
    if case.cluster is None:
        assert after is None
        return
    assert after is not None
    assert after.cluster == case.cluster
    stored = Pin.decode(case.stored) if case.stored is not None else None
    restore = case.ask.restore
    if case.at == "stored":
        assert stored is not None
        assert after.pinned_at_ms == stored.pinned_at_ms
    elif case.at == "restore":
        assert restore is not None
        assert after.pinned_at_ms == restore.pinned_at_ms
    else:
        assert now[0] <= after.pinned_at_ms <= now[1]
    if case.version == "stored":
        assert stored is not None
        assert after.version == stored.version
    elif case.version == "restore":
        assert restore is not None
        assert after.version == restore.version
    else:
        assert after.version > (stored.version if stored is not None else 0)
        assert after.version >= min(floor, (stored.version + 1) if stored else floor)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_pure_rule(case: Case) -> None:
    stored = Pin.decode(case.stored) if case.stored is not None else None
    now_version = NOW_MS * 1000
    verdict = apply(stored, case.ask, now_ms=NOW_MS, now_version=now_version, max_age_ms=MAX_AGE_MS)
    check(case, verdict.stored, verdict.written, now=(NOW_MS, NOW_MS), floor=now_version)


def settings_for(server: RedisServer) -> SessionSettings:
    return SessionSettings(
        redis=parse_redis_url(server.url),
        ttl_s=600,
        max_ttl_s=MAX_AGE_MS / 1000,
        command_timeout_s=2,
        connect_timeout_s=2,
    )


@pytest.fixture
async def redis_store(redis_server: RedisServer) -> AsyncIterator[RedisSessionStore]:
    settings = settings_for(redis_server)
    assert settings.redis is not None
    store = RedisSessionStore(
        make_client(settings.redis, settings),
        settings,
        origin="edge-a",
        subscriber=make_subscriber(settings.redis, settings),
    )
    yield store
    await store.close()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_the_lua_script_on_a_real_redis(
    case: Case, redis_store: RedisSessionStore, redis_server: RedisServer
) -> None:
    raw = redis_server.client()
    if case.stored is not None:
        raw.set(redis_store.key("s"), case.stored, px=60_000)
    before = int(time.time() * 1000)
    answered, written = await redis_store.apply("s", case.ask)
    after = int(time.time() * 1000)
    value = raw.get(redis_store.key("s"))
    held = Pin.decode(value) if isinstance(value, str) else None
    if case.cluster is None:
        assert value is None
    # The script answers what the key holds afterwards.
    assert (answered is None) == (held is None or (case.stored == "hello" and not written))
    if answered is not None and held is not None:
        assert answered[:3] == held[:3]
    check(case, held, written, now=(before - 5, after + 5), floor=(before - 5) * 1000)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_the_memory_store(case: Case) -> None:
    store = MemoryStore(clock_ms=lambda: NOW_MS, max_age_ms=MAX_AGE_MS)
    if case.stored is not None:
        stored = Pin.decode(case.stored)
        if stored is not None:
            store.keys["s"] = stored
    answered, written = await store.view("a").apply("s", case.ask)
    check(case, store.keys.get("s"), written, now=(NOW_MS, NOW_MS), floor=NOW_MS * 1000)
    assert answered == store.keys.get("s")


async def test_every_write_is_announced_with_its_value_and_nothing_else_is(
    redis_store: RedisSessionStore, redis_server: RedisServer
) -> None:
    listener = redis_server.client().pubsub(ignore_subscribe_messages=True)
    listener.subscribe(redis_store.channel)
    asks = [Ask.claim("x"), Ask.claim("y"), Ask.repin("y", "x"), Ask.forget()]
    results = [await redis_store.apply("s", ask) for ask in asks]
    assert [written for _, written in results] == [True, False, True, True]
    heard: list[str] = []

    def three_heard() -> bool:
        message = listener.get_message(timeout=0.05)
        if message is not None:
            heard.append(message["data"])
        return len(heard) >= 3

    await until(three_heard, timeout_s=5)
    written_values = [pin.encode() for pin, written in results if written and pin is not None]
    assert heard == [f"edge-a s {value}" for value in written_values]
    versions = [Pin.decode(v.split()[-1]).version for v in heard]  # type: ignore[union-attr]
    assert versions == sorted(versions)
    assert len(set(versions)) == 3
    listener.close()
