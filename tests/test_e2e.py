"""End to end: a real `georouter serve` process, real stand-in clusters, the GeoLite2 snapshot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from georouter.demo.standin import StandIn
from tests.harness import FAST_HEALTH, Edge, cluster_entries, config_text, wait_for

NAMES = (
    "us-east",
    "us-west",
    "sa-east",
    "eu-west",
    "eu-central",
    "af-south",
    "ap-northeast",
    "ap-sydney",
)


@pytest.fixture
def standins(make_standins: Callable[..., dict[str, StandIn]]) -> dict[str, StandIn]:
    return make_standins(*NAMES)


@pytest.fixture(params=["hypercorn", "uvicorn"])
def edge(
    request: pytest.FixtureRequest,
    standins: dict[str, StandIn],
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> Edge:
    text = config_text(
        cluster_entries(standins),
        # Only 127.0.0.2 may speak for clients; the tests connect from 127.0.0.1 as a stranger.
        router={"fallback": "us-east", "trusted_proxies": ["127.0.0.2/32"]},
        health=FAST_HEALTH,
    )
    return make_edge(write_config(text), args=("--server", request.param))


def route(edge: Edge, ip: str) -> dict[str, object]:
    response = edge.get("/v1/route", params={"ip": ip})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


@pytest.mark.parametrize(
    ("ip", "country", "cluster", "reason"),
    [
        pytest.param("81.2.69.142", "GB", "eu-west", "nearest", id="london"),
        # The snapshot knows only the country (no city: Germany's default point).
        pytest.param("80.156.1.1", "DE", "eu-central", "country", id="germany"),
        pytest.param("196.25.1.1", "ZA", "af-south", "nearest", id="johannesburg"),
        pytest.param("1.0.16.1", "JP", "ap-northeast", "nearest", id="tokyo"),
        pytest.param("203.2.218.214", "AU", "ap-sydney", "nearest", id="sydney"),
        pytest.param("200.160.2.3", "BR", "sa-east", "country", id="rio"),
        # A city, but within 1000 km: over [geoip] max_accuracy_km (500).
        pytest.param("103.21.244.1", "US", "us-east", "country", id="ashburn"),
        pytest.param("2001:4860:4860::8888", "US", "us-west", "nearest", id="mountain-view-ipv6"),
    ],
)
def test_real_addresses_go_to_their_nearest_cluster(
    edge: Edge, ip: str, country: str, cluster: str, reason: str
) -> None:
    body = route(edge, ip)
    assert body["cluster"] == cluster
    assert body["reason"] == reason
    assert body["location"]["country"] == country  # type: ignore[index]
    # A country-level location is ranked from the country's point, claiming no distance.
    assert isinstance(body["distance_km"], float) == (reason == "nearest")


def test_clients_move_to_the_next_nearest_when_a_cluster_dies_and_back_when_it_returns(
    edge: Edge, standins: dict[str, StandIn]
) -> None:
    london = "81.2.69.142"
    assert route(edge, london)["cluster"] == "eu-west"

    standins["eu-west"].stop()
    wait_for(
        lambda: route(edge, london)["cluster"] == "eu-central",
        timeout_s=15,
        what="london to fail over to eu-central",
    )
    health = {c["name"]: c["health"] for c in edge.get("/v1/clusters").json()["clusters"]}
    assert health["eu-west"]["status"] == "down"
    assert health["eu-west"]["consecutive_failed"] >= FAST_HEALTH["fall"]  # type: ignore[operator]
    # Clients elsewhere never noticed.
    assert route(edge, "1.0.16.1")["cluster"] == "ap-northeast"

    standins["eu-west"].start()
    wait_for(
        lambda: route(edge, london)["cluster"] == "eu-west",
        timeout_s=15,
        what="london to come back to eu-west",
    )


def test_every_cluster_down_is_a_503_with_a_json_body(
    edge: Edge, standins: dict[str, StandIn]
) -> None:
    for s in standins.values():
        s.health_status = 500
    response = wait_for(
        lambda: (r := edge.get("/v1/route", params={"ip": "81.2.69.142"})).status_code == 503 and r,
        timeout_s=15,
        what="every cluster to be down",
    )
    body = response.json()
    assert body["error"] == "no_routable_cluster"
    assert body["cluster"] is None
    assert f"{len(NAMES)} down" in body["message"]
    assert edge.get("/readyz").status_code == 200  # the edge itself is fine


def test_malformed_ip_is_a_400_json_body(edge: Edge) -> None:
    response = edge.get("/v1/route", params={"ip": "999.1.1.1"})
    assert response.status_code == 400
    assert response.json()["parameter"] == "ip"
    assert response.headers["content-type"] == "application/json"


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(edge: Edge) -> None:
    response = edge.get("/v1/route", headers={"x-forwarded-for": "81.2.69.142"})
    body = response.json()
    assert body["client_ip"] == "127.0.0.1"
    assert body["reason"] == "fallback"


def test_forwarded_for_from_a_trusted_proxy_is_honoured(edge: Edge) -> None:
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, base_url=edge.url, timeout=5) as proxy:
        body = proxy.get(
            "/v1/route", headers={"x-forwarded-for": "10.9.9.9, 81.2.69.142, 127.0.0.2"}
        ).json()
    assert body["client_ip"] == "81.2.69.142"
    assert body["cluster"] == "eu-west"


def test_edge_is_ready_and_documents_its_api(edge: Edge) -> None:
    assert edge.get("/readyz").json() == {"ready": True}
    assert edge.get("/healthz").json() == {"status": "ok"}
    assert "/v1/route" in edge.get("/openapi.json").json()["paths"]
    clusters = edge.get("/v1/clusters").json()
    assert clusters["geoip"]["bundled"] is True
    assert clusters["geoip"]["type"] == "GeoLite2-City"
    # The bundled snapshot is from 2018: the edge says so.
    assert clusters["geoip"]["stale"] is True
    assert "GeoIP database" in edge.log()
