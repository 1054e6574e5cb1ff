"""Residency rules, overrides and weights through the router: a real session map (real
Redis), the test GeoIP database, and through a real `georouter serve` edge."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from georouter.config import Config, parse
from georouter.core.location import Precision
from georouter.core.policy import Reason
from georouter.demo.standin import StandIn
from georouter.geoip.database import GeoDatabase
from georouter.metrics import Metrics
from georouter.router import Router
from georouter.runtime import Runtime
from georouter.sessions.clients import make_client
from georouter.sessions.map import SessionMap
from georouter.sessions.redisstore import RedisSessionStore
from tests.harness import (
    FAST_HEALTH,
    SITES,
    TEST_CITY_DB,
    Edge,
    cluster_entries,
    config_text,
    georouter_command,
    wait_for,
)
from tests.redis_harness import RedisServer

# Köln, DE, in the test database; London, GB.
KOELN = ipaddress.ip_address("2.125.160.1")
LONDON = ipaddress.ip_address("81.2.69.1")
EU_ONLY_CENTRAL: dict[str, Any] = {
    "name": "de-residency",
    "countries": ["DE"],
    "clusters": ["eu-central"],
    "strict": True,
}


class Health:
    def __init__(self) -> None:
        self.down: set[str] = set()

    def unroutable(self) -> Mapping[str, str]:
        return dict.fromkeys(self.down, "down")


def make_config(redis_url: str, **extra: Any) -> Config:
    return parse(
        {
            "clusters": [
                {"name": n, "url": f"https://{n}.example.net", "lat": lat, "lon": lon}
                for n, (lat, lon) in SITES.items()
            ],
            "router": {"fallback": "us-east"},
            "sessions": {"redis_url": redis_url, "command_timeout_s": 1, "connect_timeout_s": 1},
            **extra,
        }
    )


@pytest.fixture
async def router(redis_server: RedisServer) -> AsyncIterator[tuple[Router, Health, str]]:
    config = make_config(redis_server.url)
    assert config.sessions.redis is not None
    store = RedisSessionStore(make_client(config.sessions.redis, config.sessions), config.sessions)
    geo = GeoDatabase(TEST_CITY_DB, cache_networks=100, max_age_days=30, now=0)
    metrics = Metrics()
    health = Health()
    sessions = SessionMap(store, config.sessions, metrics)
    yield (
        Router(Runtime.of(config), locator=geo, health=health, metrics=metrics, sessions=sessions),
        health,
        redis_server.url,
    )
    await store.close()
    geo.close()


pytestmark = pytest.mark.anyio


async def test_a_pin_a_strict_rule_forbids_is_moved_with_reason_rule(
    router: tuple[Router, Health, str],
) -> None:
    r, _, url = router
    first = await r.route(KOELN, "s-de")
    assert first.cluster is not None
    assert first.cluster.name == "eu-central"
    # The operator now keeps German clients in eu-west only: the pin must move.
    r.swap(Runtime.of(make_config(url, rules=[EU_ONLY_CENTRAL | {"clusters": ["eu-west"]}])))
    moved = await r.route(KOELN, "s-de")
    assert moved.cluster is not None
    assert (moved.cluster.name, moved.reason) == ("eu-west", Reason.RULE)
    again = await r.route(KOELN, "s-de")
    assert (again.cluster and again.cluster.name, again.reason) == ("eu-west", Reason.STICKY)


async def test_a_session_of_a_strict_rule_is_refused_rather_than_sent_outside_it(
    router: tuple[Router, Health, str],
) -> None:
    r, health, url = router
    r.swap(Runtime.of(make_config(url, rules=[EU_ONLY_CENTRAL])))
    assert (await r.route(KOELN, "s-de")).cluster is not None
    health.down.add("eu-central")
    refused = await r.route(KOELN, "s-de")
    assert (refused.cluster, refused.reason) == (None, Reason.NONE)
    body = refused.as_json()
    assert body["rule"] == "de-residency"
    assert "strict rule 'de-residency'" in str(body["message"])
    # Clients the rule does not hold still fail over as ever.
    other = await r.route(LONDON, "s-gb")
    assert other.cluster is not None
    assert other.cluster.name == "eu-west"


async def test_a_replay_hint_never_takes_a_client_out_of_its_strict_rule(
    router: tuple[Router, Health, str],
) -> None:
    r, _, url = router
    r.swap(Runtime.of(make_config(url, rules=[EU_ONLY_CENTRAL])))
    moved = await r.move(KOELN, "s-de", "us-east", r.runtime)
    assert moved.cluster is not None
    assert moved.cluster.name == "eu-central"


async def test_new_sessions_of_one_client_split_by_weight_and_stick(
    router: tuple[Router, Health, str],
) -> None:
    r, _, url = router
    clusters = [
        {"name": n, "url": f"https://{n}.example.net", "lat": 50.11, "lon": 8.68}
        for n in ("fra-a", "fra-b")
    ]
    config = parse(
        {
            "clusters": clusters,
            "router": {"tie_km": 50},
            "sessions": {"redis_url": url, "command_timeout_s": 1},
        }
    )
    r.swap(Runtime.of(config))
    first = {}
    for n in range(200):
        d = await r.route(KOELN, f"w{n}")
        assert d.cluster is not None
        first[n] = d.cluster.name
    counts = {name: list(first.values()).count(name) for name in ("fra-a", "fra-b")}
    assert 70 <= counts["fra-a"] <= 130, counts
    for n in range(0, 200, 20):
        again = await r.route(KOELN, f"w{n}")
        assert (again.cluster and again.cluster.name, again.reason) == (first[n], Reason.STICKY)


def test_an_edge_answers_503_naming_the_rule_when_the_eu_clusters_are_down(
    make_standins: Callable[..., dict[str, StandIn]],
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    standins = make_standins("us-east", "eu-west", "eu-central")
    text = config_text(
        cluster_entries(standins), router={"fallback": "us-east"}, health=FAST_HEALTH
    )
    text += """
[[rules]]
name = "eu-residency"
countries = ["DE", "FR"]
continents = ["EU"]
clusters = ["eu-west", "eu-central"]
strict = true
"""
    edge = make_edge(write_config(text))
    # A German client of the bundled GeoLite2 database, as the route API's ip parameter.
    german = {"ip": "80.156.1.1", "explain": "1"}
    ok = edge.get("/v1/route", params=german)
    assert ok.status_code == 200, ok.text
    assert (ok.json()["cluster"], ok.json()["rule"]) == ("eu-central", "eu-residency")

    standins["eu-west"].health_status = 500
    standins["eu-central"].health_status = 500
    refused = wait_for(
        lambda: (r := edge.get("/v1/route", params=german)).status_code == 503 and r,
        timeout_s=15,
        what="the German client to be refused",
    )
    body = refused.json()
    assert (body["cluster"], body["reason"], body["rule"]) == (None, "none", "eu-residency")
    assert body["error"] == "no_routable_cluster"
    assert "strict rule 'eu-residency'" in body["message"]
    verdicts = {c["cluster"]: c["rule"] for c in body["explain"]}
    assert verdicts == {"us-east": "forbidden", "eu-west": "allowed", "eu-central": "allowed"}
    # us-east is up and takes everyone else.
    american = edge.get("/v1/route", params={"ip": "103.21.244.1"})
    assert (american.status_code, american.json()["cluster"]) == (200, "us-east")


def test_route_explain_shows_bias_weights_and_the_rule_verdict(
    write_config: Callable[[str], Path],
) -> None:
    entries = [
        {"name": n, "url": f"https://{n}.example.net", "lat": lat, "lon": lon}
        for n, (lat, lon) in SITES.items()
    ]
    for entry in entries:
        if entry["name"] == "eu-central":
            entry |= {"bias_km": 200, "weight": 3}
    text = config_text(
        entries,
        router={"fallback": "us-east", "tie_km": 500},
        geoip={"database": str(TEST_CITY_DB)},
    )
    text += '[[rules]]\nname = "gb"\ncountries = ["GB"]\nclusters = ["eu-west", "eu-central"]\n'
    text += "strict = true\n"
    result = subprocess.run(
        georouter_command("route", "81.2.69.1", "--explain", "--config", str(write_config(text))),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert "81.2.69.1 (rule 'gb'):" in result.stdout
    assert "bias +200 km -> " in lines["eu-central"]
    assert "weight 3, share 75%" in lines["eu-central"]
    assert "weight 1, share 25%" in lines["eu-west"]
    assert "rule: allowed" in lines["eu-west"]
    assert "outside strict rule 'gb'  [rule: forbidden]" in lines["us-east"]


@pytest.mark.parametrize(
    ("db", "ip", "continent", "precision"),
    [
        pytest.param(None, "81.2.69.142", "EU", Precision.POINT, id="bundled-london"),
        # MaxMind's US centroid, for a record without a city.
        pytest.param(None, "8.8.8.8", "NA", Precision.COUNTRY, id="bundled-us-centroid"),
        pytest.param(TEST_CITY_DB, "2.125.160.1", "EU", Precision.POINT, id="test-koeln"),
        pytest.param(TEST_CITY_DB, "12.0.0.1", "NA", Precision.COUNTRY, id="test-us-centroid"),
    ],
)
def test_the_database_gives_the_continent_and_says_when_it_knows_only_the_country(
    db: Path | None, ip: str, continent: str, precision: Precision
) -> None:
    geo = GeoDatabase(db, cache_networks=10, max_age_days=36500, now=0)
    try:
        location = geo.lookup(ipaddress.ip_address(ip))
    finally:
        geo.close()
    assert location is not None
    assert (location.continent, location.precision) == (continent, precision)


def test_route_explain_answers_what_if_a_cluster_were_down_loaded_or_a_tenants(
    write_config: Callable[[str], Path],
) -> None:
    entries = [
        {"name": n, "url": f"https://{n}.example.net", "lat": lat, "lon": lon}
        for n, (lat, lon) in SITES.items()
    ]
    text = config_text(
        entries,
        router={"fallback": "us-east", "all_down": "fallback"},
        geoip={"database": str(TEST_CITY_DB)},
        tenants={"header": "x-tenant"},
    )
    text += '[[tenants.homes]]\ntenant = "acme"\ncluster = "ap-sydney"\n'
    path = str(write_config(text))

    def route(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            georouter_command("route", "81.2.69.1", "--config", path, *args),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def explained(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
        assert result.returncode == 0, result.stderr
        return {ln.split()[0]: ln for ln in result.stdout.splitlines() if ln.startswith("  ")}

    assert "eu-west" in route("--json").stdout.split('"cluster": ')[1][:12]
    lines = explained(route("--explain", "--set", "eu-west=down"))
    assert "down (--set)" in lines["eu-west"]
    assert "nearest routable cluster" in lines["eu-central"]
    lines = explained(route("--explain", "--set", "eu-west=load:0.99"))
    assert "spill_high" in lines["eu-west"]
    assert "load 0.99" in lines["eu-west"]
    lines = explained(route("--explain", "--set", "eu-west=back:1"))
    assert "recovered" in lines["eu-west"] or "nearest" in lines["eu-west"]
    everything = [f"--set={n}=down" for n in SITES]
    out = route("--json", *everything)
    assert '"reason": "all_down"' in out.stdout
    assert '"cluster": "us-east"' in out.stdout
    assert '"reason": "tenant"' in route("--json", "--tenant", "acme").stdout
    bad = route("--set", "nowhere=down")
    assert bad.returncode == 2
    assert "--set: no cluster named 'nowhere'" in bad.stderr
    worse = route("--set", "eu-west=sideways")
    assert worse.returncode == 2
    assert "down, up, load:0.0 to 1.0 or back:SECONDS" in worse.stderr
