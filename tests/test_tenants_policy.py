"""Tenant homes in the ranking, as the router's runtime snapshot ranks them. Pure."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from georouter.config import Config, parse
from georouter.core.decision import Decision
from georouter.core.location import Location, LocationSource, Precision
from georouter.core.policy import Ranking, Reason, fallback_order
from georouter.core.tenants import HomeSource, StoredHome, TenantView, every_home, find_home
from georouter.runtime import Runtime
from tests.harness import SITES

TOKYO = (35.6895, 139.6917)
GERMAN = Location(52.52, 13.405, "DE", 10, LocationSource.GEOIP, "EU", Precision.POINT)
JAPANESE = Location(TOKYO[0], TOKYO[1], "JP", 10, LocationSource.GEOIP, "AS", Precision.POINT)
EU_STRICT: dict[str, Any] = {
    "name": "eu-residency",
    "continents": ["EU"],
    "clusters": ["eu-west", "eu-central"],
    "strict": True,
}
JP_PREFERS_SYDNEY: dict[str, Any] = {
    "name": "jp-to-sydney",
    "countries": ["JP"],
    "clusters": ["ap-sydney"],
}


def config(
    *,
    homes: dict[str, str] | None = None,
    rules: list[dict[str, Any]] | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> Config:
    return parse(
        {
            "clusters": [
                {"name": n, "url": f"https://{n}.example.net", "lat": lat, "lon": lon}
                for n, (lat, lon) in SITES.items()
            ],
            "router": {"fallback": "us-east"},
            "rules": rules or [],
            "overrides": overrides or [],
            "tenants": {
                "header": "x-tenant",
                "homes": [{"tenant": t, "cluster": c} for t, c in (homes or {}).items()],
            },
        }
    )


def rank(
    rt: Runtime,
    tenant: str,
    location: Location | None = GERMAN,
    down: tuple[str, ...] = (),
    stored: dict[str, StoredHome] | None = None,
) -> Ranking:
    view = rt.tenant(tenant, stored or {})
    return rt.rank(location, dict.fromkeys(down, "down"), tenant=view)


def chosen(ranking: Ranking) -> str | None:
    return None if ranking.chosen is None else ranking.chosen.cluster.name


def test_a_tenants_home_is_chosen_over_geography_and_ranks_the_rest_from_it() -> None:
    rt = Runtime.of(config(homes={"acme": "us-east"}))
    ranking = rank(rt, "acme")
    assert (chosen(ranking), ranking.reason) == ("us-east", Reason.TENANT)
    # Home first, then the rest by distance from the home, as an override's cluster ranks.
    assert [c.name for c, _ in ranking.order] == [
        c.name for c, _ in fallback_order(rt.config.clusters, "us-east")
    ]
    assert ranking.chosen is not None
    assert ranking.chosen.why == "the home cluster of the request's tenant"


def test_a_tenant_without_a_home_is_routed_by_geography() -> None:
    rt = Runtime.of(config(homes={"acme": "us-east"}))
    ranking = rank(rt, "initech")
    assert (chosen(ranking), ranking.reason) == ("eu-central", Reason.NEAREST)
    assert ranking.tenant == TenantView("initech")


def test_while_the_home_is_down_the_next_cluster_from_the_home_is_chosen() -> None:
    rt = Runtime.of(config(homes={"acme": "us-east"}))
    ranking = rank(rt, "acme", down=("us-east",))
    assert chosen(ranking) == "us-west"
    assert ranking.chosen is not None
    assert ranking.chosen.why == "nearest routable cluster to us-east, the tenant's home"


def test_a_client_without_a_location_still_goes_to_its_tenants_home() -> None:
    rt = Runtime.of(config(homes={"acme": "ap-sydney"}))
    assert chosen(rank(rt, "acme", location=None)) == "ap-sydney"


def test_a_runtime_home_wins_over_the_configured_one() -> None:
    rt = Runtime.of(config(homes={"acme": "us-east"}))
    ranking = rank(rt, "acme", stored={"acme": StoredHome("ap-sydney")})
    assert chosen(ranking) == "ap-sydney"
    assert ranking.tenant == TenantView("acme", "ap-sydney", HomeSource.RUNTIME)


def test_a_runtime_home_naming_a_removed_cluster_is_ignored_and_the_config_applies() -> None:
    rt = Runtime.of(config(homes={"acme": "us-east"}))
    stored = {"acme": StoredHome("mars-1"), "globex": StoredHome("mars-1")}
    assert chosen(rank(rt, "acme", stored=stored)) == "us-east"
    ranking = rank(rt, "globex", stored=stored)
    assert (chosen(ranking), ranking.reason) == ("eu-central", Reason.NEAREST)
    assert ranking.tenant is not None
    assert not ranking.tenant.applied
    assert "'mars-1' is not a configured cluster" in ranking.tenant.ignored


def test_a_strict_rule_keeps_the_client_in_whatever_its_tenants_home() -> None:
    rt = Runtime.of(config(homes={"acme": "us-east"}, rules=[EU_STRICT]))
    ranking = rank(rt, "acme")
    assert (chosen(ranking), ranking.reason) == ("eu-central", Reason.NEAREST)
    assert ranking.tenant is not None
    assert ranking.tenant.ignored == "'us-east' is outside strict rule 'eu-residency', which holds"
    assert "us-east" in ranking.forbidden


def test_a_home_inside_the_strict_rule_is_chosen_over_a_nearer_allowed_cluster() -> None:
    rt = Runtime.of(config(homes={"acme": "eu-west"}, rules=[EU_STRICT]))
    ranking = rank(rt, "acme")
    assert (chosen(ranking), ranking.reason) == ("eu-west", Reason.TENANT)
    # With the home down, the rule still holds: the other allowed cluster, never us-east.
    assert chosen(rank(rt, "acme", down=("eu-west",))) == "eu-central"
    assert chosen(rank(rt, "acme", down=("eu-west", "eu-central"))) is None


def test_a_preferring_rule_yields_to_the_tenants_home() -> None:
    rt = Runtime.of(config(homes={"acme": "us-west"}, rules=[JP_PREFERS_SYDNEY]))
    assert chosen(rank(rt, "acme", location=JAPANESE)) == "us-west"


def test_a_tenants_home_wins_over_a_network_override() -> None:
    overrides = [{"cidr": "192.0.2.0/24", "cluster": "ap-sydney"}]
    rt = Runtime.of(config(homes={"acme": "us-west"}, overrides=overrides))
    addr = ipaddress.ip_address("192.0.2.7")
    location, override = rt.locate(addr, lambda _: GERMAN)
    ranking = rt.rank(location, {}, client_ip=addr, override=override, tenant=rt.tenant("acme", {}))
    assert chosen(ranking) == "us-west"


@pytest.mark.parametrize(
    ("down", "kept_out"),
    [
        pytest.param((), {"us-west", "sa-east", "eu-west", "eu-central", "af-south",
                          "ap-northeast", "ap-sydney"}, id="home_routable_every_other_cluster"),
        pytest.param(("us-east",), set(), id="home_down_none"),
    ],
)  # fmt: skip
def test_a_pinned_session_is_kept_off_every_cluster_but_its_routable_home(
    down: tuple[str, ...], kept_out: set[str]
) -> None:
    rt = Runtime.of(config(homes={"acme": "us-east"}))
    assert rank(rt, "acme", down=down).keep_out == kept_out


def test_explain_shows_the_tenant_its_home_and_where_the_home_comes_from() -> None:
    rt = Runtime.of(config(homes={"acme": "us-east"}))
    ranking = rank(rt, "acme")
    decision = Decision(rt.clusters["us-east"], Reason.TENANT, None, GERMAN, None, ranking)
    body = decision.as_json(explain=True)
    assert body["tenant"] == {"id": "acme", "home": "us-east", "source": "config", "applied": True}
    assert "tenant" not in decision.as_json()


def test_the_listing_shows_both_sources_and_an_ignored_runtime_home() -> None:
    clusters = {"eu-west", "us-east"}
    stored = {"acme": StoredHome("mars-1", 10.0, "127.0.0.1"), "initech": StoredHome("eu-west")}
    listed = every_home(stored, {"acme": "us-east", "globex": "eu-west"}, clusters)
    assert [t["id"] for t in listed] == ["acme", "globex", "initech"]
    acme = listed[0]
    assert (acme["home"], acme["source"], acme["config"]) == ("us-east", "config", "us-east")
    assert acme["runtime"] == {
        "cluster": "mars-1",
        "since": 10.0,
        "by": "127.0.0.1",
        "ignored": "not a configured cluster",
    }
    assert find_home("initech", stored, {}, clusters).source is HomeSource.RUNTIME
