"""An edge's ``/metrics`` as Prometheus reads it: a real `serve --workers 2` edge,
scraped on new connections (so any worker may answer), parsed with
``prometheus_client``'s own parsers.

The workers publish their counts to the metrics board within a second, so a
scrape may briefly lag what another worker has done: a count is awaited until
it settles, and from then on every scrape must show exactly that.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from georouter import __version__
from georouter.core.policy import Reason
from georouter.demo.standin import StandIn
from tests.harness import FAST_HEALTH, Edge, cluster_entries, config_text, wait_for
from tests.procfs import children
from tests.redis_harness import RedisServer

LONDON = "81.2.69.142"  # nearest: eu-west
PRIVATE = "10.0.0.1"  # no location: the fallback, us-east
CLUSTERS = ("us-east", "eu-west", "eu-central")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def edge(
    make_standins: Callable[..., dict[str, StandIn]],
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
    redis_server: RedisServer,
) -> Edge:
    text = config_text(
        cluster_entries(make_standins(*CLUSTERS)),
        router={"fallback": "us-east"},
        health=FAST_HEALTH,
        # A Redis of its own: the edge starts no embedded one.
        sessions={"redis_url": redis_server.url},
    )
    return make_edge(write_config(text), args=("--workers", "2"))


def scrape_text(edge: Edge, accept: str | None = None) -> httpx.Response:
    # A new connection each time: SO_REUSEPORT hands it to either worker.
    headers = {} if accept is None else {"accept": accept}
    response = httpx.get(edge.url + "/metrics", headers=headers, timeout=5)
    assert response.status_code == 200
    return response


def scrape(edge: Edge) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scrape_text(edge).text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def routed(edge: Edge, ip: str) -> int:
    return httpx.get(edge.url + "/v1/route", params={"ip": ip}, timeout=5).status_code


def test_counters_and_the_decision_histogram_move_exactly_with_the_requests(edge: Edge) -> None:
    before = scrape(edge)
    london, private, bad, unknown = 30, 12, 4, 3
    assert [routed(edge, LONDON) for _ in range(london)] == [200] * london
    assert [routed(edge, PRIVATE) for _ in range(private)] == [200] * private
    assert [routed(edge, "not-an-address") for _ in range(bad)] == [400] * bad
    for _ in range(unknown):
        assert httpx.get(edge.url + "/no-such-path", timeout=5).status_code == 404

    def moved(samples: Samples, name: str, **labels: str) -> float:
        return total(samples, name, **labels) - total(before, name, **labels)

    def as_sent(samples: Samples) -> bool:
        nearest = moved(samples, "georouter_decisions_total", reason="nearest", cluster="eu-west")
        fallback = moved(samples, "georouter_decisions_total", reason="fallback", cluster="us-east")
        # One observation per decision, whichever worker made it.
        count = moved(samples, "georouter_decision_duration_seconds_count")
        inf = moved(samples, "georouter_decision_duration_seconds_bucket", le="+Inf")
        return (
            (nearest, fallback) == (london, private)
            and moved(samples, "georouter_decisions_total") == london + private
            and count == inf == london + private
            and moved(samples, "georouter_decision_duration_seconds_sum") > 0
            and moved(samples, "georouter_http_responses_total", status="400") == bad
            and moved(samples, "georouter_http_responses_total", status="404") == unknown
        )

    wait_for(lambda: as_sent(scrape(edge)), timeout_s=10, what="both workers' counts on the board")
    # Settled: from now on every scrape, on either worker, shows exactly that.
    scrapes = [scrape(edge) for _ in range(10)]
    assert all(as_sent(samples) for samples in scrapes)
    last = scrapes[-1]
    assert moved(last, "georouter_decisions_total", reason="nearest", cluster="eu-west") == london
    assert moved(last, "georouter_http_responses_total", status="400") == bad
    # The 200s are the routed requests and the scrapes themselves (each one counted
    # once it has answered, so never in its own body).
    assert moved(last, "georouter_http_responses_total", status="200") > london + private


def test_histogram_buckets_are_cumulative_and_end_at_the_count(edge: Edge) -> None:
    for _ in range(5):
        assert routed(edge, LONDON) == 200
    families = {f.name: f for f in text_string_to_metric_families(scrape_text(edge).text)}
    for name in ("georouter_decision_duration_seconds", "georouter_probe_duration_seconds"):
        family = families[name]
        assert family.type == "histogram"
        series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        counts = {}
        for s in family.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name.endswith("_bucket"):
                series.setdefault(key, []).append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                counts[key] = s.value
        assert series, name
        for key, buckets in series.items():
            values = [v for _, v in sorted(buckets)]
            assert values == sorted(values), (name, key)
            assert buckets[-1] == (float("inf"), counts[key]), (name, key)


def test_the_prober_s_probes_reach_metrics_and_survive_its_replacement(edge: Edge) -> None:
    def probed(samples: Samples) -> dict[str, float]:
        return {
            name: total(samples, "georouter_probe_duration_seconds_count", cluster=name)
            for name in CLUSTERS
        }

    def every_cluster_probed() -> dict[str, float] | None:
        counts = probed(scrape(edge))
        return counts if all(v > 0 for v in counts.values()) else None

    first = wait_for(every_cluster_probed, timeout_s=10, what="probe latencies from the prober")
    samples = scrape(edge)
    for name in CLUSTERS:
        # Counted and timed together, so one scrape shows the same number of each.
        assert total(samples, "georouter_probes_total", cluster=name) == total(
            samples, "georouter_probe_duration_seconds_count", cluster=name
        )
        assert total(samples, "georouter_probes_total", cluster=name, result="failed") == 0
    # Every child (the prober and both workers) dies and is replaced.
    for pid, _ in children(edge.process.pid):
        os.kill(pid, signal.SIGKILL)
    seen: list[dict[str, float]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(seen) < 30:
        try:
            seen.append(probed(scrape(edge)))
        except (httpx.HTTPError, AssertionError):
            continue
    assert seen
    # Never backwards: the replacements go on from their slots.
    for later in seen:
        assert all(later[name] >= first[name] for name in CLUSTERS), (first, later)


def test_every_cluster_has_an_up_gauge_and_zeroed_decision_series(edge: Edge) -> None:
    samples = scrape(edge)
    for name in CLUSTERS:
        assert samples["georouter_cluster_up", (("cluster", name),)] == 1
        for reason in Reason:
            if reason is Reason.NONE:
                continue
            key = (("cluster", name), ("reason", reason.value))
            assert ("georouter_decisions_total", key) in samples, key
        assert samples["georouter_probes_total", (("cluster", name), ("result", "failed"))] == 0
    assert samples["georouter_decisions_total", (("cluster", ""), ("reason", "none"))] == 0
    assert samples["georouter_build_info", (("version", __version__),)] == 1
    assert samples["georouter_clusters", ()] == len(CLUSTERS)


def test_every_family_has_help_and_a_type(edge: Edge) -> None:
    text = scrape_text(edge).text
    helps = dict(re.findall(r"^# HELP (\S+) (.+)$", text, re.MULTILINE))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    assert len(types) > 15
    assert helps.keys() == types.keys()
    assert all(doc.strip() for doc in helps.values())
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name
    for name in (
        "georouter_redis_operations_total",
        "georouter_redis_errors_total",
        "georouter_config_reloads_total",
        "georouter_http_responses_total",
    ):
        assert types[name] == "counter", name
    assert types["georouter_geoip_database_age_seconds"] == "gauge"


def test_geoip_age_is_whole_seconds_at_full_precision(edge: Edge) -> None:
    built = edge.get("/v1/clusters").json()["geoip"]["build_epoch"]
    earliest = int(time.time()) - built
    text = scrape_text(edge).text
    latest = int(time.time()) - built
    assert "georouter_geoip_database_age_days" not in text
    token = re.search(r"^georouter_geoip_database_age_seconds (\S+)$", text, re.MULTILINE)
    assert token is not None
    age_s = float(token.group(1))
    assert earliest <= age_s <= latest
    assert age_s == int(age_s)
    # Every digit of the integer is printed (``%g`` kept six: 1.23457e+06).
    digits = re.sub(r"e[+-]\d+$", "", token.group(1)).replace(".", "").rstrip("0")
    assert digits == str(int(age_s)).rstrip("0")


def test_openmetrics_is_served_when_the_scraper_asks_for_it(edge: Edge) -> None:
    assert routed(edge, LONDON) == 200
    response = scrape_text(edge, "application/openmetrics-text; version=1.0.0, text/plain;q=0.5")
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    names = {f.name for f in openmetrics_families(response.text)}
    assert {"georouter_decisions", "georouter_cluster_up", "georouter_build_info"} <= names
    plain = scrape_text(edge)
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in plain.text
