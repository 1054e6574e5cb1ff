"""The ranking policy: pure, deterministic, and explained for every cluster."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from georouter.config import Cluster, Config, RouterSettings
from georouter.core.location import Location, LocationSource
from georouter.core.policy import (
    Ranking,
    Reason,
    choose,
    fallback_order,
    haversine_km,
    nearest_order,
)
from georouter.runtime import Runtime
from tests.harness import SITES

CLUSTERS = tuple(
    Cluster(name=name, url=f"https://{name}.example.net", lat=lat, lon=lon)
    for name, (lat, lon) in SITES.items()
)


def rank(
    location: Location | None,
    clusters: tuple[Cluster, ...],
    *,
    fallback: str,
    unroutable: Mapping[str, str],
) -> Ranking:
    """The ranking the router computes: its runtime snapshot's, for this configuration."""
    return Runtime.of(Config(clusters, RouterSettings(fallback=fallback))).rank(
        location, unroutable
    )


def at(lat: float, lon: float) -> Location:
    return Location(lat=lat, lon=lon, country=None, accuracy_km=10, source=LocationSource.GEOIP)


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        pytest.param((51.5074, -0.1278), (48.8566, 2.3522), 343.6, id="london-paris"),
        pytest.param((40.7128, -74.0060), (51.5074, -0.1278), 5570.2, id="new_york-london"),
        pytest.param((-33.8688, 151.2093), (35.6762, 139.6503), 7823.0, id="sydney-tokyo"),
        pytest.param((0, 0), (0, 180), 20015.1, id="antipodes-equator"),
        pytest.param((90, 0), (-90, 0), 20015.1, id="pole-to-pole"),
        pytest.param((10, 179.5), (10, -179.5), 109.5, id="across-the-antimeridian"),
        pytest.param((45, 7), (45, 7), 0.0, id="same-point"),
        pytest.param((45, 7), (45, 7.0001), 0.00786, id="eight-metres"),
    ],
)
def test_haversine_distance_matches_known_values(
    a: tuple[float, float], b: tuple[float, float], km: float
) -> None:
    assert haversine_km(*a, *b) == pytest.approx(km, rel=2e-3, abs=1e-4)
    assert haversine_km(*b, *a) == pytest.approx(haversine_km(*a, *b))


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        pytest.param((51.5074, -0.1278), "eu-west", id="london"),
        pytest.param((48.1351, 11.5820), "eu-central", id="munich"),
        pytest.param((40.7128, -74.0060), "us-east", id="new-york"),
        pytest.param((37.7749, -122.4194), "us-west", id="san-francisco"),
        pytest.param((-34.6037, -58.3816), "sa-east", id="buenos-aires"),
        pytest.param((-26.2041, 28.0473), "af-south", id="johannesburg"),
        pytest.param((37.5665, 126.9780), "ap-northeast", id="seoul"),
        pytest.param((-36.8485, 174.7633), "ap-sydney", id="auckland"),
        pytest.param((64.1466, -21.9426), "eu-west", id="reykjavik"),
        pytest.param((21.3069, -157.8583), "us-west", id="honolulu"),
    ],
)
def test_nearest_cluster_wins(where: tuple[float, float], expected: str) -> None:
    ranking = rank(at(*where), CLUSTERS, fallback="us-east", unroutable={})
    assert ranking.reason is Reason.NEAREST
    assert ranking.chosen is not None
    assert ranking.chosen.cluster.name == expected


def test_ranking_orders_every_cluster_by_distance_and_explains_each() -> None:
    ranking = rank(at(51.5074, -0.1278), CLUSTERS, fallback="us-east", unroutable={})
    distances = [c.distance_km for c in ranking.candidates]
    assert distances == sorted(distances)  # type: ignore[type-var]
    assert len(ranking.candidates) == len(CLUSTERS)
    assert [c.chosen for c in ranking.candidates].count(True) == 1
    assert ranking.candidates[0].why == "nearest routable cluster"
    assert all(c.why == "farther than eu-west" for c in ranking.candidates[1:])


def test_unroutable_clusters_are_passed_over_with_their_reason() -> None:
    ranking = rank(
        at(51.5074, -0.1278), CLUSTERS, fallback="us-east", unroutable={"eu-west": "down"}
    )
    assert ranking.chosen is not None
    assert ranking.chosen.cluster.name == "eu-central"
    assert ranking.reason is Reason.NEAREST
    first = ranking.candidates[0]
    assert (first.cluster.name, first.chosen, first.why) == ("eu-west", False, "down")


def test_no_routable_cluster_means_no_choice() -> None:
    ranking = rank(
        at(0, 0), CLUSTERS, fallback="us-east", unroutable={c.name: "down" for c in CLUSTERS}
    )
    assert ranking.chosen is None
    assert all(c.why == "down" for c in ranking.candidates)


@pytest.mark.parametrize(
    "location",
    [
        pytest.param(None, id="no-location"),
        pytest.param(
            Location(None, None, "DE", None, LocationSource.GEOIP), id="country-without-point"
        ),
    ],
)
def test_client_without_a_point_goes_to_the_fallback(location: Location | None) -> None:
    ranking = rank(location, CLUSTERS, fallback="ap-sydney", unroutable={})
    assert ranking.reason is Reason.FALLBACK
    assert ranking.chosen is not None
    assert ranking.chosen.cluster.name == "ap-sydney"
    assert ranking.chosen.distance_km is None


def test_down_fallback_hands_over_to_its_nearest_neighbour() -> None:
    ranking = rank(None, CLUSTERS, fallback="eu-west", unroutable={"eu-west": "down"})
    assert ranking.reason is Reason.FALLBACK
    assert ranking.chosen is not None
    assert ranking.chosen.cluster.name == "eu-central"


def test_ties_are_broken_by_name_whatever_the_config_order() -> None:
    twins = (
        Cluster("zeta", "https://z.example", 0.0, 10.0),
        Cluster("alpha", "https://a.example", 0.0, -10.0),
    )
    for order in (twins, twins[::-1]):
        ranking = rank(at(0.0, 0.0), order, fallback="zeta", unroutable={})
        assert ranking.chosen is not None
        assert ranking.chosen.cluster.name == "alpha"


def runtime(clusters: tuple[Cluster, ...] = CLUSTERS, *, fallback: str = "us-east") -> Runtime:
    return Runtime.of(Config(clusters, RouterSettings(fallback=fallback)))


def test_two_edges_with_the_same_inputs_rank_alike_and_health_changes_the_choice() -> None:
    # Two edges: each builds its own snapshot from its own copy of the configuration.
    edge_a = runtime(CLUSTERS)
    edge_b = runtime(tuple(reversed(CLUSTERS)))
    tokyo = at(35.0, 135.0)
    down = {"ap-northeast": "down"}
    first, again = edge_a.rank(tokyo, down), edge_b.rank(tokyo, down)
    assert first.chosen is not None
    assert again.chosen is not None
    assert first.chosen.cluster.name == again.chosen.cluster.name == "ap-sydney"
    assert [c.as_json() for c in first.candidates] == [c.as_json() for c in again.candidates]
    # Health is an input too: the same client, everything up, goes elsewhere.
    healthy = edge_a.rank(tokyo, {})
    assert healthy.chosen is not None
    assert healthy.chosen.cluster.name == "ap-northeast"
    # And a snapshot keeps no memory of an earlier answer (its order cache holds no health).
    assert edge_a.rank(tokyo, down).chosen == first.chosen


def test_a_snapshot_of_other_clusters_does_not_reuse_anothers_orders() -> None:
    tokyo = at(35.0, 135.0)
    first = runtime(CLUSTERS).rank(tokyo, {})
    assert first.chosen is not None
    assert first.chosen.cluster.name == "ap-northeast"
    west = tuple(c for c in CLUSTERS if c.name in {"us-west", "eu-west", "us-east"})
    only_west = runtime(west)
    ranking = only_west.rank(tokyo, {})
    assert ranking.chosen is not None
    assert ranking.chosen.cluster.name == "us-west"
    assert {c.cluster.name for c in ranking.candidates} == {"us-west", "eu-west", "us-east"}


def test_a_session_may_stay_on_a_configured_routable_cluster_only() -> None:
    snapshot = runtime()
    assert snapshot.usable({})("eu-west")
    assert not snapshot.usable({"eu-west": "down"})("eu-west")
    assert snapshot.usable({"us-east": "down"})("eu-west")
    assert not snapshot.usable({})("gone-cluster")  # removed from the configuration


def test_the_usable_test_follows_each_new_health_view() -> None:
    snapshot = runtime()
    healthy: dict[str, str] = {}
    assert snapshot.usable(healthy)("eu-west")
    assert snapshot.usable(healthy) is snapshot.usable(healthy)  # reused while unchanged
    assert not snapshot.usable({"eu-west": "down"})("eu-west")
    assert snapshot.usable(healthy)("eu-west")


def test_nearest_order_measures_every_cluster_from_the_point() -> None:
    order = nearest_order(51.5074, -0.1278, CLUSTERS)  # London
    assert [c.name for c, _ in order][:2] == ["eu-west", "eu-central"]
    assert len(order) == len(CLUSTERS)
    for cluster, distance in order:
        assert distance == pytest.approx(haversine_km(51.5074, -0.1278, cluster.lat, cluster.lon))
    distances = [d for _, d in order if d is not None]
    assert distances == sorted(distances)
    assert len(distances) == len(order)


def test_fallback_order_starts_at_the_fallback_then_goes_by_distance_from_it() -> None:
    order = fallback_order(CLUSTERS, "eu-west")
    names = [c.name for c, _ in order]
    assert names[0] == "eu-west"
    assert names[1:] == [c.name for c, _ in nearest_order(*SITES["eu-west"], CLUSTERS)][1:]
    assert all(d is None for _, d in order)  # not measured from the client


def test_choose_takes_the_first_routable_cluster_of_an_order() -> None:
    order = nearest_order(0.0, 0.0, CLUSTERS)
    names = [c.name for c, _ in order]
    ranking = choose(order, Reason.NEAREST, {names[0]: "down", names[1]: "draining"})
    assert ranking.chosen is not None
    assert ranking.chosen.cluster.name == names[2]
    assert ranking.chosen_at == 2
    assert choose(order, Reason.NEAREST, dict.fromkeys(names, "down")).chosen is None
