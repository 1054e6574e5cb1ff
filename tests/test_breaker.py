"""The session store's circuit breaker (pure: outcomes in, a decision out)."""

from __future__ import annotations

from georouter.core.breaker import Breaker, BreakerState


def test_a_new_breaker_is_closed_and_allows_calls() -> None:
    breaker = Breaker(failures_to_open=3)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allows
    assert breaker.consecutive_failures == 0


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = Breaker(failures_to_open=3)
    assert not breaker.failure()
    assert not breaker.failure()
    breaker.success()  # resets the count
    assert breaker.consecutive_failures == 0
    assert not breaker.failure()
    assert not breaker.failure()
    assert breaker.allows
    assert breaker.failure()  # the third in a row opens it
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allows


def test_an_open_breaker_is_not_opened_again_by_more_failures() -> None:
    breaker = Breaker(failures_to_open=2)
    breaker.failure()
    assert breaker.failure()
    assert not breaker.failure()  # already open: this one did not open it
    assert not breaker.failure()
    assert breaker.state is BreakerState.OPEN


def test_only_close_closes_an_open_breaker() -> None:
    breaker = Breaker(failures_to_open=1)
    assert breaker.failure()
    breaker.success()  # a success seen while open (a call begun before) does not close it
    assert not breaker.allows
    breaker.close()
    assert breaker.allows
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0


def test_a_closed_breaker_counts_failures_afresh() -> None:
    breaker = Breaker(failures_to_open=2)
    breaker.failure()
    assert breaker.failure()
    breaker.close()
    assert not breaker.failure()  # the failures before it opened do not count again
    assert breaker.allows
    assert breaker.failure()
    assert not breaker.allows
