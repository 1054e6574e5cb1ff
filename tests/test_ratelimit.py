"""Per-client budgets (core.ratelimit): pure, the time passed in."""

from __future__ import annotations

import ipaddress

from georouter.core.ratelimit import FailureWindow, TokenBuckets, client_key


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    buckets = TokenBuckets(rate_per_s=2, burst=5)
    assert [buckets.take("a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not buckets.take("a", 0.4)
    assert buckets.take("a", 0.5)
    assert buckets.retry_after_s("a", 0.5) == 0.5


def test_buckets_are_per_key() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=1)
    assert buckets.take("a", 0.0)
    assert not buckets.take("a", 0.0)
    assert buckets.take("b", 0.0)


def test_a_bucket_refills_to_its_burst_and_no_further() -> None:
    buckets = TokenBuckets(rate_per_s=100, burst=3)
    buckets.take("a", 0.0)
    assert sum(buckets.take("a", 1000.0) for _ in range(10)) == 3


def test_a_refunded_token_can_be_taken_again() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=1)
    assert buckets.take("a", 0.0)
    assert not buckets.take("a", 0.0)
    buckets.refund("a")
    assert buckets.take("a", 0.0)
    buckets.refund("a")
    buckets.refund("a")  # never above the burst
    assert buckets.take("a", 0.0)
    assert not buckets.take("a", 0.0)


def test_a_zero_rate_is_no_limit() -> None:
    buckets = TokenBuckets(rate_per_s=0, burst=0)
    assert not buckets.enabled
    assert all(buckets.take("a", 0.0) for _ in range(10_000))


def test_many_keys_evict_the_oldest_instead_of_growing() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=1, max_keys=100)
    for i in range(1000):
        buckets.take(str(i), 0.0)
    assert len(buckets._buckets) == 100
    # An evicted key starts again with a full bucket: errs towards serving.
    assert buckets.take("0", 0.0)


def test_ipv6_clients_share_a_budget_per_64() -> None:
    one = ipaddress.ip_address("2001:db8:1:2::1")
    same_64 = ipaddress.ip_address("2001:db8:1:2:ffff::9")
    other_64 = ipaddress.ip_address("2001:db8:1:3::1")
    assert client_key(one) == client_key(same_64) == "2001:db8:1:2::/64"
    assert client_key(other_64) != client_key(one)
    assert client_key(ipaddress.ip_address("192.0.2.7")) == "192.0.2.7"
    assert client_key(None) == "-"


def test_failures_within_the_window_lock_out_until_it_has_passed() -> None:
    window = FailureWindow(limit=3, window_s=60)
    for t in (0.0, 1.0):
        window.failed("a", t)
    assert window.locked_out("a", 2.0) == 0.0
    window.failed("a", 2.0)
    assert window.locked_out("a", 2.0) == 58.0
    assert window.locked_out("b", 2.0) == 0.0
    assert window.locked_out("a", 60.0) == 0.0


def test_failures_spread_wider_than_the_window_never_lock_out() -> None:
    window = FailureWindow(limit=3, window_s=10)
    for t in range(0, 100, 6):
        window.failed("a", float(t))
        assert window.locked_out("a", float(t)) == 0.0
