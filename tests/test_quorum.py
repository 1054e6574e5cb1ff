"""The verdict the edges agree on (``core.quorum.agree``), and its ``[health]`` keys.

Pure: reports in, clusters down by quorum and down from here only out. The
table below is the specification; the property is the point of sharing: every
edge that sees the same reports names the same clusters down.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from georouter.config import parse
from georouter.core.quorum import Agreement, Report, Seen, agree
from georouter.errors import ConfigError
from georouter.probes.passive import PassiveHealth
from georouter.probes.routable import RoutableView

UP, DOWN = Seen.UP, Seen.DOWN
NOW_MS = 1_000_000
WINDOW_MS = 3_000
CLUSTERS = ("eu", "us", "ap")

MINIMAL = """
[router]
fallback = "eu"

[[clusters]]
name = "eu"
url = "http://127.0.0.1:9001"
lat = 53.3
lon = -6.3
"""


def report(edge: str, age_ms: int = 0, **seen: Seen) -> Report:
    return Report(edge, NOW_MS - age_ms, seen)


def verdict(
    local: Mapping[str, Seen],
    *reports: Report,
    quorum: float = 0.5,
    local_why: Mapping[str, str] | None = None,
) -> Agreement:
    why = local_why or {n: "down" for n, s in local.items() if s is DOWN}
    return agree(
        CLUSTERS,
        local,
        why,
        reports,
        edge="me",
        now_ms=NOW_MS,
        window_ms=WINDOW_MS,
        quorum=quorum,
    )


ALL_UP = {"eu": UP, "us": UP, "ap": UP}


@pytest.mark.parametrize(
    ("local", "reports", "quorum", "down", "here_only"),
    [
        pytest.param(ALL_UP, (), 0.5, {}, {}, id="alone-all-up"),
        pytest.param({**ALL_UP, "eu": DOWN}, (), 0.5, {"eu": "down"}, {}, id="alone-down-is-down"),
        pytest.param(
            {"us": UP, "ap": UP},
            (),
            0.5,
            {"eu": "not probed yet"},
            {},
            id="alone-not-probed-is-not-probed",
        ),
        pytest.param(
            {**ALL_UP, "eu": DOWN},
            (report("b", eu=UP), report("c", eu=UP)),
            0.5,
            {},
            {"eu": "down from here only; up for 2 of 3 edges"},
            id="only-this-edge-sees-it-down",
        ),
        pytest.param(
            ALL_UP,
            (report("b", eu=DOWN), report("c", eu=DOWN)),
            0.5,
            {"eu": "down for 2 of 3 edges"},
            {},
            id="two-of-three-down-is-down-here-too",
        ),
        pytest.param(
            ALL_UP,
            (report("b", eu=DOWN),),
            0.5,
            {"eu": "down for 1 of 2 edges"},
            {},
            id="a-tie-at-the-quorum-is-down",
        ),
        pytest.param(
            ALL_UP, (report("b", eu=DOWN),), 0.6, {}, {}, id="a-tie-under-a-strict-majority-is-up"
        ),
        pytest.param(
            ALL_UP,
            (report("b", eu=DOWN), report("c", eu=DOWN)),
            1.0,
            {},
            {},
            id="quorum-1-needs-every-edge",
        ),
        pytest.param(
            {**ALL_UP, "eu": DOWN},
            (report("b", age_ms=WINDOW_MS + 1, eu=UP), report("c", age_ms=WINDOW_MS + 1, eu=UP)),
            0.5,
            {"eu": "down"},
            {},
            id="stale-reports-do-not-count",
        ),
        pytest.param(
            {**ALL_UP, "eu": DOWN},
            (report("b", age_ms=WINDOW_MS, eu=UP),),
            0.6,
            {},
            {"eu": "down from here only; up for 1 of 2 edges"},
            id="a-report-exactly-window-old-counts",
        ),
        pytest.param(
            {**ALL_UP, "eu": DOWN},
            (report("me", eu=UP), report("b", eu=DOWN)),
            0.5,
            {"eu": "down for 2 of 2 edges"},
            {},
            id="this-edges-own-view-beats-its-report",
        ),
        pytest.param(
            {"us": UP, "ap": UP},
            (report("b", eu=UP), report("c", eu=UP)),
            0.5,
            {},
            {"eu": "not probed from here yet; up for 2 of 2 edges"},
            id="not-probed-here-but-up-elsewhere",
        ),
        pytest.param(
            {"us": UP, "ap": UP},
            (report("b", us=UP), report("c", ap=UP)),
            0.5,
            {"eu": "not probed yet"},
            {},
            id="probed-by-no-one",
        ),
    ],
)
def test_the_verdict_table(
    local: Mapping[str, Seen],
    reports: tuple[Report, ...],
    quorum: float,
    down: dict[str, str],
    here_only: dict[str, str],
) -> None:
    found = verdict(local, *reports, quorum=quorum)
    assert dict(found.down) == down
    assert dict(found.here_only) == here_only
    assert dict(found.new) == {**down, **here_only}


def test_with_no_other_edge_the_verdict_is_this_edges_own_reasons_and_all() -> None:
    local_why = {"eu": "down", "us": "not probed yet"}
    found = verdict({"eu": DOWN, "ap": UP}, local_why=local_why)
    assert dict(found.down) == local_why
    assert dict(found.new) == local_why
    assert not found.here_only
    assert found.edges == 1


def test_a_cluster_the_verdict_was_not_asked_about_counts_as_not_probed() -> None:
    found = verdict(ALL_UP)
    assert "added-by-a-reload" in found.down
    assert "added-by-a-reload" in found.new


def test_each_edges_view_is_shown_this_edge_first_then_by_id_with_its_age() -> None:
    found = verdict(
        {**ALL_UP, "eu": DOWN}, report("c", age_ms=1500, eu=UP), report("b", age_ms=250)
    )
    assert [v.as_json() for v in found.views["eu"]] == [
        {"edge": "me", "state": "down", "age_s": 0.0, "here": True},
        {"edge": "b", "state": "unknown", "age_s": 0.25, "here": False},
        {"edge": "c", "state": "up", "age_s": 1.5, "here": False},
    ]
    assert found.edges == 3


def test_a_report_from_a_redis_clock_running_ahead_counts_within_the_window() -> None:
    found = verdict({**ALL_UP, "eu": DOWN}, report("b", age_ms=-1000, eu=UP), quorum=0.6)
    assert "eu" in found.here_only
    assert found.views["eu"][1].age_s == 0.0


EDGES = ("a", "b", "c", "d", "e")
seen_maps = st.dictionaries(st.sampled_from(CLUSTERS), st.sampled_from([UP, DOWN]))


@settings(max_examples=300, deadline=None)
@given(
    views=st.lists(
        st.tuples(seen_maps, st.integers(0, 2 * WINDOW_MS)), min_size=1, max_size=len(EDGES)
    ),
    quorum=st.sampled_from([0.25, 1 / 3, 0.5, 0.6, 2 / 3, 1.0]),
)
def test_every_edge_given_the_same_reports_agrees_on_the_down_set(
    views: list[tuple[dict[str, Seen], int]], quorum: float
) -> None:
    reports = [report(edge, age, **seen) for edge, (seen, age) in zip(EDGES, views, strict=False)]
    verdicts = {
        r.edge: agree(
            CLUSTERS,
            r.seen,
            {},
            reports,
            edge=r.edge,
            now_ms=NOW_MS,
            window_ms=WINDOW_MS,
            quorum=quorum,
        )
        for r in reports
        # An edge whose own report is stale counts itself but is not counted by others.
        if NOW_MS - r.at_ms <= WINDOW_MS
    }
    down_sets = {edge: frozenset(v.down) for edge, v in verdicts.items()}
    assert len(set(down_sets.values())) <= 1, down_sets
    for found in verdicts.values():
        # Down from here only is never down by quorum, and always something this
        # edge does not see up.
        assert not set(found.here_only) & set(found.down)


def health_with(**keys: object) -> str:
    lines = "\n".join(f"{k} = {v}" for k, v in keys.items())
    return MINIMAL + f"\n[health]\n{lines}\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(tomllib.loads(text))
    return [str(p) for p in info.value.problems]


def test_shared_health_is_off_by_default_with_a_half_quorum_over_three_intervals() -> None:
    health = parse(tomllib.loads(MINIMAL)).health
    assert (health.shared, health.quorum, health.shared_window) == (False, 0.5, 3)


def test_shared_health_keys_are_read() -> None:
    health = parse(tomllib.loads(health_with(shared="true", quorum=0.75, shared_window=5))).health
    assert (health.shared, health.quorum, health.shared_window) == (True, 0.75, 5)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        pytest.param({"shared": '"yes"'}, "health.shared: must be true or false", id="shared"),
        pytest.param(
            {"quorum": 0},
            "health.quorum: must be greater than 0 and at most 1 (a share of the edges)",
            id="quorum-0",
        ),
        pytest.param(
            {"quorum": 1.5},
            "health.quorum: must be greater than 0 and at most 1 (a share of the edges)",
            id="quorum-over-1",
        ),
        pytest.param({"quorum": '"half"'}, "health.quorum: must be a number", id="quorum-text"),
        pytest.param(
            {"shared_window": 1}, "health.shared_window: must be within 2..1000", id="window-1"
        ),
    ],
)
def test_bad_shared_health_keys_are_named(keys: dict[str, object], expected: str) -> None:
    problems = problems_of(health_with(**keys))
    assert len(problems) == 1
    assert problems[0].startswith(expected), problems


def test_with_shared_health_an_ejection_here_detours_pinned_sessions_and_moves_none() -> None:
    config = parse(
        {
            "clusters": [
                {"name": "eu-west", "url": "http://127.0.0.1:1", "lat": 53.3, "lon": -6.2},
                {"name": "us-east", "url": "http://127.0.0.1:2", "lat": 38.9, "lon": -77.4},
            ],
            "health": {"passive_failures": 1, "shared": True},
        }
    )
    passive = PassiveHealth(lambda: config, clock=lambda: 100.0)
    assert passive.report("eu-west", ok=False, detail="HTTP 503")
    everyone_sees_it_up = Agreement(down={}, here_only={}, new={}, views={}, edges=2)

    def view(shared: Agreement | None) -> RoutableView:
        return RoutableView(dict, passive=passive, shared=lambda: shared, clock=lambda: 100.0)

    shared = view(everyone_sees_it_up)
    assert "eu-west" in shared.unroutable()
    # This edge's own data path saw it fail: its requests go elsewhere, but the
    # sessions pinned there are not moved off it for every edge.
    assert "eu-west" not in shared.pinned()
    assert "ejected" in shared.detours()["eu-west"]
    alone = view(None)
    assert "eu-west" in alone.pinned()
    assert dict(alone.detours()) == {}


def test_a_cluster_the_shared_verdict_brings_back_ramps_at_an_edge_that_saw_it_up() -> None:
    from georouter.core.admission import Held
    from georouter.core.health import HealthState, Status

    config = parse(
        {
            "clusters": [
                {"name": "eu-west", "url": "http://127.0.0.1:1", "lat": 53.3, "lon": -6.2},
                {"name": "us-east", "url": "http://127.0.0.1:2", "lat": 38.9, "lon": -77.4},
            ],
            "health": {"shared": True, "stabilize_s": 5, "ramp_s": 10},
        }
    )
    now = [100.0]
    # This edge's own probes saw eu-west up all along: no recovery of its own.
    states = {n: HealthState(status=Status.UP) for n in ("eu-west", "us-east")}
    gone = {"eu-west": "down for 1 of 2 edges"}
    down = Agreement(down=gone, here_only={}, new=gone, views={}, edges=2)
    up = Agreement(down={}, here_only={}, new={}, views={}, edges=2)
    verdict = [down]
    view = RoutableView(
        dict,
        shared=lambda: verdict[0],
        clock=lambda: now[0],
        states=lambda: states,
        config=lambda: config,
    )
    assert "eu-west" in view.pinned()
    assert dict(view.admissions()[0]) == {}
    verdict[0] = up
    now[0] = 101.0
    held = view.admissions()[0]["eu-west"]
    assert (held.share, held.held) == (0.0, Held.RAMP)
    now[0] = 110.0  # 9 s back: 4 s into the ramp
    verdict[0] = Agreement(down={}, here_only={}, new={}, views={}, edges=2)
    ramping = view.admissions()[0]["eu-west"]
    assert 0.05 < ramping.share < 1.0
    now[0] = 120.0
    verdict[0] = Agreement(down={}, here_only={}, new={}, views={}, edges=2)
    assert "eu-west" not in view.admissions()[0]
