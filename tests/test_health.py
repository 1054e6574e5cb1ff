"""Health transitions: a pure state machine driven by probe results and an explicit clock."""

from __future__ import annotations

import pytest

from georouter.core.health import (
    MAX_WINDOW,
    HealthState,
    ProbeResult,
    Status,
    check_window,
    observe,
)

OK = ProbeResult(ok=True, detail="HTTP 200")
FAIL = ProbeResult(ok=False, detail="connect error")


def states(
    results: str, *, rise: int = 2, fall: int = 3, window: int = 0, window_fall: int = 0
) -> list[HealthState]:
    """Feed a string of probe outcomes ('+' success, '-' failure); the state after each."""
    state = HealthState()
    seen = []
    for t, ch in enumerate(results):
        state = observe(
            state,
            OK if ch == "+" else FAIL,
            now=1000.0 + t,
            rise=rise,
            fall=fall,
            window=window,
            window_fall=window_fall,
        )
        seen.append(state)
    return seen


def run(results: str, **settings: int) -> list[Status]:
    """The status after each of ``results``."""
    return [state.status for state in states(results, **settings)]


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


def statuses(text: str) -> list[Status]:
    return [U if ch == "U" else D for ch in text]


@pytest.mark.parametrize(
    ("results", "window", "window_fall", "expected"),
    [
        pytest.param("+-+-+-+-+-+-", 0, 0, "UUUUUUUUUUUU", id="no-window-alternating-stays-up"),
        pytest.param("+-+-+-+-+-+-", 10, 5, "UUUUUUUUUDDD", id="alternating-down-at-5-of-10"),
        pytest.param("+-+-+-+-", 10, 5, "UUUUUUUU", id="four-of-ten-is-not-enough"),
        pytest.param("+--+--+--+", 10, 5, "UUUUUUUDDD", id="pairs-of-failures"),
        pytest.param(
            "+-++-++-++-++-++-+", 10, 5, "U" * 18, id="one-in-three-never-reaches-5-of-10"
        ),
        pytest.param("+-+-+-", 4, 2, "UUUDDD", id="small-window"),
        # Only the last `window` probes count: old failures slide out.
        pytest.param("+-+-++++++++-+-", 6, 3, "U" * 15, id="old-failures-slide-out"),
        pytest.param("+-+-++++-+-+-", 6, 3, "U" * 12 + "D", id="failures-within-the-window"),
        # Failures in a row still take it down first when they come first.
        pytest.param("+---", 10, 5, "UUUD", id="fall-still-applies"),
        pytest.param("+-+-", 10, 1, "UDDD", id="window-fall-of-one"),
        # A down cluster comes back by `rise` alone, the window does not hold it down...
        pytest.param("-++", 10, 5, "DDU", id="rise-unaffected"),
        # ...and it starts afresh: the failures that took it down are forgotten.
        pytest.param(
            "+-+-+-+-+-" + "++" + "-+-+",
            10,
            5,
            "UUUUUUUUUD" + "DU" + "UUUU",
            id="a-recovered-cluster-starts-with-a-clean-record",
        ),
    ],
)
def test_failures_over_a_window_take_an_up_cluster_down(
    results: str, window: int, window_fall: int, expected: str
) -> None:
    assert run(results, window=window, window_fall=window_fall) == statuses(expected)


@pytest.mark.parametrize(
    ("results", "window", "recent", "recent_len"),
    [
        pytest.param("", 10, 0, 0, id="never-probed"),
        pytest.param("+", 10, 0b0, 1, id="first-probe-starts-the-record"),
        pytest.param("-", 10, 0b1, 1, id="a-first-failure-is-in-the-record"),
        pytest.param("+-+", 10, 0b010, 3, id="newest-in-bit-0"),
        pytest.param("+--++-", 4, 0b1001, 4, id="only-the-last-window-probes"),
        pytest.param("+-" * 5, 10, 0b1, 1, id="reset-to-the-changing-probe"),
        pytest.param("+-+-", 0, 0, 0, id="no-window-no-record"),
    ],
)
def test_the_window_is_kept_as_plain_bits(
    results: str, window: int, recent: int, recent_len: int
) -> None:
    state = states(results, window=window, window_fall=5)[-1] if results else HealthState()
    assert (state.recent, state.recent_len) == (recent, recent_len)
    assert state.recent_failures == bin(recent).count("1")
    assert state.as_json()["recent_failures"] == state.recent_failures
    assert state.as_json()["recent_probes"] == recent_len


def test_a_window_shrunk_between_probes_drops_the_oldest() -> None:
    # A replacement prober may run with other settings than the one that published.
    state = HealthState(status=Status.UP, recent=0b1111_0000, recent_len=8)
    after = observe(state, OK, now=1.0, rise=2, fall=3, window=4, window_fall=3)
    assert (after.recent, after.recent_len, after.status) == (0b0000, 4, U)


def test_without_window_arguments_observe_behaves_as_before() -> None:
    state = HealthState()
    for t, ok in enumerate([True, False] * 20):
        state = observe(state, OK if ok else FAIL, now=float(t), rise=2, fall=3)
    assert state.status is U
    assert (state.recent, state.recent_len) == (0, 0)


@pytest.mark.parametrize(
    ("window", "window_fall", "valid"),
    [
        pytest.param(0, 0, True, id="off"),
        pytest.param(0, 99, True, id="off-ignores-window-fall"),
        pytest.param(10, 5, True, id="default"),
        pytest.param(MAX_WINDOW, MAX_WINDOW, True, id="largest"),
        pytest.param(MAX_WINDOW + 1, 5, False, id="too-long-for-the-board"),
        pytest.param(-1, 5, False, id="negative"),
        pytest.param(10, 0, False, id="window-fall-zero"),
        pytest.param(10, 11, False, id="window-fall-beyond-window"),
    ],
)
def test_window_settings_are_checked(window: int, window_fall: int, valid: bool) -> None:
    if valid:
        check_window(window, window_fall)
    else:
        with pytest.raises(ValueError, match="window"):
            check_window(window, window_fall)
