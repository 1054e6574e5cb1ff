"""The outage memory: the newest pin this edge has seen of each session it serves
(pure, explicit clock)."""

from __future__ import annotations

import itertools

import pytest

from georouter.core.pin import TOMBSTONE, Pin
from georouter.sessions.outage import OutageMemory

V1 = Pin("eu-west", 100, 1)
V2 = Pin("us-east", 100, 2)  # a failover of V1
V3 = Pin("ap-sydney", 100, 3)  # and another


@pytest.mark.parametrize(
    "offers",
    [
        pytest.param(order, id="-".join(f"v{p.version}" for p in order))
        for order in itertools.permutations((V1, V2, V3))
    ],
)
def test_the_newest_version_is_kept_whatever_order_the_versions_arrive_in(
    offers: tuple[Pin, ...],
) -> None:
    memory = OutageMemory(capacity=10, ttl_ms=10_000)
    for now_ms, pin in enumerate(offers):
        memory.offer("s1", pin, now_ms=now_ms)
    assert memory.get("s1", now_ms=10) == V3._replace(ttl_ms=10_000)
    assert memory.items(now_ms=10) == [("s1", V3)]


def test_an_older_version_offered_after_a_newer_one_is_ignored() -> None:
    memory = OutageMemory(capacity=10, ttl_ms=10_000)
    assert memory.offer("s1", V2, now_ms=0)
    assert not memory.offer("s1", V1, now_ms=1)  # a reply that lost the race to an announcement
    got = memory.get("s1", now_ms=2)
    assert got is not None
    assert (got.cluster, got.version) == ("us-east", 2)


def test_the_same_or_a_newer_version_replaces_what_is_held() -> None:
    memory = OutageMemory(capacity=10, ttl_ms=10_000)
    assert memory.offer("s1", V1, now_ms=0)
    assert memory.offer("s1", V1, now_ms=1)  # the same pin read again
    assert memory.offer("s1", V2, now_ms=2)
    got = memory.get("s1", now_ms=3)
    assert got is not None
    assert (got.cluster, got.version) == ("us-east", 2)


def test_a_tombstone_is_kept_and_wins_over_older_pins() -> None:
    memory = OutageMemory(capacity=10, ttl_ms=10_000)
    tombstone = Pin(TOMBSTONE, 200, 5)
    memory.offer("s1", V2, now_ms=0)
    assert memory.offer("s1", tombstone, now_ms=1)
    assert memory.knows("s1", now_ms=2)
    # An older pin arriving late (a reply, an announcement) does not bring it back.
    assert not memory.offer("s1", V3, now_ms=2)
    got = memory.get("s1", now_ms=3)
    assert got is not None
    assert got.forgotten
    assert got.version == 5
    # It is listed with the rest, so a Redis that lost its data gets the forget back too.
    assert memory.items(now_ms=4) == [("s1", tombstone)]


def test_a_pin_newer_than_the_tombstone_is_kept() -> None:
    memory = OutageMemory(capacity=10, ttl_ms=10_000)
    memory.offer("s1", Pin(TOMBSTONE, 200, 5), now_ms=0)
    assert memory.offer("s1", Pin("eu-west", 300, 6), now_ms=1)  # pinned anew after the forget
    got = memory.get("s1", now_ms=2)
    assert got is not None
    assert (got.cluster, got.version) == ("eu-west", 6)


def test_a_pin_is_forgotten_after_the_sliding_ttl() -> None:
    memory = OutageMemory(capacity=10, ttl_ms=100)
    memory.offer("s1", Pin("eu-west", 0, 3), now_ms=0)
    assert memory.get("s1", now_ms=99) == Pin("eu-west", 0, 3, 100)
    # The read slid the expiry to 199, and this one to 298.
    assert memory.get("s1", now_ms=198) is not None
    assert memory.get("s1", now_ms=297) is not None
    assert memory.get("s1", now_ms=397) is None
    assert len(memory) == 0
    assert not memory.knows("s1", now_ms=397)


def test_an_unused_pin_expires_when_redis_would_have_dropped_it() -> None:
    memory = OutageMemory(capacity=10, ttl_ms=100)
    memory.offer("used", Pin("eu-west", 0, 1), now_ms=0)
    memory.offer("idle", Pin("eu-west", 0, 1), now_ms=0)
    memory.get("used", now_ms=60)
    assert [sid for sid, _ in memory.items(now_ms=99)] == ["idle", "used"]
    assert [sid for sid, _ in memory.items(now_ms=100)] == ["used"]
    assert memory.get("idle", now_ms=100) is None
    assert memory.get("used", now_ms=159) is not None


def test_an_expired_newer_version_no_longer_holds_back_an_older_one() -> None:
    memory = OutageMemory(capacity=10, ttl_ms=100)
    memory.offer("s1", V2, now_ms=0)
    # Past its expiry Redis has dropped the newer pin too; the older one is all there is.
    assert memory.offer("s1", V1, now_ms=100)
    got = memory.get("s1", now_ms=101)
    assert got is not None
    assert got.version == 1


def test_an_expired_session_is_not_known_even_before_it_is_read() -> None:
    memory = OutageMemory(capacity=10, ttl_ms=100)
    memory.offer("s1", Pin("eu-west", 0, 3), now_ms=0)
    assert memory.knows("s1", now_ms=99)
    assert not memory.knows("s1", now_ms=100)


def test_only_the_most_recently_used_are_kept() -> None:
    memory = OutageMemory(capacity=2, ttl_ms=1000)
    memory.offer("a", Pin("c1", 0, 1), now_ms=0)
    memory.offer("b", Pin("c2", 0, 1), now_ms=0)
    memory.get("a", now_ms=1)  # a is now the most recent
    memory.offer("c", Pin("c3", 0, 1), now_ms=2)
    assert len(memory) == 2
    assert not memory.knows("b", now_ms=3)
    assert memory.get("b", now_ms=3) is None
    assert memory.get("a", now_ms=3) is not None
    assert memory.get("c", now_ms=3) is not None


def test_an_offer_counts_as_a_use() -> None:
    memory = OutageMemory(capacity=2, ttl_ms=1000)
    memory.offer("a", Pin("c1", 0, 1), now_ms=0)
    memory.offer("b", Pin("c2", 0, 1), now_ms=0)
    memory.offer("a", Pin("c1", 0, 2), now_ms=1)  # a newer version of a: the most recent
    memory.offer("c", Pin("c3", 0, 1), now_ms=2)
    assert [sid for sid, _ in memory.items(now_ms=3)] == ["a", "c"]


def test_the_memory_never_outgrows_its_capacity() -> None:
    memory = OutageMemory(capacity=5, ttl_ms=1000)
    for i in range(50):
        memory.offer(f"s{i}", Pin("c", 0, 1), now_ms=i)
        assert len(memory) <= 5
    assert [sid for sid, _ in memory.items(now_ms=50)] == [f"s{i}" for i in range(45, 50)]


def test_a_memory_with_no_capacity_keeps_nothing() -> None:
    memory = OutageMemory(capacity=0, ttl_ms=1000)
    assert not memory.offer("a", Pin("c1", 0, 1), now_ms=0)
    assert not memory.knows("a", now_ms=0)
    assert memory.get("a", now_ms=0) is None
    assert memory.items(now_ms=0) == []
