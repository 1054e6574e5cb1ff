"""The access log of a real `georouter serve`: one line per request on stdout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from georouter.demo.standin import StandIn
from georouter.http.accesslog import session_hash
from tests.harness import FAST_HEALTH, Edge, cluster_entries, config_text, wait_for

LONDON = "81.2.69.142"


@pytest.fixture
def standins(make_standins: Callable[..., dict[str, StandIn]]) -> dict[str, StandIn]:
    return make_standins("us-east", "eu-west")


def lines(edge: Edge) -> list[dict[str, object]]:
    found = []
    for line in edge.log().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


@pytest.mark.parametrize("server", ["hypercorn", "uvicorn"])
def test_every_request_is_one_json_line_with_the_decision_and_no_session_id(
    standins: dict[str, StandIn],
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
    server: str,
) -> None:
    text = config_text(
        cluster_entries(standins),
        router={"fallback": "us-east", "trusted_proxies": ["127.0.0.1/32"]},
        health=FAST_HEALTH,
    )
    edge = make_edge(write_config(text), args=("--server", server, "--access-log", "json"))
    before = len(lines(edge))
    routed = httpx.get(
        edge.url + "/v1/route",
        params={"session": "secret-session-1"},
        headers={"x-forwarded-for": LONDON, "x-request-id": "req-42"},
    )
    missing = httpx.get(edge.url + "/nowhere")
    assert routed.headers["x-request-id"] == "req-42"
    made = missing.headers["x-request-id"]
    assert len(made) == 16
    found = wait_for(
        lambda: (got := lines(edge)[before:]) and len(got) >= 2 and got,
        timeout_s=5,
        what="two access-log lines",
    )
    route_line = next(line for line in found if line["request_id"] == "req-42")
    assert route_line["path"] == "/v1/route"
    assert route_line["method"] == "GET"
    assert route_line["status"] == 200
    assert route_line["peer"] == "127.0.0.1"
    assert route_line["client_ip"] == LONDON  # through the trusted proxy
    assert (route_line["reason"], route_line["cluster"]) == ("nearest", "eu-west")
    assert route_line["session"] == session_hash("secret-session-1")
    assert route_line["degraded"] is False
    assert isinstance(route_line["duration_ms"], float)
    assert "secret-session-1" not in edge.log()
    other = next(line for line in found if line["request_id"] == made)
    assert (other["path"], other["status"], other["reason"]) == ("/nowhere", 404, None)


def test_access_log_off_writes_no_lines_and_text_is_one_line_each(
    standins: dict[str, StandIn],
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    text = config_text(cluster_entries(standins), router={"fallback": "us-east"})
    off = make_edge(write_config(text), args=("--access-log", "off"))
    httpx.get(off.url + "/v1/route", params={"ip": LONDON})
    assert lines(off) == []
    assert '"/v1/route' not in off.log()
    off.stop()  # its embedded Redis's state directory is the next edge's
    plain = make_edge(write_config(text), args=("--access-log", "text"))
    httpx.get(plain.url + "/v1/route", params={"ip": LONDON}, headers={"x-request-id": "t-1"})
    wait_for(lambda: "id=t-1" in plain.log(), timeout_s=5, what="the text line")
    line = next(x for x in plain.log().splitlines() if "id=t-1" in x)
    assert '"GET /v1/route" 200' in line
    assert " nearest eu-west " in line
