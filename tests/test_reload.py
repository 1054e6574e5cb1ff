"""Reloading clusters.toml in running `georouter serve` processes: SIGHUP, a changed
file, the admin endpoint; invalid files and keys that need a restart; under traffic."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from georouter.demo.standin import StandIn
from tests.harness import FAST_HEALTH, Edge, cluster_entries, config_text, pace, pace_sync, wait_for
from tests.procfs import handles_signal
from tests.redis_harness import RedisServer

TOKYO = "1.0.16.1"  # nearest: ap-northeast, else us-west
LONDON = "81.2.69.142"  # nearest: eu-west
TOKEN = "admin-token-0123456789"
HEALTH = FAST_HEALTH


@pytest.fixture
def standins(make_standins: Callable[..., dict[str, StandIn]]) -> dict[str, StandIn]:
    return make_standins("us-west", "eu-west", "ap-northeast")


def text(
    standins: dict[str, StandIn],
    names: tuple[str, ...],
    redis: RedisServer,
    *,
    watch_s: float = 0,
    **sections: dict[str, object],
) -> str:
    chosen = {n: standins[n] for n in names}
    return config_text(
        cluster_entries(chosen),
        router={"fallback": "eu-west", "watch_config_s": watch_s},
        health=HEALTH,
        sessions={"redis_url": redis.url},
        **sections,
    )


def routed(edge: Edge, ip: str, **params: str) -> str | None:
    body = edge.get("/v1/route", params={"ip": ip, **params}).json()
    cluster: str | None = body["cluster"]
    return cluster


def version(edge: Edge) -> str:
    found: str = edge.get("/v1/clusters").json()["config"]["version"]
    return found


def probes(edge: Edge, name: str) -> int:
    clusters = edge.get("/v1/clusters").json()["clusters"]
    found: int = next(c["health"]["probes"] for c in clusters if c["name"] == name)
    return found


def reloads(edge: Edge, result: str) -> float:
    match = re.search(
        rf'^georouter_config_reloads_total{{result="{result}"}} (\S+)$',
        edge.get("/metrics").text,
        re.MULTILINE,
    )
    return float(match.group(1)) if match else 0.0


def test_sighup_adds_a_cluster_without_a_restart(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    path = write_config(text(standins, ("us-west", "eu-west"), redis_server))
    edge = make_edge(path)
    before = version(edge)
    assert routed(edge, TOKYO) == "us-west"
    session = edge.get("/v1/route", params={"ip": TOKYO, "session": "kept"}).json()
    assert session["cluster"] == "us-west"
    wait_for(lambda: probes(edge, "us-west") >= 5, timeout_s=10, what="a health history")

    path.write_text(text(standins, ("us-west", "eu-west", "ap-northeast"), redis_server))
    edge.process.send_signal(signal.SIGHUP)
    wait_for(lambda: routed(edge, TOKYO) == "ap-northeast", timeout_s=10, what="the new cluster")

    assert edge.process.poll() is None  # SIGHUP used to end the edge (exit 129)
    assert version(edge) != before
    assert reloads(edge, "ok") == 1
    # An existing session stays where it is; the new cluster takes new ones.
    again = edge.get("/v1/route", params={"ip": TOKYO, "session": "kept"}).json()
    assert (again["cluster"], again["reason"]) == ("us-west", "sticky")
    clusters = {c["name"]: c for c in edge.get("/v1/clusters").json()["clusters"]}
    assert clusters["ap-northeast"]["health"]["status"] == "up"
    # The clusters that stayed kept their health history.
    assert clusters["us-west"]["health"]["probes"] >= 5
    assert "configuration" in edge.log()
    assert "added ap-northeast" in edge.log()


def test_a_changed_file_is_seen_without_a_signal_even_behind_a_symlink_swap(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    tmp_path: Path,
    make_edge: Callable[..., Edge],
) -> None:
    # A Kubernetes ConfigMap: the file is a link into a directory the kubelet swaps.
    for name, names in (("v1", ("us-west", "eu-west")), ("v2", ("eu-west", "ap-northeast"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "clusters.toml").write_text(
            text(standins, names, redis_server, watch_s=0.1)
        )
    (tmp_path / "data").symlink_to("v1")
    link = tmp_path / "clusters.toml"
    link.symlink_to("data/clusters.toml")
    edge = make_edge(link)
    assert routed(edge, TOKYO) == "us-west"

    (tmp_path / "data-new").symlink_to("v2")
    os.replace(tmp_path / "data-new", tmp_path / "data")
    wait_for(lambda: routed(edge, TOKYO) == "ap-northeast", timeout_s=10, what="the swapped file")
    names = [c["name"] for c in edge.get("/v1/clusters").json()["clusters"]]
    assert names == ["eu-west", "ap-northeast"]


@pytest.mark.parametrize(
    ("what", "damage", "named"),
    [
        pytest.param("truncated", lambda t: t[: len(t) // 3], "", id="truncated"),
        pytest.param("NUL bytes", lambda t: t.replace("lat", "l\0at", 1), "", id="nul"),
        pytest.param(
            "a bad value", lambda t: t.replace("rise = 2", "rise = -1"), "health.rise", id="value"
        ),
        pytest.param("not UTF-8", lambda t: t + "\n# \udcff", "UTF-8", id="utf8"),
    ],
)
def test_an_invalid_file_leaves_the_old_one_serving(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
    what: str,
    damage: Callable[[str], str],
    named: str,
) -> None:
    good = text(standins, ("us-west", "eu-west"), redis_server)
    path = write_config(good)
    edge = make_edge(path)
    before = version(edge)
    path.write_bytes(
        damage(text(standins, ("ap-northeast",), redis_server)).encode("utf-8", "surrogateescape")
    )
    edge.process.send_signal(signal.SIGHUP)
    wait_for(lambda: reloads(edge, "invalid") == 1, timeout_s=10, what="the reload to fail")
    assert version(edge) == before
    assert routed(edge, LONDON) == "eu-west"
    assert routed(edge, TOKYO) == "us-west"
    log = edge.log()
    assert "not loaded (invalid)" in log
    assert named in log
    assert "Traceback" not in log


def test_a_change_that_needs_a_restart_is_refused_whole(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    path = write_config(text(standins, ("us-west", "eu-west"), redis_server))
    edge = make_edge(path, args=())
    path.write_text(
        text(
            standins,
            ("us-west", "eu-west", "ap-northeast"),
            redis_server,
            limits={"body_bytes": 1000},
        )
    )
    edge.process.send_signal(signal.SIGHUP)
    wait_for(lambda: reloads(edge, "refused") == 1, timeout_s=10, what="the refusal")
    # Not half-applied: the cluster that came with it was not added either.
    assert routed(edge, TOKYO) == "us-west"
    assert "limits.body_bytes: changed, but only a restart applies it" in edge.log()


def test_sessions_on_a_removed_cluster_fail_over_on_their_next_request(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    path = write_config(text(standins, ("us-west", "eu-west", "ap-northeast"), redis_server))
    edge = make_edge(path)
    first = edge.get("/v1/route", params={"ip": TOKYO, "session": "moving"}).json()
    assert first["cluster"] == "ap-northeast"
    path.write_text(text(standins, ("us-west", "eu-west"), redis_server))
    edge.process.send_signal(signal.SIGHUP)
    wait_for(lambda: routed(edge, TOKYO) == "us-west", timeout_s=10, what="the removal")
    moved = edge.get("/v1/route", params={"ip": TOKYO, "session": "moving"}).json()
    assert (moved["cluster"], moved["reason"]) == ("us-west", "failover")


def test_the_admin_api_reloads_and_says_what_a_file_would_change(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    path = write_config(text(standins, ("us-west", "eu-west"), redis_server))
    edge = make_edge(path, env={"GEOROUTER_ADMIN_TOKEN": TOKEN})
    auth = {"authorization": f"Bearer {TOKEN}"}
    before = edge.get("/v1/config", headers=auth).json()
    assert before["version"] == version(edge)
    assert edge.client.post("/v1/config/reload").status_code == 401

    path.write_text(text(standins, ("eu-west", "ap-northeast"), redis_server))
    dry = edge.client.post("/v1/config/reload", params={"dry_run": "1"}, headers=auth)
    assert dry.status_code == 200
    assert dry.json()["dry_run"] is True
    assert dry.json()["change"]["clusters_added"] == ["ap-northeast"]
    assert dry.json()["change"]["clusters_removed"] == ["us-west"]
    assert routed(edge, TOKYO) == "us-west"  # a dry run changes nothing

    done = edge.client.post("/v1/config/reload", headers=auth)
    assert (done.status_code, done.json()["result"]) == (200, "ok")
    assert routed(edge, TOKYO) == "ap-northeast" or wait_for(
        lambda: routed(edge, TOKYO) == "ap-northeast", timeout_s=10, what="probed"
    )
    again = edge.client.post("/v1/config/reload", headers=auth).json()
    assert again["result"] == "unchanged"

    path.write_text("[[clusters]]\nname = 1\n")
    bad = edge.client.post("/v1/config/reload", headers=auth)
    assert bad.status_code == 422
    assert bad.json()["result"] == "invalid"
    assert any("clusters[0].name" in p for p in bad.json()["problems"])
    status = edge.get("/v1/config", headers=auth).json()
    assert status["version"] == done.json()["version"]
    assert status["last_reload"]["result"] == "invalid"


@pytest.mark.parametrize("workers", [1, 2])
def test_rewriting_the_config_under_traffic_fails_no_request(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
    workers: int,
) -> None:
    sets = [("us-west", "eu-west"), ("us-west", "eu-west", "ap-northeast")]
    files = [text(standins, names, redis_server, watch_s=0.05) for names in sets]
    # Every version sends Tokyo to one of these; nothing else is consistent.
    allowed = {"us-west", "ap-northeast"}
    path = write_config(files[0])
    edge = make_edge(path, args=("--workers", str(workers)))
    rewrites = 40

    async def traffic(stop: asyncio.Event) -> dict[str, int]:
        seen: dict[str, int] = {}
        async with httpx.AsyncClient(base_url=edge.url, timeout=5) as client:
            while not stop.is_set():
                r = await client.get("/v1/route", params={"ip": TOKYO})
                key = str(r.status_code) if r.status_code != 200 else r.json()["cluster"]
                seen[key] = seen.get(key, 0) + 1
        return seen

    async def rewrite(stop: asyncio.Event) -> None:
        for i in range(rewrites):
            if i % 4 == 3:
                path.write_text(files[i % 2][: len(files[0]) // 2])  # truncated: invalid
            else:
                path.write_text(files[i % 2])
            edge.process.send_signal(signal.SIGHUP)
            await pace(0.1)
        stop.set()

    async def run() -> list[dict[str, int]]:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            clients = [tg.create_task(traffic(stop)) for _ in range(4)]
            tg.create_task(rewrite(stop))
        return [c.result() for c in clients]

    results = asyncio.run(run())
    totals: dict[str, int] = {}
    for r in results:
        for k, v in r.items():
            totals[k] = totals.get(k, 0) + v
    print(f"\n{workers} worker(s), {rewrites} rewrites under traffic: {totals}")
    assert set(totals) <= allowed, totals
    assert sum(totals.values()) > 100


def _all_workers_route(edge: Edge, ip: str, cluster: str, tries: int = 24) -> bool:
    # Fresh connections: SO_REUSEPORT spreads them over every worker.
    return all(
        httpx.get(edge.url + "/v1/route", params={"ip": ip}, timeout=5).json()["cluster"] == cluster
        for _ in range(tries)
    )


def test_a_worker_started_after_reloads_serves_what_the_edge_serves(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    from tests.procfs import children

    path = write_config(text(standins, ("us-west", "eu-west"), redis_server))
    edge = make_edge(path, args=("--workers", "2"))
    path.write_text(text(standins, ("us-west", "eu-west", "ap-northeast"), redis_server))
    edge.process.send_signal(signal.SIGHUP)
    wait_for(lambda: _all_workers_route(edge, TOKYO, "ap-northeast"), timeout_s=10, what="reload B")
    # C: B and a key only a restart applies; refused everywhere, B keeps serving.
    path.write_text(
        text(
            standins,
            ("us-west", "eu-west", "ap-northeast"),
            redis_server,
            limits={"body_bytes": 1000},
        )
    )
    edge.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "not loaded (refused)" in edge.log(), timeout_s=10, what="the refusal")
    # Every child dies and is replaced: none may come back with the first file.
    for pid, _ in children(edge.process.pid):
        os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: _all_workers_route(edge, TOKYO, "ap-northeast"),
        timeout_s=20,
        what="replacements serving B",
    )


def test_an_admin_reload_asked_of_one_worker_reloads_every_process(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    path = write_config(text(standins, ("us-west", "eu-west"), redis_server))  # no file watch
    edge = make_edge(path, args=("--workers", "2"), env={"GEOROUTER_ADMIN_TOKEN": TOKEN})
    path.write_text(text(standins, ("us-west", "eu-west", "ap-northeast"), redis_server))
    answer = httpx.post(
        edge.url + "/v1/config/reload", headers={"authorization": f"Bearer {TOKEN}"}
    )
    assert answer.json()["result"] == "ok"
    wait_for(
        lambda: _all_workers_route(edge, TOKYO, "ap-northeast"),
        timeout_s=10,
        what="every worker and the prober",
    )


def test_a_sighup_during_start_up_does_not_end_the_edge(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    import subprocess
    import sys
    import time

    path = write_config(text(standins, ("us-west", "eu-west"), redis_server))
    log = tmp_path / "early.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "georouter",
                "serve",
                "--config",
                str(path),
                "--listen",
                "127.0.0.1:0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # While it imports, opens the GeoIP database and connects: before its loop.
        # (Not before its first line of Python: until then no program can choose
        # what a signal does, and on a loaded machine that can take a while.)
        wait_for(
            lambda: handles_signal(process.pid, signal.SIGHUP) or process.poll() is not None,
            timeout_s=30,
            what="georouter to take SIGHUP",
        )
        deadline = time.monotonic() + 10
        while b"listening on" not in log.read_bytes() and time.monotonic() < deadline:
            process.send_signal(signal.SIGHUP)
            pace_sync(0.05)
        wait_for(
            lambda: b"Running on" in log.read_bytes() or process.poll() is not None,
            timeout_s=10,
            what="serving",
        )
        assert process.poll() is None, log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_an_unchanged_meaning_takes_the_files_version_and_problems_stay_private(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    good = text(standins, ("us-west", "eu-west"), redis_server)
    path = write_config(good)
    edge = make_edge(path)
    path.write_text("# a comment changes the bytes, not the meaning\n" + good)
    edge.process.send_signal(signal.SIGHUP)
    wait_for(lambda: reloads(edge, "unchanged") == 1, timeout_s=10, what="the reload")
    import hashlib

    assert version(edge) == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    path.write_text(good.replace('"eu-west"', '"eu west"', 1))
    edge.process.send_signal(signal.SIGHUP)
    wait_for(lambda: reloads(edge, "invalid") == 1, timeout_s=10, what="the failed reload")
    last = edge.get("/v1/clusters").json()["config"]["last_reload"]
    assert last["result"] == "invalid"
    assert "problems" not in last  # they may quote the file; GET /v1/config (admin) has them
