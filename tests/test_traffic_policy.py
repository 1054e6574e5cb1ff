"""Traffic policy, table-driven: residency rules, location overrides, country-level
locations, bias and weights, as the router's runtime snapshot ranks them. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import pytest

from georouter.config import Config, parse
from georouter.core.clientip import IPAddress
from georouter.core.location import Location, LocationSource, Precision
from georouter.core.policy import SPREAD_BITS, Ranking, Reason
from georouter.runtime import Runtime
from tests.harness import SITES

BERLIN = (52.5200, 13.4050)
LONDON = (51.5074, -0.1278)
NEW_YORK = (40.7128, -74.0060)
TOKYO = (35.6895, 139.6917)
US_CENTROID = (37.751, -97.822)

EU_STRICT: dict[str, Any] = {
    "name": "eu-residency",
    "countries": ["DE", "FR"],
    "continents": ["EU"],
    "clusters": ["eu-west", "eu-central"],
    "strict": True,
}
JP_PREFERS_SYDNEY: dict[str, Any] = {
    "name": "jp-to-sydney",
    "countries": ["JP"],
    "clusters": ["ap-sydney"],
}
# Where a spread draws in a two-cluster split with weights 1 and 3.
FIRST_QUARTER = 0
SECOND_HALF = 1 << (SPREAD_BITS - 1)


def config(
    *,
    rules: list[dict[str, Any]] = (),  # type: ignore[assignment]
    overrides: list[dict[str, Any]] = (),  # type: ignore[assignment]
    cluster: Mapping[str, Mapping[str, Any]] | None = None,
    router: Mapping[str, Any] | None = None,
    geoip: Mapping[str, Any] | None = None,
) -> Config:
    """A configuration of the test sites, with per-cluster extras (``cluster``)."""
    extras = cluster or {}
    return parse(
        {
            "clusters": [
                {"name": n, "url": f"https://{n}.example.net", "lat": lat, "lon": lon}
                | dict(extras.get(n, {}))
                for n, (lat, lon) in SITES.items()
            ],
            "router": {"fallback": "us-east", **(router or {})},
            "geoip": dict(geoip or {}),
            "rules": list(rules),
            "overrides": list(overrides),
        }
    )


def located(
    where: tuple[float, float] | None,
    country: str | None = None,
    continent: str | None = None,
    *,
    accuracy_km: float = 10,
    precision: Precision = Precision.POINT,
) -> Location:
    lat, lon = where if where is not None else (None, None)
    return Location(
        lat=lat,
        lon=lon,
        country=country,
        accuracy_km=accuracy_km,
        source=LocationSource.GEOIP,
        continent=continent,
        precision=precision,
    )


def down(*names: str) -> dict[str, str]:
    return dict.fromkeys(names, "down")


def chosen(ranking: Ranking) -> str | None:
    return None if ranking.chosen_at is None else ranking.order[ranking.chosen_at][0].name


GERMAN = located(BERLIN, "DE", "EU")
BRITISH = located(LONDON, "GB", "EU")
AMERICAN = located(NEW_YORK, "US", "NA")
JAPANESE = located(TOKYO, "JP", "AS")


@pytest.mark.parametrize(
    ("cfg", "location", "unroutable", "cluster", "reason"),
    [
        pytest.param(
            config(rules=[EU_STRICT]),
            GERMAN,
            {},
            "eu-central",
            Reason.NEAREST,
            id="eu_client_goes_to_its_nearest_eu_cluster",
        ),
        pytest.param(
            config(rules=[EU_STRICT]),
            GERMAN,
            down("eu-central"),
            "eu-west",
            Reason.NEAREST,
            id="eu_client_fails_over_within_eu",
        ),
        pytest.param(
            config(rules=[EU_STRICT]),
            GERMAN,
            down("eu-central", "eu-west"),
            None,
            Reason.NEAREST,
            id="eu_client_never_leaves_eu_on_failover",
        ),
        pytest.param(
            config(rules=[EU_STRICT]),
            located(None, "DE", "EU"),
            {},
            "eu-west",
            Reason.FALLBACK,
            id="eu_client_without_a_point_still_stays_in_eu",
        ),
        pytest.param(
            config(rules=[EU_STRICT]),
            located(None, None, "EU"),
            down("eu-west"),
            "eu-central",
            Reason.FALLBACK,
            id="a_continent_alone_matches_a_rule",
        ),
        pytest.param(
            config(rules=[EU_STRICT]),
            AMERICAN,
            down("us-east"),
            "us-west",
            Reason.NEAREST,
            id="a_client_no_rule_matches_is_ranked_as_ever",
        ),
        pytest.param(
            config(rules=[JP_PREFERS_SYDNEY]),
            JAPANESE,
            {},
            "ap-sydney",
            Reason.NEAREST,
            id="non_strict_rule_prefers_its_clusters_though_farther",
        ),
        pytest.param(
            config(rules=[JP_PREFERS_SYDNEY]),
            JAPANESE,
            down("ap-sydney"),
            "ap-northeast",
            Reason.NEAREST,
            id="non_strict_rule_lets_go_once_its_clusters_are_down",
        ),
        pytest.param(
            config(
                rules=[
                    {"name": "de", "countries": ["DE"], "clusters": ["eu-west"], "strict": True},
                    EU_STRICT,
                ]
            ),
            GERMAN,
            {},
            "eu-west",
            Reason.NEAREST,
            id="the_first_matching_rule_applies",
        ),
        pytest.param(
            config(
                rules=[
                    EU_STRICT,
                    {"name": "de", "countries": ["DE"], "clusters": ["eu-west"], "strict": True},
                ]
            ),
            GERMAN,
            {},
            "eu-central",
            Reason.NEAREST,
            id="a_later_rule_is_never_read",
        ),
        pytest.param(
            config(cluster={"eu-central": {"bias_km": 300}}),
            BRITISH,
            {},
            "eu-central",
            Reason.NEAREST,
            id="positive_bias_grows_a_clusters_catchment",
        ),
        pytest.param(
            config(cluster={"eu-central": {"bias_km": -1000}}),
            GERMAN,
            {},
            "eu-west",
            Reason.NEAREST,
            id="negative_bias_shrinks_a_clusters_catchment",
        ),
        pytest.param(
            config(cluster={"eu-central": {"bias_km": 100}}),
            BRITISH,
            {},
            "eu-west",
            Reason.NEAREST,
            id="a_bias_smaller_than_the_gap_changes_nothing",
        ),
        pytest.param(
            config(),
            located(US_CENTROID, "US", "NA", accuracy_km=1000),
            {},
            "us-east",
            Reason.COUNTRY,
            id="a_location_less_precise_than_max_accuracy_is_country_level",
        ),
        pytest.param(
            config(geoip={"max_accuracy_km": 2000}),
            located(NEW_YORK, "US", accuracy_km=1000),
            {},
            "us-east",
            Reason.NEAREST,
            id="max_accuracy_km_sets_the_bound",
        ),
        pytest.param(
            config(),
            located(US_CENTROID, "US", accuracy_km=5),
            {},
            "us-east",
            Reason.COUNTRY,
            id="maxminds_us_centroid_is_never_a_precise_point",
        ),
        pytest.param(
            config(),
            located(BERLIN, "DE", precision=Precision.COUNTRY, accuracy_km=5),
            {},
            "eu-central",
            Reason.COUNTRY,
            id="a_record_without_a_city_is_country_level",
        ),
        pytest.param(
            config(rules=[EU_STRICT]),
            located(BERLIN, "DE", "EU", precision=Precision.COUNTRY),
            down("eu-central"),
            "eu-west",
            Reason.COUNTRY,
            id="country_rules_still_apply_to_a_country_level_location",
        ),
    ],
)
def test_policy(
    cfg: Config,
    location: Location,
    unroutable: Mapping[str, str],
    cluster: str | None,
    reason: Reason,
) -> None:
    ranking = Runtime.of(cfg).rank(location, unroutable)
    assert (chosen(ranking), ranking.reason) == (cluster, reason)


def test_a_country_level_ranking_claims_no_distance() -> None:
    rt = Runtime.of(config())
    ranking = rt.rank(located(US_CENTROID, "US", accuracy_km=1000), {})
    assert all(d is None for _, d in ranking.order)
    assert "country" in ranking.candidates[0].why


ADDRESS = ipaddress.ip_address("192.0.2.7")


@pytest.mark.parametrize(
    ("rules", "ip", "cluster"),
    [
        pytest.param(
            [{"name": "lab", "cidrs": ["192.0.2.0/24"], "clusters": ["af-south"], "strict": True}],
            ADDRESS,
            "af-south",
            id="a_cidr_rule_matches_by_address",
        ),
        pytest.param(
            [{"name": "lab", "cidrs": ["198.51.100.0/24"], "clusters": ["af-south"]}],
            ADDRESS,
            "us-east",
            id="a_cidr_rule_outside_its_networks_does_not_match",
        ),
        pytest.param(
            [
                {"name": "us", "countries": ["US"], "clusters": ["us-west"]},
                {"name": "lab", "cidrs": ["192.0.2.0/24"], "clusters": ["af-south"]},
            ],
            ADDRESS,
            "us-west",
            id="a_country_rule_listed_first_beats_a_cidr_rule",
        ),
        pytest.param(
            [
                {"name": "lab", "cidrs": ["192.0.2.0/24"], "clusters": ["af-south"]},
                {"name": "us", "countries": ["US"], "clusters": ["us-west"]},
            ],
            ADDRESS,
            "af-south",
            id="a_cidr_rule_listed_first_beats_a_country_rule",
        ),
    ],
)
def test_cidr_rules(rules: list[dict[str, Any]], ip: IPAddress, cluster: str) -> None:
    ranking = Runtime.of(config(rules=rules)).rank(AMERICAN, {}, client_ip=ip)
    assert chosen(ranking) == cluster


def _locate(rt: Runtime, ip: str, found: Location | None) -> tuple[Location | None, Ranking]:
    addr = ipaddress.ip_address(ip)
    location, override = rt.locate(addr, lambda _: found)
    return location, rt.rank(location, {}, client_ip=addr, override=override)


OVERRIDES = [
    {"cidr": "81.2.0.0/16", "cluster": "ap-sydney"},
    {"cidr": "81.2.69.0/24", "lat": TOKYO[0], "lon": TOKYO[1]},
    {"cidr": "2001:db8::/32", "cluster": "sa-east"},
]


@pytest.mark.parametrize(
    ("ip", "cluster", "reason", "source"),
    [
        pytest.param(
            "81.2.1.1",
            "ap-sydney",
            Reason.OVERRIDE,
            LocationSource.OVERRIDE,
            id="an_override_sends_its_network_to_its_cluster",
        ),
        pytest.param(
            "81.2.69.142",
            "ap-northeast",
            Reason.NEAREST,
            LocationSource.OVERRIDE,
            id="the_longest_prefix_wins",
        ),
        pytest.param(
            "2001:db8::1",
            "sa-east",
            Reason.OVERRIDE,
            LocationSource.OVERRIDE,
            id="ipv6_networks_are_overridden_too",
        ),
        pytest.param(
            "81.3.0.1",
            "eu-west",
            Reason.NEAREST,
            LocationSource.GEOIP,
            id="an_address_outside_every_override_is_located_by_the_database",
        ),
    ],
)
def test_overrides_win_over_the_database(
    ip: str, cluster: str, reason: Reason, source: LocationSource
) -> None:
    rt = Runtime.of(config(overrides=OVERRIDES))
    location, ranking = _locate(rt, ip, BRITISH)
    assert location is not None
    assert (chosen(ranking), ranking.reason, location.source) == (cluster, reason, source)
    # The database's country still holds for the rules unless the override names one.
    assert location.country == "GB"


def test_an_override_to_a_cluster_fails_over_to_the_nearest_to_that_cluster() -> None:
    rt = Runtime.of(config(overrides=OVERRIDES))
    addr = ipaddress.ip_address("81.2.1.1")
    location, override = rt.locate(addr, lambda _: BRITISH)
    ranking = rt.rank(location, down("ap-sydney"), client_ip=addr, override=override)
    assert chosen(ranking) == "ap-northeast"


def test_an_override_never_takes_a_client_out_of_its_strict_rule() -> None:
    rt = Runtime.of(
        config(rules=[EU_STRICT], overrides=[{"cidr": "80.156.0.0/16", "cluster": "us-east"}])
    )
    location, ranking = _locate(rt, "80.156.1.1", GERMAN)
    # Ranked from us-east, the override's cluster; only the rule's clusters may win.
    assert chosen(ranking) == "eu-west"
    assert location is not None
    assert location.country == "DE"


def test_an_override_may_set_the_country_the_rules_see() -> None:
    rt = Runtime.of(
        config(
            rules=[EU_STRICT],
            overrides=[{"cidr": "80.156.0.0/16", "lat": 40.0, "lon": -74.0, "country": "US"}],
        )
    )
    _, ranking = _locate(rt, "80.156.1.1", GERMAN)
    assert (chosen(ranking), ranking.rule) == ("us-east", None)


TIE = {"tie_km": 500}
WEIGHTS = {"eu-west": {"weight": 1}, "eu-central": {"weight": 3}}


@pytest.mark.parametrize(
    ("cfg", "spread", "cluster", "reason"),
    [
        pytest.param(
            config(router=TIE, cluster=WEIGHTS),
            FIRST_QUARTER,
            "eu-west",
            Reason.NEAREST,
            id="a_split_may_draw_the_nearest",
        ),
        pytest.param(
            config(router=TIE, cluster=WEIGHTS),
            SECOND_HALF,
            "eu-central",
            Reason.WEIGHT,
            id="a_split_draws_a_farther_cluster_by_its_weight",
        ),
        pytest.param(
            config(cluster=WEIGHTS),
            SECOND_HALF,
            "eu-west",
            Reason.NEAREST,
            id="tie_km_0_turns_the_split_off",
        ),
        pytest.param(
            config(router=TIE, cluster=WEIGHTS),
            None,
            "eu-west",
            Reason.NEAREST,
            id="without_a_spread_the_nearest_wins",
        ),
        pytest.param(
            config(router={"tie_km": 100}, cluster=WEIGHTS),
            SECOND_HALF,
            "eu-west",
            Reason.NEAREST,
            id="a_cluster_beyond_tie_km_takes_no_share",
        ),
        pytest.param(
            config(
                router={"tie_km": 100},
                cluster=WEIGHTS | {"eu-central": {"weight": 3, "bias_km": 200}},
            ),
            SECOND_HALF,
            "eu-central",
            Reason.NEAREST,
            id="the_band_is_measured_biased",
        ),
        pytest.param(
            config(
                router=TIE,
                cluster=WEIGHTS,
                rules=[{"name": "gb", "countries": ["GB"], "clusters": ["eu-west"]}],
            ),
            SECOND_HALF,
            "eu-west",
            Reason.NEAREST,
            id="a_split_never_leaves_a_rules_clusters",
        ),
        pytest.param(
            config(router=TIE, cluster={"eu-west": {"weight": 0}}),
            FIRST_QUARTER,
            "eu-central",
            Reason.WEIGHT,
            id="weight_0_takes_no_new_sessions_in_a_split",
        ),
    ],
)
def test_weights(cfg: Config, spread: int | None, cluster: str, reason: Reason) -> None:
    ranking = Runtime.of(cfg).rank(BRITISH, {}, spread=spread)
    assert (chosen(ranking), ranking.reason) == (cluster, reason)


def test_a_split_skips_a_cluster_that_is_down() -> None:
    cfg = config(router=TIE, cluster=WEIGHTS)
    ranking = Runtime.of(cfg).rank(BRITISH, down("eu-central"), spread=SECOND_HALF)
    assert chosen(ranking) == "eu-west"


def explained(ranking: Ranking) -> dict[str, dict[str, object]]:
    return {str(c["cluster"]): c for c in (c.as_json() for c in ranking.candidates)}


def test_explain_shows_bias_and_the_biased_distance() -> None:
    rt = Runtime.of(config(cluster={"eu-central": {"bias_km": 300}}))
    shown = explained(rt.rank(BRITISH, {}))
    assert shown["eu-central"]["bias_km"] == 300
    distance = shown["eu-central"]["distance_km"]
    assert isinstance(distance, float)
    assert shown["eu-central"]["biased_distance_km"] == pytest.approx(distance - 300, abs=0.1)
    assert "bias_km" not in shown["eu-west"]


def test_explain_shows_the_weights_and_shares_of_a_split() -> None:
    rt = Runtime.of(config(router=TIE, cluster=WEIGHTS))
    shown = explained(rt.rank(BRITISH, {}, spread=SECOND_HALF))
    assert (shown["eu-west"]["weight"], shown["eu-west"]["share"]) == (1, 0.25)
    assert (shown["eu-central"]["weight"], shown["eu-central"]["share"]) == (3, 0.75)
    assert shown["eu-central"]["chosen"] is True
    assert "by weight" in str(shown["eu-west"]["why"])
    assert "weight" not in shown["us-east"]


def test_explain_shows_the_rule_verdict_for_every_cluster() -> None:
    rt = Runtime.of(config(rules=[EU_STRICT]))
    ranking = rt.rank(GERMAN, down("eu-central", "eu-west"))
    shown = explained(ranking)
    assert {n: c["rule"] for n, c in shown.items()} == {
        n: "allowed" if n.startswith("eu-") else "forbidden" for n in SITES
    }
    assert shown["us-east"]["why"] == "outside strict rule 'eu-residency'"
    assert shown["eu-west"]["why"] == "down"


def test_explain_says_when_a_preferred_rule_passed_a_nearer_cluster_over() -> None:
    rt = Runtime.of(config(rules=[JP_PREFERS_SYDNEY]))
    shown = explained(rt.rank(JAPANESE, {}))
    assert shown["ap-sydney"]["rule"] == "preferred"
    assert shown["ap-northeast"]["rule"] == "not preferred"
    assert "not in rule 'jp-to-sydney'" in str(shown["ap-northeast"]["why"])


def test_without_rules_bias_or_weights_explain_is_unchanged() -> None:
    shown = explained(Runtime.of(config()).rank(BRITISH, {}))
    assert all(set(c) == {"cluster", "distance_km", "chosen", "why"} for c in shown.values())
