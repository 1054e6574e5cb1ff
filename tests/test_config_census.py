"""What a reload would move: the session census in Redis (sessions.census), the share of
an edge's recent clients that a new file sends elsewhere (http.dryrun), and both through
``POST /v1/config/reload?dry_run=1`` and ``georouter check --diff``."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from georouter.core.pin import Ask
from georouter.demo.standin import StandIn
from georouter.sessions.census import Bound, Census, take_census
from georouter.sessions.clients import make_client
from georouter.sessions.redisstore import RedisSessionStore
from tests.harness import (
    FAST_HEALTH,
    REPO,
    Edge,
    cluster_entries,
    config_text,
    georouter_command,
)
from tests.redis_harness import RedisClusterSet, RedisServer, free_port
from tests.sessions_harness import session_settings

pytestmark = pytest.mark.anyio

TOKEN = "admin-token-0123456789"
# Each address and its nearest of us-west, eu-west, ap-northeast (bundled GeoLite2);
# without ap-northeast, the first three go to us-west.
CLIENTS = {
    "1.0.16.1": "ap-northeast",  # Tokyo
    "175.16.199.1": "ap-northeast",  # Changchun
    "203.2.218.214": "ap-northeast",  # Sydney
    "81.2.69.142": "eu-west",  # London
    "89.160.20.112": "eu-west",  # Stockholm
    "10.0.0.1": "eu-west",  # private: no location, the fallback
    "216.160.83.56": "us-west",
    "8.8.8.8": "us-west",
}
PINS = {"ap-northeast": 150, "eu-west": 100, "us-west": 50}


async def write_pins(url: str, pins: dict[str, int], *, forgotten: int = 0) -> None:
    """Pins written through the real session store, and tombstones (forgotten sessions)."""
    settings = session_settings(url)
    assert settings.redis is not None
    store = RedisSessionStore(make_client(settings.redis, settings), settings)
    try:
        await asyncio.gather(
            *(
                store.apply(f"{cluster}-{i}", Ask.claim(cluster))
                for cluster, n in pins.items()
                for i in range(n)
            )
        )
        await asyncio.gather(*(store.apply(f"gone-{i}", Ask.forget()) for i in range(forgotten)))
    finally:
        await store.close()


def write_unrelated(server: RedisServer) -> int:
    """Keys the census must not count as pins; how many of them it sees (under ``:s:``)."""
    with server.client() as c:
        c.set("georouter:epoch", "x")
        c.set("other:s:someone", "eu-west|1|1")  # another prefix
        c.set("georouter:drain:eu-west", "1")
        c.set("georouter:s:junk", "not a pin")
        c.hset("georouter:s:a-hash", "cluster", "eu-west")
        c.set("georouter:s:old", "eu-west|1000|1")  # pinned in 1970: past its age cap
    return 3


async def census_of(url: str, **bounds: object) -> Census:
    settings = session_settings(url)
    assert settings.redis is not None
    client = make_client(settings.redis, settings)
    try:
        return await take_census(
            client, "georouter", max_age_ms=int(settings.max_ttl_s * 1000), **bounds
        )
    finally:
        await client.aclose()


async def test_the_census_counts_live_pins_per_cluster_exactly(
    redis_server: RedisServer,
) -> None:
    await write_pins(redis_server.url, PINS, forgotten=40)
    ignored = 40 + write_unrelated(redis_server)
    census = await census_of(redis_server.url, page_keys=64)
    assert census.pins == PINS
    assert (census.complete, census.stopped_by) == (True, None)
    assert census.ignored == ignored
    assert census.keys_seen == sum(PINS.values()) + ignored
    fates = census.fates(kept={"eu-west", "us-west"}, removed={"ap-northeast"})
    assert (fates.moving, fates.staying, fates.orphaned) == (150, 150, 0)


async def test_a_census_bounded_below_the_key_count_is_a_sample_of_what_it_saw(
    redis_server: RedisServer,
) -> None:
    await write_pins(redis_server.url, PINS, forgotten=10)
    census = await census_of(redis_server.url, max_keys=120, page_keys=50)
    assert census.stopped_by is Bound.KEY_LIMIT
    assert not census.complete
    assert census.keys_seen == 120
    assert census.pinned + census.ignored == 120
    assert census.as_json({"eu-west"}, ())["census"] == "sample"


async def test_a_census_out_of_time_stops_between_pages_and_says_so(
    redis_server: RedisServer,
) -> None:
    await write_pins(redis_server.url, PINS)
    ticks = itertools.count()
    # One tick per round trip: SCAN, MGET, SCAN, MGET, then the budget (4.5) is spent.
    census = await census_of(
        redis_server.url, page_keys=50, budget_s=4.5, monotonic=lambda: float(next(ticks))
    )
    assert census.stopped_by is Bound.TIME_BUDGET
    assert 0 < census.keys_seen < sum(PINS.values())
    assert census.pinned == census.keys_seen


async def test_the_census_counts_every_node_of_a_redis_cluster(
    redis_cluster: RedisClusterSet,
) -> None:
    settings = session_settings(redis_cluster.url)
    assert settings.redis is not None
    store = RedisSessionStore(make_client(settings.redis, settings), settings)
    try:
        for cluster, n in PINS.items():
            for i in range(n // 10):
                await store.apply(f"{cluster}-{i}", Ask.claim(cluster))
        await store.apply("gone", Ask.forget())
        census = await take_census(store.client, "georouter", page_keys=10)
    finally:
        await store.close()
    assert census.pins == {c: n // 10 for c, n in PINS.items()}
    assert (census.complete, census.ignored) == (True, 1)


# -- a real edge ------------------------------------------------------------------


@pytest.fixture
def standins(make_standins: Callable[..., dict[str, StandIn]]) -> dict[str, StandIn]:
    return make_standins("us-west", "eu-west", "ap-northeast")


def clusters_file(standins: dict[str, StandIn], names: tuple[str, ...], redis_url: str) -> str:
    return config_text(
        cluster_entries({n: standins[n] for n in names}),
        router={"fallback": "eu-west", "watch_config_s": 0},
        health=FAST_HEALTH,
        sessions={"redis_url": redis_url, "command_timeout_s": 1, "connect_timeout_s": 1},
    )


def route_every_client(edge: Edge) -> None:
    for i, (ip, nearest) in enumerate(CLIENTS.items()):
        body = edge.get("/v1/route", params={"ip": ip, "session": f"client-{i}"}).json()
        assert body["cluster"] == nearest, body


def reload_schema(edge: Edge) -> dict[str, object]:
    spec = edge.get("/openapi.json").json()
    post = spec["paths"]["/v1/config/reload"]["post"]
    schema: dict[str, object] = post["responses"]["200"]["content"]["application/json"]["schema"]
    return schema


def test_a_dry_run_reports_the_sessions_and_the_share_of_clients_that_would_move(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    everything = ("us-west", "eu-west", "ap-northeast")
    path = write_config(clusters_file(standins, everything, redis_server.url))
    edge = make_edge(path, env={"GEOROUTER_ADMIN_TOKEN": TOKEN})
    route_every_client(edge)
    asyncio.run(write_pins(redis_server.url, PINS, forgotten=7))

    path.write_text(clusters_file(standins, ("us-west", "eu-west"), redis_server.url))
    dry = edge.client.post(
        "/v1/config/reload",
        params={"dry_run": "1"},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert dry.status_code == 200, dry.text
    body = dry.json()
    jsonschema.validate(body, reload_schema(edge))
    assert body["change"]["clusters_removed"] == ["ap-northeast"]
    impact = body["impact"]
    assert impact["version"] == body["version"]
    assert impact["decisions"] == {
        "sampled": 8,
        "changed": 3,
        "share": 0.375,
        "moves": [{"from": "ap-northeast", "to": "us-west", "count": 3}],
    }
    routed = {"ap-northeast": 3, "eu-west": 3, "us-west": 2}
    assert impact["sessions"] == {
        "census": "complete",
        "stopped_by": None,
        "keys_seen": sum(PINS.values()) + len(CLIENTS) + 7,
        "ignored": 7,
        "pinned": {c: PINS[c] + routed[c] for c in sorted(PINS)},
        "moving": 150 + 3,
        "staying": 100 + 3 + 50 + 2,
        "orphaned": 0,
    }
    # Addresses never leave the edge, only counts.
    assert not any(ip in dry.text for ip in CLIENTS)
    # A dry run changes nothing.
    assert edge.get("/v1/route", params={"ip": "1.0.16.1"}).json()["cluster"] == "ap-northeast"


def test_the_sample_of_recent_clients_never_holds_more_than_1024(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    everything = ("us-west", "eu-west", "ap-northeast")
    path = write_config(clusters_file(standins, everything, redis_server.url))
    edge = make_edge(path, env={"GEOROUTER_ADMIN_TOKEN": TOKEN})
    # 700 from London, then 700 from Tokyo: the oldest 376 London ones drop off.
    for ip in ("81.2.69.142", "1.0.16.1"):
        batch = edge.client.post("/v1/route", json={"requests": [{"ip": ip}] * 700})
        assert batch.status_code == 200, batch.text
    path.write_text(clusters_file(standins, ("us-west", "eu-west"), redis_server.url))
    dry = edge.client.post(
        "/v1/config/reload", params={"dry_run": "1"}, headers={"authorization": f"Bearer {TOKEN}"}
    ).json()
    assert dry["impact"]["decisions"]["sampled"] == 1024
    assert dry["impact"]["decisions"]["changed"] == 700


# -- georouter check --diff ------------------------------------------------------


def check_diff(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        georouter_command("check", "--diff", *args),
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def plain_file(names: tuple[str, ...], redis_url: str) -> str:
    sites = {"us-west": (45.84, -119.7), "eu-west": (53.35, -6.26), "ap-northeast": (35.68, 139.65)}
    return config_text(
        [
            {"name": n, "url": f"https://{n}.example.net", "lat": sites[n][0], "lon": sites[n][1]}
            for n in names
        ],
        router={"fallback": "eu-west"},
        sessions={"redis_url": redis_url},
    )


def test_check_diff_prints_the_census_of_the_shared_redis(
    redis_server: RedisServer, write_config: Callable[[str], Path]
) -> None:
    asyncio.run(write_pins(redis_server.url, PINS, forgotten=5))
    old = write_config(plain_file(("us-west", "eu-west", "ap-northeast"), redis_server.url))
    new = write_config(plain_file(("us-west", "eu-west"), redis_server.url))
    result = check_diff(str(old), str(new))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "clusters removed (their sessions fail over): ap-northeast" in lines
    assert (
        f"sessions in Redis at {redis_server.url}: 300 pinned (every one of 305 keys;"
        " 5 ignored: tombstones, aged out, not pins)"
    ) in lines
    assert "  ap-northeast       150  move: its cluster is not in NEW (fail over)" in lines
    assert "  eu-west            100  stay" in lines
    assert lines[-1].startswith("sessions that would move: 150 of 300 (pinned to removed")

    sample = check_diff(str(old), str(new), "--census-keys", "40")
    assert "a sample: stopped at the key limit after 40 keys" in sample.stdout


def test_check_diff_says_in_one_line_when_redis_is_unreachable(
    write_config: Callable[[str], Path],
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    old = write_config(plain_file(("us-west", "eu-west", "ap-northeast"), nowhere))
    new = write_config(plain_file(("us-west", "eu-west"), nowhere))
    result = check_diff(str(old), str(new))
    assert result.returncode == 0, result.stderr
    assert "clusters removed (their sessions fail over): ap-northeast" in result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith(f"sessions: Redis at {nowhere} did not answer (")
    assert line.endswith("): not counted")


def test_check_diff_asks_a_running_edge_for_the_share_of_its_clients(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    everything = ("us-west", "eu-west", "ap-northeast")
    old_text = clusters_file(standins, everything, redis_server.url)
    path = write_config(old_text)
    edge = make_edge(path, env={"GEOROUTER_ADMIN_TOKEN": TOKEN})
    route_every_client(edge)
    new_text = clusters_file(standins, ("us-west", "eu-west"), redis_server.url)
    path.write_text(new_text)
    old = write_config(old_text)
    result = check_diff(
        str(old), str(path), "--edge", edge.url, env={"GEOROUTER_ADMIN_TOKEN": TOKEN}
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"recent decisions on {edge.url}: 3 of 8 sampled (37.5%) would start a new session"
        " on another cluster: ap-northeast -> us-west 3"
    ) in result.stdout.splitlines()
    assert "sessions that would move: 3 of 8" in result.stdout

    refused = check_diff(str(old), str(path), "--edge", edge.url)
    assert "HTTP 403" in refused.stderr or "HTTP 401" in refused.stderr
    assert "GEOROUTER_ADMIN_TOKEN" in refused.stderr
