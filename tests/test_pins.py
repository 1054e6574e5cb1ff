"""Pins and the bounded local memory of them (pure, explicit clock)."""

from __future__ import annotations

import pytest

from georouter.breaker import Breaker, BreakerState
from georouter.pins import LocalPins, Pin


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("eu-west|1700000000000", Pin("eu-west", 1700000000000), id="ours"),
        pytest.param(b"ap-sydney|5", Pin("ap-sydney", 5), id="bytes"),
        pytest.param("!|42", Pin("!", 42), id="tombstone"),
        pytest.param("eu-west", None, id="no-separator"),
        pytest.param("|5", None, id="no-cluster"),
        pytest.param("eu-west|soon", None, id="no-time"),
        pytest.param("", None, id="empty"),
    ],
)
def test_pin_values_decode(raw: str | bytes, expected: Pin | None) -> None:
    assert Pin.decode(raw) == expected


def test_pin_round_trips_and_knows_its_age() -> None:
    pin = Pin("eu-west", 1_000)
    assert Pin.decode(pin.encode()) == pin
    assert not pin.forgotten
    assert Pin("!", 1).forgotten
    assert not pin.expired(now_ms=1_000 + 500, max_age_ms=500)
    assert pin.expired(now_ms=1_000 + 501, max_age_ms=500)
    assert not pin.expired(now_ms=10**15, max_age_ms=0)  # 0: no cap


def test_local_pins_forget_after_the_sliding_ttl() -> None:
    pins = LocalPins(capacity=10, ttl_ms=100)
    pins.put("s1", Pin("eu-west", 0), now_ms=0)
    assert pins.get("s1", now_ms=99) == Pin("eu-west", 0, 100)
    # The read slid the expiry to 199.
    assert pins.get("s1", now_ms=198) is not None
    assert pins.get("s1", now_ms=298) is None
    assert len(pins) == 0


def test_local_pins_keep_only_the_most_recently_used() -> None:
    pins = LocalPins(capacity=2, ttl_ms=1000)
    pins.put("a", Pin("c1", 0), now_ms=0)
    pins.put("b", Pin("c2", 0), now_ms=0)
    pins.get("a", now_ms=1)  # a is now the most recent
    pins.put("c", Pin("c3", 0), now_ms=2)
    assert len(pins) == 2
    assert pins.get("b", now_ms=3) is None
    assert pins.get("a", now_ms=3) is not None
    assert pins.get("c", now_ms=3) is not None


def test_local_pins_with_no_capacity_keep_nothing() -> None:
    pins = LocalPins(capacity=0, ttl_ms=1000)
    pins.put("a", Pin("c1", 0), now_ms=0)
    assert pins.get("a", now_ms=0) is None


def test_dropping_a_pin() -> None:
    pins = LocalPins(capacity=2, ttl_ms=1000)
    pins.put("a", Pin("c1", 0), now_ms=0)
    assert pins.drop("a")
    assert not pins.drop("a")
    assert pins.get("a", now_ms=0) is None


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = Breaker(failures_to_open=3)
    assert breaker.allows
    assert not breaker.failure()
    assert not breaker.failure()
    breaker.success()  # resets the count
    assert not breaker.failure()
    assert not breaker.failure()
    assert breaker.failure()  # the third in a row opens it
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allows
    assert not breaker.failure()  # already open: not "opened" again
    assert breaker.opened == 1
    breaker.close()
    assert breaker.allows
    assert breaker.consecutive_failures == 0


def test_near_cache_serves_only_while_active() -> None:
    from georouter.pins import NearCache

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
    from georouter.pins import NearCache

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
    from georouter.pins import NearCache

    near = NearCache(capacity=10, ttl_ms=1000)
    mark = near.mark()
    near.activate()
    near.deactivate()
    near.activate()
    near.put("s1", Pin("eu-west", 0), now_ms=0, mark=mark)
    assert near.get("s1", now_ms=1) is None


def test_near_cache_is_bounded() -> None:
    from georouter.pins import NearCache

    near = NearCache(capacity=3, ttl_ms=1000)
    near.activate()
    for i in range(10):
        near.put(f"s{i}", Pin("c", 0), now_ms=0, mark=near.mark())
        assert len(near) <= 3
