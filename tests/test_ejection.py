"""Passive health's state machine (core.ejection) and how it meets health, drains and
overrides (core.controls.routability): plain values in, plain values out."""

from __future__ import annotations

import math
import tomllib

import pytest

from georouter.config import HealthSettings, parse
from georouter.core import ejection
from georouter.core.controls import Controls, Drain, Forced, ForcedState, routability
from georouter.core.ejection import Outliers
from georouter.core.health import HealthState, Status, unroutable
from georouter.errors import ConfigError

SETTINGS = HealthSettings(
    passive_failures=3, ejection_s=10.0, max_ejection_s=40.0, max_ejected_share=0.5
)


def fail(
    outliers: Outliers,
    name: str,
    times: int,
    now: float,
    *,
    clusters: int = 2,
    settings: HealthSettings = SETTINGS,
) -> tuple[Outliers, bool]:
    ejected = False
    for _ in range(times):
        outliers, ejected = ejection.report(
            outliers,
            name,
            ok=False,
            detail="HTTP 503",
            now=now,
            clusters=clusters,
            settings=settings,
        )
    return outliers, ejected


def succeed(outliers: Outliers, name: str, now: float) -> Outliers:
    return ejection.report(
        outliers, name, ok=True, detail="", now=now, clusters=2, settings=SETTINGS
    )[0]


def test_failures_in_a_row_eject_a_cluster_at_the_threshold_not_before() -> None:
    outliers, ejected = fail({}, "a", 2, now=0.0)
    assert not ejected
    assert "a" not in ejection.ejected(outliers, 0.0)
    outliers, ejected = fail(outliers, "a", 1, now=0.0)
    assert ejected
    assert ejection.ejected(outliers, 0.0)["a"] == (
        "ejected: 3 consecutive failures, the last HTTP 503, back in 10 s"
    )


def test_a_success_between_failures_starts_the_count_again() -> None:
    outliers, _ = fail({}, "a", 2, now=0.0)
    outliers = succeed(outliers, "a", 0.0)
    outliers, ejected = fail(outliers, "a", 2, now=0.0)
    assert not ejected


def test_an_ejection_ends_by_time_alone() -> None:
    outliers, _ = fail({}, "a", 3, now=100.0)
    assert "a" in ejection.ejected(outliers, 109.9)
    assert "a" not in ejection.ejected(outliers, 110.0)
    assert ejection.next_change(outliers, 109.5) == 110.0
    assert ejection.next_change(outliers, 110.0) == math.inf


def test_reports_while_ejected_change_nothing() -> None:
    outliers, _ = fail({}, "a", 3, now=0.0)
    after, ejected = fail(outliers, "a", 5, now=1.0)
    assert not ejected
    assert after == outliers
    assert succeed(outliers, "a", 2.0) == outliers


@pytest.mark.parametrize(
    ("gap_s", "expected_s"),
    [(0.0, 20.0), (39.0, 20.0), (40.0, 10.0), (400.0, 10.0)],
    ids=["at-once", "just-within-healthy-period", "after-healthy-period", "long-after"],
)
def test_a_repeated_ejection_doubles_unless_a_healthy_period_passed(
    gap_s: float, expected_s: float
) -> None:
    outliers, _ = fail({}, "a", 3, now=0.0)
    back = 10.0
    outliers, ejected = fail(outliers, "a", 3, now=back + gap_s)
    assert ejected
    assert outliers["a"].ejected_until == pytest.approx(back + gap_s + expected_s)


def test_repeated_ejections_grow_up_to_the_cap() -> None:
    outliers: Outliers = {}
    now = 0.0
    lengths = []
    for _ in range(6):
        outliers, _ = fail(outliers, "a", 3, now=now)
        until = outliers["a"].ejected_until
        assert until is not None
        lengths.append(until - now)
        now = until
    assert lengths == [10.0, 20.0, 40.0, 40.0, 40.0, 40.0]


@pytest.mark.parametrize(
    ("clusters", "share", "most"),
    [(2, 0.5, 1), (3, 0.5, 1), (4, 0.5, 2), (5, 1.0, 5), (1, 0.5, 0), (4, 0.0, 0)],
    ids=["half-of-2", "half-of-3", "half-of-4", "all-of-5", "half-of-1", "none"],
)
def test_never_more_than_the_share_of_clusters_is_ejected_at_once(
    clusters: int, share: float, most: int
) -> None:
    settings = HealthSettings(passive_failures=1, ejection_s=10.0, max_ejected_share=share)
    outliers: Outliers = {}
    for i in range(clusters):
        outliers, _ = fail(outliers, f"c{i}", 1, now=0.0, clusters=clusters, settings=settings)
    assert len(ejection.ejected(outliers, 0.0)) == most


def test_a_cluster_kept_in_by_the_share_is_ejected_once_there_is_room() -> None:
    outliers, _ = fail({}, "a", 3, now=0.0)
    outliers, ejected = fail(outliers, "b", 3, now=1.0)
    assert not ejected
    # "a" is back at 10: the next failure of "b" takes the room.
    outliers, ejected = fail(outliers, "b", 1, now=10.0)
    assert ejected
    assert set(ejection.ejected(outliers, 10.0)) == {"b"}


def test_passive_failures_zero_turns_ejection_off() -> None:
    settings = HealthSettings(passive_failures=0)
    outliers, ejected = fail({}, "a", 100, now=0.0, settings=settings)
    assert not ejected
    assert outliers == {}


def test_records_of_removed_clusters_are_forgotten() -> None:
    outliers, _ = fail({}, "a", 3, now=0.0)
    assert ejection.forget(outliers, frozenset({"b"})) == {}
    assert ejection.forget(outliers, frozenset({"a"})) is outliers


# How health, ejections, drains and overrides combine.

HEALTH = unroutable({"a": HealthState(status=Status.UP), "b": HealthState(status=Status.DOWN)})


def test_with_nothing_but_health_both_views_are_health_itself() -> None:
    view = routability(HEALTH, {}, Controls(), now=0.0)
    assert view.new is HEALTH
    assert view.pinned is HEALTH
    assert view.until == math.inf


def test_a_draining_cluster_takes_no_new_sessions_but_keeps_its_pins_until_the_deadline() -> None:
    controls = Controls(drains={"a": Drain(deadline=100.0, since=0.0)})
    before = routability(HEALTH, {}, controls, now=40.0)
    assert before.new["a"] == "draining: no new sessions, pinned ones move in 60 s"
    assert "a" not in before.pinned
    assert "b" in before.new
    assert "b" in before.pinned
    after = routability(HEALTH, {}, controls, now=100.0)
    assert "a" in after.new
    assert after.pinned["a"] == "drained: takes no traffic until undrained"


def test_an_override_down_rules_a_healthy_cluster_out_for_everyone_until_it_expires() -> None:
    forced = ForcedState(Forced.DOWN, until=30.0, since=0.0, reason="maintenance")
    controls = Controls(forced={"a": forced})
    view = routability(HEALTH, {}, controls, now=10.0)
    assert view.new["a"] == "overridden down: maintenance (expires in 20 s)"
    assert "a" in view.pinned
    assert "a" not in routability(HEALTH, {}, controls, now=30.0).new


def test_an_override_up_makes_a_down_or_ejected_cluster_routable() -> None:
    controls = Controls(forced={"b": ForcedState(Forced.UP, until=30.0, since=0.0)})
    view = routability(HEALTH, {"b": "ejected: ..."}, controls, now=10.0)
    assert "b" not in view.new
    assert "b" not in view.pinned
    assert "a" not in view.new


def test_an_ejected_cluster_is_out_for_new_and_pinned_sessions() -> None:
    view = routability(HEALTH, {"a": "ejected: 5 consecutive failures"}, Controls(), now=0.0)
    assert view.new["a"] == view.pinned["a"] == "ejected: 5 consecutive failures"


def test_a_name_health_does_not_know_stays_unroutable_through_the_merge() -> None:
    view = routability(HEALTH, {"a": "ejected"}, Controls(), now=0.0)
    assert "added-by-a-reload" in view.new
    assert view.new["added-by-a-reload"] == "not probed yet"


# The [health] keys of passive health, parsed and checked with the rest of the file.

CLUSTERS = """
[[clusters]]
name = "a"
url = "http://a.example.net"
lat = 50.0
lon = 8.0
"""


def test_passive_health_keys_have_their_defaults() -> None:
    health = parse(tomllib.loads(CLUSTERS)).health
    assert (health.passive_failures, health.ejection_s, health.max_ejection_s) == (5, 30.0, 300.0)
    assert health.max_ejected_share == 0.5


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("passive_failures = -1", "health.passive_failures: must be within 0..1000"),
        ("passive_failures = 2.5", "health.passive_failures: must be an integer"),
        ("ejection_s = 0", "health.ejection_s: must be within 0.1..86400"),
        ("ejection_s = 10\nmax_ejection_s = 5", "health.max_ejection_s: must be at least"),
        ("max_ejected_share = 1.5", "health.max_ejected_share: must be within 0..1"),
    ],
    ids=["negative-failures", "fractional-failures", "zero-ejection", "cap-below-base", "share"],
)
def test_bad_passive_health_keys_are_refused_with_their_key_path(table: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(tomllib.loads(f"[health]\n{table}\n{CLUSTERS}"))
    found = [str(p) for p in info.value.problems]
    assert any(p.startswith(problem) for p in found), found
