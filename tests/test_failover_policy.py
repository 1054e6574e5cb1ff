"""What happens around "nearest healthy", table-driven and by property: load-aware
spill, failback's stabilize and ramp, failover spread by headroom, the panic
threshold and the all-down modes. Pure: the policy and the runtime snapshot."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from georouter.core.admission import (
    RAMP_START,
    Admission,
    Held,
    admissions,
    admits,
    load_of,
    point_of,
    ramp_share,
    spill_share,
)
from georouter.core.health import HealthState, Status
from georouter.core.policy import Ranking, Reason, spread_of
from georouter.runtime import Runtime
from tests.test_traffic_policy import (
    AMERICAN,
    EU_STRICT,
    GERMAN,
    chosen,
    config,
    down,
)


def up(load: float | None = None, recovered_at: float | None = None) -> HealthState:
    return HealthState(status=Status.UP, load=load, recovered_at=recovered_at)


def held(
    states: Mapping[str, HealthState],
    now: float = 1000.0,
    **knobs: float,
) -> Mapping[str, Admission]:
    settings_ = {"stabilize_s": 0.0, "ramp_s": 0.0, "spill_low": 0.8, "spill_high": 0.95}
    settings_.update(knobs)
    return admissions(states, now=now, **settings_)[0]


def share_of(ranking_for: Any, sessions: int = 2000) -> Counter[str | None]:
    """Where ``sessions`` new sessions go: the count per cluster chosen."""
    return Counter(chosen(ranking_for(spread_of(f"session-{n}"))) for n in range(sessions))


# -- the pieces ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "body", "load"),
    [
        pytest.param("0.5", b"", 0.5, id="header_gives_the_load"),
        pytest.param(None, b'{"load": 0.25}', 0.25, id="json_body_gives_the_load"),
        pytest.param("0.1", b'{"load": 0.9}', 0.1, id="header_wins_over_the_body"),
        pytest.param(None, b'{"status": "ok"}', None, id="no_load_reported"),
        pytest.param(None, b"OK", None, id="plain_text_body_reports_none"),
        pytest.param("lots", b"", None, id="unreadable_header_reports_none"),
        pytest.param(None, b'{"load": 7}', None, id="load_above_one_is_ignored"),
        pytest.param(None, b'{"load": -0.1}', None, id="negative_load_is_ignored"),
        pytest.param(None, b'{"load": true}', None, id="boolean_load_is_ignored"),
        pytest.param(None, b'{"load": "0.3"}', None, id="string_load_in_json_is_ignored"),
        pytest.param(None, b'{"load": ', None, id="broken_json_reports_none"),
        pytest.param("nan", b"", None, id="nan_header_is_ignored"),
    ],
)
def test_a_cluster_reports_its_load_in_its_health_answer(
    header: str | None, body: bytes, load: float | None
) -> None:
    assert load_of(header, body) == load


@pytest.mark.parametrize(
    ("load", "share"),
    [(0.0, 1.0), (0.8, 1.0), (0.875, 0.5), (0.95, 0.0), (1.0, 0.0)],
    ids=["idle", "at_spill_low", "halfway", "at_spill_high", "full"],
)
def test_spill_share_shrinks_linearly_between_spill_low_and_spill_high(
    load: float, share: float
) -> None:
    assert spill_share(load, 0.8, 0.95) == pytest.approx(share)


def test_ramp_takes_nothing_until_stabilized_then_grows_from_a_few_percent_to_all() -> None:
    assert ramp_share(9.9, stabilize_s=10, ramp_s=60) == 0.0
    assert ramp_share(10.0, stabilize_s=10, ramp_s=60) == pytest.approx(RAMP_START)
    assert ramp_share(40.0, stabilize_s=10, ramp_s=60) == pytest.approx(
        RAMP_START + (1 - RAMP_START) / 2
    )
    assert ramp_share(70.0, stabilize_s=10, ramp_s=60) == 1.0
    assert ramp_share(0.0, stabilize_s=0, ramp_s=0) == 1.0


@given(
    earlier=st.floats(0, 200),
    later=st.floats(0, 200),
    stabilize=st.floats(0, 60),
    ramp=st.floats(0, 120),
)
def test_the_ramp_never_exceeds_its_schedule_and_never_shrinks(
    earlier: float, later: float, stabilize: float, ramp: float
) -> None:
    a, b = sorted((earlier, later))
    share_a, share_b = ramp_share(a, stabilize, ramp), ramp_share(b, stabilize, ramp)
    assert 0.0 <= share_a <= share_b <= 1.0
    if a < stabilize:
        assert share_a == 0.0
    elif ramp > 0 and a < stabilize + ramp:
        assert share_a <= RAMP_START + (1 - RAMP_START) * (a - stabilize) / ramp + 1e-9


@given(sessions=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=50))
def test_a_session_admitted_at_a_share_is_admitted_at_every_larger_one(
    sessions: list[str],
) -> None:
    for session in sessions:
        point = point_of(spread_of(session))
        shares = [0.05, 0.2, 0.5, 0.8, 1.0]
        admitted = [admits(Admission(s, Held.RAMP, ""), point) for s in shares]
        # Once in, always in: as a ramp grows its sessions stay and new ones join.
        assert admitted == sorted(admitted)
        assert admitted[-1]


def test_admissions_name_a_recovered_cluster_ramping_and_a_loaded_one_spilling() -> None:
    states = {
        "eu-west": up(recovered_at=995.0),  # back 5 s ago
        "eu-central": up(load=0.9),
        "us-east": up(load=0.2),
        "us-west": up(),  # up since it was first probed: no ramp
        "sa-east": HealthState(status=Status.DOWN),
    }
    found = held(states, stabilize_s=10, ramp_s=60)
    assert set(found) == {"eu-west", "eu-central"}
    assert (found["eu-west"].share, found["eu-west"].held) == (0.0, Held.RAMP)
    assert "stabilize_s" in found["eu-west"].why
    assert found["eu-central"].held is Held.SPILL
    assert found["eu-central"].share == pytest.approx((0.95 - 0.9) / 0.15)


def test_a_cluster_back_up_records_when_it_recovered_and_a_first_probe_does_not() -> None:
    from georouter.core.health import ProbeResult, observe

    ok, bad = ProbeResult(True, "HTTP 200"), ProbeResult(False, "HTTP 503")
    knobs = {"rise": 1, "fall": 1}
    first = observe(HealthState(), ok, now=1.0, **knobs)
    assert (first.status, first.recovered_at) == (Status.UP, None)
    gone = observe(first, bad, now=2.0, **knobs)
    back = observe(gone, ProbeResult(True, "HTTP 200", load=0.4), now=3.0, **knobs)
    assert (back.status, back.recovered_at, back.load) == (Status.UP, 3.0, 0.4)
    later = observe(back, ok, now=4.0, **knobs)
    assert later.recovered_at == 3.0
    assert later.load is None


# -- the policy ------------------------------------------------------------------

PLAIN = Runtime.of(config())


@pytest.mark.parametrize(
    ("cfg", "location", "unroutable", "admit", "cluster", "reason"),
    [
        pytest.param(
            config(),
            GERMAN,
            {},
            {"eu-central": Admission(0.0, Held.SPILL, "full")},
            "eu-west",
            Reason.SPILL,
            id="a_full_nearest_cluster_spills_new_sessions_to_the_next",
        ),
        pytest.param(
            config(),
            GERMAN,
            {},
            {"eu-central": Admission(0.0, Held.RAMP, "stabilizing")},
            "eu-west",
            Reason.RAMP,
            id="a_cluster_still_stabilizing_takes_no_new_session",
        ),
        pytest.param(
            config(),
            GERMAN,
            {},
            {"eu-central": Admission(1.0, Held.SPILL, "")},
            "eu-central",
            Reason.NEAREST,
            id="a_share_of_one_takes_everyone",
        ),
        pytest.param(
            config(rules=[EU_STRICT]),
            GERMAN,
            {},
            {n: Admission(0.0, Held.SPILL, "full") for n in ("eu-central", "eu-west")},
            "eu-central",
            Reason.NEAREST,
            id="spill_never_takes_a_client_out_of_its_strict_rule_nor_refuses_it",
        ),
        pytest.param(
            config(router={"panic_below": 0.5}),
            GERMAN,
            down("eu-central", "eu-west", "us-east", "us-west", "sa-east"),
            {},
            "eu-central",
            Reason.PANIC,
            id="below_panic_below_health_is_ignored",
        ),
        pytest.param(
            config(router={"panic_below": 0.5}),
            GERMAN,
            down("eu-central", "eu-west", "us-east"),
            {},
            "us-west",
            Reason.NEAREST,
            id="at_or_above_panic_below_health_holds",
        ),
        pytest.param(
            config(),
            GERMAN,
            down(*PLAIN.clusters),
            {},
            None,
            Reason.NEAREST,
            id="all_down_503_answers_no_cluster",
        ),
        pytest.param(
            config(router={"all_down": "fallback"}),
            GERMAN,
            down(*PLAIN.clusters),
            {},
            "us-east",
            Reason.ALL_DOWN,
            id="all_down_fallback_sends_to_the_fallback_cluster",
        ),
        pytest.param(
            config(router={"all_down": "ignore_health"}),
            GERMAN,
            down(*PLAIN.clusters),
            {},
            "eu-central",
            Reason.ALL_DOWN,
            id="all_down_ignore_health_sends_to_the_nearest",
        ),
        pytest.param(
            config(rules=[EU_STRICT], router={"all_down": "fallback"}),
            GERMAN,
            down("eu-central", "eu-west"),
            {},
            "eu-west",
            Reason.ALL_DOWN,
            id="all_down_fallback_stays_inside_a_strict_rule",
        ),
        pytest.param(
            config(rules=[EU_STRICT], router={"panic_below": 0.9}),
            GERMAN,
            down("eu-central", "eu-west"),
            {},
            "eu-central",
            Reason.PANIC,
            id="panic_stays_inside_a_strict_rule",
        ),
        pytest.param(
            config(router={"all_down": 503}),
            GERMAN,
            down(*PLAIN.clusters),
            {},
            None,
            Reason.NEAREST,
            id="all_down_may_be_written_as_the_number_503",
        ),
    ],
)
def test_policy_around_nearest_healthy(
    cfg: Any,
    location: Any,
    unroutable: dict[str, str],
    admit: dict[str, Admission],
    cluster: str | None,
    reason: Reason,
) -> None:
    ranking = Runtime.of(cfg).rank(location, unroutable, spread=spread_of("s-1"), admit=admit)
    assert (chosen(ranking), ranking.reason) == (cluster, reason)
    # The explanation names what was held back or ignored.
    candidates = {c.cluster.name: c for c in ranking.candidates}
    for name, admission in admit.items():
        if admission.share == 0 and name != cluster:
            assert admission.why in candidates[name].why
    if reason in (Reason.PANIC, Reason.ALL_DOWN):
        assert ranking.ignored is unroutable
        assert candidates[str(cluster)].as_json()["health_ignored"] == "down"


def test_a_cluster_at_half_share_takes_about_half_of_its_new_sessions() -> None:
    admit = {"eu-central": Admission(0.5, Held.SPILL, "load 0.875")}
    counts = share_of(lambda spread: PLAIN.rank(GERMAN, {}, spread=spread, admit=admit))
    assert set(counts) == {"eu-central", "eu-west"}
    assert 0.45 < counts["eu-central"] / 2000 < 0.55


def test_a_failed_clusters_new_sessions_spread_over_the_next_by_headroom() -> None:
    rt = Runtime.of(config(router={"failover_spread_km": 8000}))
    # eu-central and eu-west down: a German client's next clusters are us-east
    # (6,600 km), us-west and af-south within 8,000 km of it; us-east is busy.
    loads = {"us-east": 0.75, "af-south": 0.0}
    gone = down("eu-central", "eu-west")
    counts = share_of(lambda spread: rt.rank(GERMAN, gone, spread=spread, loads=loads))
    ranking = rt.rank(GERMAN, gone, spread=spread_of("session-1"), loads=loads)
    band = [ranking.order[j][0].name for j in ranking.band]
    assert "us-east" in band
    assert "af-south" in band
    weights = dict(zip(band, ranking.band_weights, strict=True))
    total = sum(weights.values())
    for name in band:
        assert abs(counts[name] / 2000 - weights[name] / total) < 0.05, (name, counts)
    # Headroom: us-east (load 0.75) gets a quarter of what the idle af-south gets.
    assert weights["us-east"] == pytest.approx(weights["af-south"] / 4)
    assert {Reason.SPREAD, Reason.NEAREST} >= {
        rt.rank(GERMAN, gone, spread=spread_of(f"session-{n}"), loads=loads).reason
        for n in range(50)
    }


def test_with_its_nearest_cluster_up_no_session_is_spread() -> None:
    rt = Runtime.of(config(router={"failover_spread_km": 8000}))
    counts = share_of(lambda spread: rt.rank(GERMAN, {}, spread=spread), sessions=300)
    assert counts == Counter({"eu-central": 300})


# -- properties ------------------------------------------------------------------

CLUSTERS = tuple(PLAIN.clusters)
STRICT = Runtime.of(config(rules=[EU_STRICT], router={"failover_spread_km": 3000}))


@settings(max_examples=300)
@given(
    downed=st.sets(st.sampled_from(CLUSTERS)),
    loads=st.dictionaries(st.sampled_from(CLUSTERS), st.floats(0, 1)),
    session=st.text(max_size=12),
    german=st.booleans(),
)
def test_the_chosen_cluster_is_routable_and_allowed_by_every_strict_rule(
    downed: set[str], loads: dict[str, float], session: str, german: bool
) -> None:
    location = GERMAN if german else AMERICAN
    states = {n: up(load=loads.get(n)) for n in CLUSTERS}
    admit = held(states)
    ranking: Ranking = STRICT.rank(
        location, down(*downed), spread=spread_of(session), admit=admit, loads=loads
    )
    name = chosen(ranking)
    if name is None:
        return
    assert name not in downed
    assert name not in ranking.forbidden
    if german:
        assert name in EU_STRICT["clusters"]
    point = point_of(spread_of(session))
    if not admits(admit.get(name), point):
        # Held back, yet chosen: only when no routable allowed cluster admits it.
        assert not any(
            c.name not in downed
            and c.name not in ranking.forbidden
            and admits(admit.get(c.name), point)
            for c, _ in ranking.order
        )


@given(downed=st.sets(st.sampled_from(CLUSTERS)), session=st.text(max_size=12))
def test_every_edge_given_the_same_inputs_chooses_the_same_cluster(
    downed: set[str], session: str
) -> None:
    knobs = {"failover_spread_km": 5000, "tie_km": 500, "panic_below": 0.3}
    edges = [Runtime.of(config(router=knobs)) for _ in range(3)]
    loads = {"us-east": 0.9, "eu-west": 0.85}
    admit = held({n: up(load=loads.get(n)) for n in CLUSTERS})
    answers = {
        (chosen(r), r.reason)
        for r in (
            rt.rank(GERMAN, down(*downed), spread=spread_of(session), admit=admit, loads=loads)
            for rt in edges
        )
    }
    assert len(answers) == 1
