"""The near cache: pins read from Redis, used for a while without asking again (pure,
explicit clock)."""

from __future__ import annotations

from georouter.core.pin import Pin
from georouter.sessions.nearcache import NearCache


def test_near_cache_serves_only_while_active() -> None:
    near = NearCache(capacity=10, ttl_ms=1000)
    near.put("s1", Pin("eu-west", 0), now_ms=0, mark=near.mark())
    assert near.get("s1", now_ms=1) is None  # not subscribed yet: nothing is kept
    near.activate()
    near.put("s1", Pin("eu-west", 0), now_ms=0, mark=near.mark())
    assert near.get("s1", now_ms=999) == Pin("eu-west", 0)
    assert near.get("s1", now_ms=1000) is None  # trusted for ttl_ms only
    near.put("s1", Pin("eu-west", 0), now_ms=0, mark=near.mark())
    near.deactivate()  # the subscription was lost: announcements may be missed
    assert near.get("s1", now_ms=1) is None
    assert len(near) == 0


def test_near_cache_drops_invalidated_sessions_and_refuses_raced_reads() -> None:
    near = NearCache(capacity=10, ttl_ms=1000)
    near.activate()
    near.put("s1", Pin("eu-west", 0), now_ms=0, mark=near.mark())
    near.invalidate("s1")
    assert near.get("s1", now_ms=1) is None

    mark = near.mark()  # a Redis read starts...
    near.invalidate("s2")  # ...another edge changes s2 meanwhile...
    near.put("s2", Pin("eu-west", 0), now_ms=0, mark=mark)  # ...so the read is stale
    assert near.get("s2", now_ms=1) is None
    near.put("s3", Pin("us-east", 0), now_ms=0, mark=mark)  # other sessions are fine
    assert near.get("s3", now_ms=1) == Pin("us-east", 0)


def test_a_read_begun_before_activation_is_not_cached() -> None:
    near = NearCache(capacity=10, ttl_ms=1000)
    mark = near.mark()
    near.activate()
    near.deactivate()
    near.activate()
    near.put("s1", Pin("eu-west", 0), now_ms=0, mark=mark)
    assert near.get("s1", now_ms=1) is None


def test_near_cache_is_bounded() -> None:
    near = NearCache(capacity=3, ttl_ms=1000)
    near.activate()
    for i in range(10):
        near.put(f"s{i}", Pin("c", 0), now_ms=0, mark=near.mark())
        assert len(near) <= 3


def test_a_full_near_cache_drops_the_oldest_sessions_not_in_use() -> None:
    near = NearCache(capacity=16, ttl_ms=1000)
    near.activate()
    for i in range(16):
        near.put(f"s{i}", Pin("c", 0), now_ms=0, mark=near.mark())
    near.put("s0", Pin("c", 0), now_ms=1, mark=near.mark())  # read again from Redis: newest
    assert near.get("s1", now_ms=1) is not None  # in use: spared once
    near.put("new", Pin("c", 0), now_ms=2, mark=near.mark())
    kept = {f"s{i}" for i in range(16) if near.get(f"s{i}", now_ms=3) is not None}
    # An eighth (2 of 16) went: the two oldest not used since they were cached.
    assert kept == {f"s{i}" for i in range(16)} - {"s2", "s3"}
    assert near.get("new", now_ms=3) is not None


def test_a_burst_of_new_sessions_does_not_push_out_the_sessions_in_use() -> None:
    near = NearCache(capacity=80, ttl_ms=10_000)
    near.activate()
    for i in range(10):
        near.put(f"busy{i}", Pin("c", 0), now_ms=0, mark=near.mark())
    for n in range(1000):
        for i in range(10):  # every busy session is read between evictions
            if n % 5 == 0:
                assert near.get(f"busy{i}", now_ms=1) is not None
        near.put(f"new{n}", Pin("c", 0), now_ms=1, mark=near.mark())
    assert all(near.get(f"busy{i}", now_ms=2) is not None for i in range(10))
    assert len(near) <= 80


def test_when_every_session_is_in_use_the_oldest_still_make_room() -> None:
    near = NearCache(capacity=8, ttl_ms=1000)
    near.activate()
    for i in range(8):
        near.put(f"s{i}", Pin("c", 0), now_ms=0, mark=near.mark())
        near.get(f"s{i}", now_ms=0)
    near.put("new", Pin("c", 0), now_ms=1, mark=near.mark())
    assert near.get("s0", now_ms=1) is None
    assert near.get("new", now_ms=1) is not None
    assert len(near) == 8


def test_near_cache_lists_pins_in_use_past_half_their_life_as_due() -> None:
    near = NearCache(capacity=10, ttl_ms=1000)
    near.activate()
    for sid in ("busy", "idle", "young"):
        near.put(sid, Pin("c", 0), now_ms=0, mark=near.mark())
    near.put("young", Pin("c", 0), now_ms=400, mark=near.mark())
    assert near.get("busy", now_ms=400) is not None
    assert near.take_due(10) == []  # under half their life: nothing to refresh yet
    assert near.get("busy", now_ms=600) is not None  # in use past half its life
    assert near.get("young", now_ms=600) is not None  # read again at 400: not yet due
    assert near.get("busy", now_ms=700) is not None
    assert near.take_due(10) == ["busy"]  # once, however often it was used
    assert near.take_due(10) == []
    # Refreshed (put again from a new read), it is trusted for a whole ttl again.
    near.put("busy", Pin("c", 0), now_ms=700, mark=near.mark())
    assert near.get("busy", now_ms=1500) is not None
    assert near.get("idle", now_ms=1500) is None  # never used: it just expires


def test_near_cache_takes_due_sessions_in_bounded_batches_and_forgets_invalidated_ones() -> None:
    near = NearCache(capacity=100, ttl_ms=1000)
    near.activate()
    for i in range(5):
        near.put(f"s{i}", Pin("c", 0), now_ms=0, mark=near.mark())
        near.get(f"s{i}", now_ms=600)
    near.invalidate("s1")
    assert near.take_due(2) == ["s0", "s2"]
    assert near.take_due(2) == ["s3", "s4"]
    near.get("s0", now_ms=600)
    near.deactivate()  # nothing cached any more, so nothing to refresh
    assert near.take_due(10) == []


def test_a_refreshed_pin_is_not_due_again_and_an_expired_one_is_forgotten() -> None:
    near = NearCache(capacity=10, ttl_ms=1000)
    near.activate()
    near.put("busy", Pin("c", 0), now_ms=0, mark=near.mark())
    near.get("busy", now_ms=600)  # due...
    near.put("busy", Pin("c", 0), now_ms=650, mark=near.mark())  # ...and refreshed meanwhile
    assert near.take_due(10) == []
    near.put("gone", Pin("c", 0), now_ms=0, mark=near.mark())
    near.get("gone", now_ms=600)
    assert near.get("gone", now_ms=1000) is None  # expired here before its refresh ran
    assert near.take_due(10) == []  # so there is nothing to refresh


def test_a_cached_pin_keeps_its_version_and_the_ttl_it_was_read_with() -> None:
    near = NearCache(capacity=10, ttl_ms=1000)
    near.activate()
    near.put("s1", Pin("eu-west", 5, 42, ttl_ms=30_000), now_ms=0, mark=near.mark())
    assert near.get("s1", now_ms=1) == Pin("eu-west", 5, 42, ttl_ms=30_000)
    # Read again with a newer version (another edge failed it over): the newer one serves.
    near.put("s1", Pin("us-east", 5, 43, ttl_ms=30_000), now_ms=2, mark=near.mark())
    assert near.get("s1", now_ms=3) == Pin("us-east", 5, 43, ttl_ms=30_000)


def test_a_near_cache_with_no_ttl_keeps_nothing() -> None:
    near = NearCache(capacity=10, ttl_ms=0)  # near_cache_s = 0: off
    near.activate()
    near.put("s1", Pin("eu-west", 0), now_ms=0, mark=near.mark())
    assert near.get("s1", now_ms=0) is None
    assert len(near) == 0
