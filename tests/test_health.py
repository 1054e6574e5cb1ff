"""Health transitions: a pure state machine driven by probe results and an explicit clock."""

from __future__ import annotations

import pytest

from georouter.core.health import HealthState, ProbeResult, Status, observe

OK = ProbeResult(ok=True, detail="HTTP 200")
FAIL = ProbeResult(ok=False, detail="connect error")


def run(results: str, *, rise: int = 2, fall: int = 3) -> list[Status]:
    """Feed a string of probe outcomes ('+' success, '-' failure); the status after each."""
    state = HealthState()
    seen = []
    for t, ch in enumerate(results):
        state = observe(state, OK if ch == "+" else FAIL, now=1000.0 + t, rise=rise, fall=fall)
        seen.append(state.status)
    return seen


U, D = Status.UP, Status.DOWN


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        pytest.param("+", [U], id="first-success-is-up-at-once"),
        pytest.param("-", [D], id="first-failure-is-down-at-once"),
        pytest.param("+--", [U, U, U], id="two-failures-are-not-enough"),
        pytest.param("+---", [U, U, U, D], id="fall-consecutive-failures-take-it-down"),
        pytest.param("+--+--", [U] * 6, id="a-success-resets-the-failure-count"),
        pytest.param("-+", [D, D], id="one-success-does-not-bring-it-back"),
        pytest.param("-++", [D, D, U], id="rise-successes-bring-it-back"),
        pytest.param("-+-+-+", [D] * 6, id="flapping-stays-down"),
        pytest.param("+---++", [U, U, U, D, D, U], id="down-and-back"),
    ],
)
def test_status_follows_rise_and_fall(results: str, expected: list[Status]) -> None:
    assert run(results) == expected


def test_thresholds_of_one_follow_every_probe() -> None:
    assert run("+-+-", rise=1, fall=1) == [U, D, U, D]


def test_state_records_when_the_status_changed_and_what_the_probe_saw() -> None:
    state = HealthState()
    state = observe(state, OK, now=10.0, rise=2, fall=1)
    assert (state.since, state.last_probe_at, state.probes) == (10.0, 10.0, 1)
    state = observe(state, OK, now=11.0, rise=2, fall=1)
    assert (state.since, state.last_probe_at, state.consecutive_ok) == (10.0, 11.0, 2)
    state = observe(state, FAIL, now=12.0, rise=2, fall=1)
    assert state.status is Status.DOWN
    assert (state.since, state.last_detail, state.consecutive_failed) == (12.0, "connect error", 1)
    assert not state.routable


def test_a_cluster_never_probed_is_not_routable() -> None:
    assert HealthState().status is Status.UNKNOWN
    assert not HealthState().routable
