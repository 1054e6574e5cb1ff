"""Passive health, from outside: a real `georouter serve` in proxy mode in front of real
application servers whose probes (on a server of their own) keep saying "up".

What an operator relies on: a cluster whose users get errors is taken out after
`passive_failures` of them in a row, whatever its health endpoint says; it comes
back by itself, for longer each time it fails again; never more than
`max_ejected_share` of the clusters are out at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.harness import Edge, wait_for
from tests.proxy_pair import API, Pair, cluster_status, served_by
from tests.redis_harness import RedisServer

PASSIVE = {"passive_failures": 3, "ejection_s": 1, "max_ejection_s": 2, "max_ejected_share": 0.5}


def ejection(edge: Edge, name: str) -> dict[str, object]:
    found = cluster_status(edge, name)["ejection"]
    assert isinstance(found, dict)
    return found


def start(
    pair: Pair,
    redis: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
    **health: object,
) -> Edge:
    return make_edge(write_config(pair.config(redis, **{**PASSIVE, **health})), api_prefix=API)


def test_a_cluster_answering_5xx_is_ejected_while_its_probes_say_up_and_traffic_moves(
    pair: Pair,
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    edge = start(pair, redis_server, write_config, make_edge, ejection_s=30, max_ejection_s=60)
    assert served_by(edge) == "a"
    pair.a.mode = "error"
    assert [served_by(edge) for _ in range(3)] == ["a", "a", "a"]
    assert [served_by(edge) for _ in range(5)] == ["b"] * 5
    status = cluster_status(edge, "a")
    health = status["health"]
    assert isinstance(health, dict)
    assert health["status"] == "up"
    assert status["routable"] is False
    found = ejection(edge, "a")
    assert found["ejected"] is True
    assert found["last_failure"] == "HTTP 503"
    explained = edge.get(API + "/v1/route", params={"explain": "1"}).json()
    why = next(c["why"] for c in explained["explain"] if c["cluster"] == "a")
    assert why.startswith("ejected: 3 consecutive failures, the last HTTP 503, back in ")
    assert "ejected for 30s after 3 consecutive failures" in edge.log()
    assert 'georouter_passive_ejections_total{cluster="a"} 1' in edge.get(API + "/metrics").text


def test_connection_errors_eject_a_cluster_too(
    pair: Pair,
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    edge = start(pair, redis_server, write_config, make_edge, ejection_s=30, max_ejection_s=60)
    pair.a.mode = "reset"
    # Each reset is retried on "b" within the request; the third takes "a" out.
    for _ in range(3):
        assert served_by(edge) == "b"
    served_before = pair.a.requests
    assert [served_by(edge) for _ in range(3)] == ["b"] * 3
    assert pair.a.requests == served_before
    assert ejection(edge, "a")["ejected"] is True


def test_an_ejection_ends_after_ejection_s_and_lasts_longer_when_it_repeats(
    pair: Pair,
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    edge = start(pair, redis_server, write_config, make_edge)
    pair.a.mode = "error"
    for _ in range(3):
        served_by(edge)
    ejected_at = time.monotonic()
    first = ejection(edge, "a")
    assert first["ejections_in_a_row"] == 1
    assert isinstance(first["back_in_s"], float)
    assert first["back_in_s"] <= 1.0
    wait_for(lambda: served_by(edge) == "a", timeout_s=5, what="a back after its ejection")
    assert time.monotonic() - ejected_at >= 0.9
    # Back, and failing again: two more failures (one was just now) eject it for longer.
    for _ in range(2):
        served_by(edge)
    second = ejection(edge, "a")
    assert second["ejected"] is True
    assert second["ejections_in_a_row"] == 2
    assert isinstance(second["back_in_s"], float)
    assert second["back_in_s"] > 1.0
    wait_for(lambda: served_by(edge) == "a", timeout_s=5, what="a back after its second ejection")


def test_never_more_than_max_ejected_share_of_the_clusters_is_ejected(
    pair: Pair,
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    edge = start(pair, redis_server, write_config, make_edge, ejection_s=30, max_ejection_s=60)
    pair.a.mode = pair.b.mode = "error"
    served = [served_by(edge) for _ in range(12)]
    assert served[:3] == ["a"] * 3
    # "a" is out; "b" fails as often but may not follow it: half of two is one.
    assert served[3:] == ["b"] * 9
    assert ejection(edge, "a")["ejected"] is True
    assert ejection(edge, "b")["ejected"] is False
    assert ejection(edge, "b")["consecutive_failures"] == 9


def test_a_successful_probe_does_not_end_an_ejection(
    pair: Pair,
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    edge = start(pair, redis_server, write_config, make_edge, ejection_s=30, max_ejection_s=60)
    pair.a.mode = "error"
    for _ in range(3):
        served_by(edge)
    pair.a.mode = "ok"
    probes_before = pair.probes["a"].requests
    # Several probe rounds (every 0.25 s), every one a success.
    wait_for(
        lambda: pair.probes["a"].requests >= probes_before + 4, timeout_s=5, what="probes of a"
    )
    assert ejection(edge, "a")["ejected"] is True
    assert [served_by(edge) for _ in range(3)] == ["b"] * 3


def test_passive_failures_zero_never_ejects(
    pair: Pair,
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    edge = start(pair, redis_server, write_config, make_edge, passive_failures=0)
    pair.a.mode = "error"
    assert [served_by(edge) for _ in range(8)] == ["a"] * 8
    assert ejection(edge, "a")["ejected"] is False
