"""Redis faults under load, against one real `georouter serve` edge and a real redis-server.

Redis is killed and comes back empty, hung with SIGSTOP under steady requests,
and hung under 150 concurrent requests. The edge must never answer 5xx, must
keep every session on its cluster (from its local memory while Redis is away),
must put the pins back into a Redis that restarted empty, and must bound the
latency Redis adds by its configured timeouts.

Each test prints one ``FAULT ...`` line of figures (see it with ``pytest -s``)
and appends it to the file named by ``GEOROUTER_FAULT_REPORT`` when that is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from georouter.core.pin import Pin
from georouter.demo.standin import StandIn
from tests.harness import (
    FAST_HEALTH,
    SITES,
    Edge,
    cluster_entries,
    config_text,
    pace_sync,
    wait_for,
)
from tests.redis_harness import RedisServer

# Clients on every continent, so sessions spread over the clusters; a session
# asked again by another of them would move if the edge forgot its pin.
IPS = (
    "81.2.69.142",  # London: eu-west
    "1.0.16.1",  # Tokyo: ap-northeast
    "203.2.218.214",  # Sydney: ap-sydney
    "196.25.1.1",  # Johannesburg: af-south
    "200.160.2.3",  # Brazil: sa-east
    "80.156.1.1",  # Germany: eu-central
    "103.21.244.1",  # Ashburn: us-east
    "2001:4860:4860::8888",  # Mountain View: us-west
)

KEY_PREFIX = "georouter:s:"
COMMAND_TIMEOUT_S = 0.05
CONNECT_TIMEOUT_S = 0.05
RETRY_INTERVAL_S = 0.2
# Bound on what a hung Redis may add to one request: the timeouts above, plus a
# generous margin for a loaded 2-core machine. A promise of the code, not a speed target.
MAX_ADDED_LATENCY_S = 1.0


def report(line: str) -> None:
    print(line)
    path = os.environ.get("GEOROUTER_FAULT_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


@pytest.fixture
def edge(
    make_standins: Callable[..., dict[str, StandIn]],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> Edge:
    text = config_text(
        cluster_entries(make_standins(*SITES)),
        router={"fallback": "us-east"},
        health=FAST_HEALTH,
        sessions={
            "redis_url": redis_server.url,
            "command_timeout_s": COMMAND_TIMEOUT_S,
            "connect_timeout_s": CONNECT_TIMEOUT_S,
            "retry_interval_s": RETRY_INTERVAL_S,
        },
        # One test process stands for many clients: no per-address new-session budget.
        limits={"new_sessions_per_s": 0},
    )
    return make_edge(write_config(text))


def new_sessions(tag: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:10]
    return [f"{tag}-{run}-{i}" for i in range(n)]


def redis_pins(redis_server: RedisServer, sessions: list[str]) -> dict[str, str | None]:
    """The cluster Redis holds for each session."""
    with redis_server.client() as r:
        raws = r.mget([KEY_PREFIX + s for s in sessions])
    out: dict[str, str | None] = {}
    for session, raw in zip(sessions, raws, strict=True):
        pin = None if raw is None else Pin.decode(str(raw))
        out[session] = None if pin is None else pin.cluster
    return out


def sessions_status(edge: Edge) -> dict[str, object]:
    status: dict[str, object] = edge.get("/v1/clusters").json()["sessions"]
    return status


@dataclass(frozen=True, slots=True)
class Sample:
    session: str
    ip: str
    phase: str
    started: float  # time.monotonic()
    latency_s: float
    status: int  # 0: no HTTP answer at all (a transport error)
    cluster: str | None
    reason: str | None
    degraded: bool | None
    detail: str = ""


@dataclass
class Load:
    """Steady requests from background threads, each cycling over its share of ``sessions``.

    Session ``n`` of a round is asked from ``IPS[(n + round) % len(IPS)]``: the
    client moves between continents, so only the pin keeps the session in place.
    """

    url: str
    threads: int = 2
    pace_s: float = 0.002
    phase: str = "before"
    sessions: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    rounds: dict[str, int] = field(default_factory=dict)  # full rounds finished, per phase
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for k in range(self.threads):
            t = threading.Thread(target=self._run, args=(k,), name=f"load-{k}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def set(self, phase: str, sessions: list[str]) -> None:
        with self._lock:
            self.phase = phase
            self.sessions = list(sessions)

    def rounds_in(self, phase: str) -> int:
        """Rounds finished by every thread in ``phase``."""
        with self._lock:
            return min(self.rounds.get(f"{phase}#{k}", 0) for k in range(self.threads))

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self._workers), "a load thread hung"

    def _run(self, k: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            n_round = 0
            while not self._stop.is_set():
                with self._lock:
                    phase, sessions = self.phase, self.sessions
                mine = sessions[k :: self.threads]
                for n, session in enumerate(mine):
                    if self._stop.is_set() or self.phase != phase:
                        break
                    self._ask(client, session, IPS[(n + n_round) % len(IPS)], phase)
                    if self.pace_s:
                        time.sleep(self.pace_s)
                else:
                    key = f"{phase}#{k}"
                    with self._lock:
                        self.rounds[key] = self.rounds.get(key, 0) + 1
                n_round += 1

    def _ask(self, client: httpx.Client, session: str, ip: str, phase: str) -> None:
        started = time.monotonic()
        try:
            response = client.get("/v1/route", params={"ip": ip, "session": session})
        except httpx.HTTPError as exc:
            sample = Sample(
                session, ip, phase, started, time.monotonic() - started, 0, None, None, None,
                f"{type(exc).__name__}: {exc}",
            )  # fmt: skip
        else:
            latency = time.monotonic() - started
            try:
                body = response.json()
            except ValueError:
                body = {}
            sess = body.get("session") or {}
            sample = Sample(
                session, ip, phase, started, latency, response.status_code,
                body.get("cluster"), body.get("reason"), sess.get("degraded"),
                "" if response.status_code == 200 else response.text[:300],
            )  # fmt: skip
        with self._lock:
            self.samples.append(sample)


def failures(samples: list[Sample]) -> list[Sample]:
    """Answers that are not a 200 with a cluster (5xx, transport errors, anything else)."""
    return [s for s in samples if s.status != 200 or s.cluster is None]


def moved_sessions(samples: list[Sample]) -> dict[str, list[tuple[str, str | None]]]:
    """Sessions answered with more than one cluster: their (phase, cluster) history."""
    seen: dict[str, list[tuple[str, str | None]]] = {}
    for s in sorted(samples, key=lambda s: s.started):
        if s.status == 200:
            seen.setdefault(s.session, []).append((s.phase, s.cluster))
    return {sid: h for sid, h in seen.items() if len({c for _, c in h}) > 1}


def first_clusters(samples: list[Sample]) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in sorted(samples, key=lambda s: s.started):
        if s.status == 200 and s.cluster is not None:
            out.setdefault(s.session, s.cluster)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def test_redis_killed_then_restarted_empty_keeps_every_session_and_writes_pins_back(
    edge: Edge, redis_server: RedisServer
) -> None:
    # Four groups of sessions, 200 in all, every one asked during the outage:
    old = new_sessions("old", 70)  # pinned before the kill, asked after the restart too
    quiet = new_sessions("quiet", 30)  # pinned before the kill, not asked after the restart
    new_asked_after = new_sessions("new", 50)  # first seen during the outage, asked after
    new_not_asked = new_sessions("newquiet", 50)  # first seen during the outage only
    everyone = old + quiet + new_asked_after + new_not_asked

    load = Load(edge.url, threads=2).start()
    try:
        load.set("before", old + quiet)
        wait_for(lambda: load.rounds_in("before") >= 1, timeout_s=15, what="the first round")
        wait_for(
            lambda: all(redis_pins(redis_server, old + quiet).values()),
            timeout_s=5,
            what="the old sessions to be pinned in Redis",
        )

        redis_server.kill()
        killed_at = time.monotonic()
        load.set("outage", everyone)
        # ~3 s of outage, and at least one full round over every session within it.
        wait_for(lambda: load.rounds_in("outage") >= 1, timeout_s=15, what="an outage round")
        time.sleep(max(0.0, 3.0 - (time.monotonic() - killed_at)))
        outage_s = time.monotonic() - killed_at

        redis_server.restart_empty()
        load.set("after", old + new_asked_after)
        # Asked again, a pin comes back through the edge's memory (a read that misses).
        # Not asked again, only the edge's own write-back can bring it back: the
        # session was in use during the outage, and another edge must find its pin.
        with contextlib.suppress(AssertionError):  # asserted below, after the figures
            wait_for(
                lambda: all(redis_pins(redis_server, everyone).values()),
                timeout_s=8,
                what="every pin to be back in Redis",
            )
        wait_for(lambda: load.rounds_in("after") >= 1, timeout_s=15, what="an after round")
        # Before the final round below, which would itself put pins back.
        in_redis = redis_pins(redis_server, everyone)
    finally:
        load.stop()

    expected = first_clusters(load.samples)
    # Asked once more, every session (including those not asked since the outage)
    # is sticky on its cluster, and shared through Redis again.
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        final: dict[str, dict[str, object]] = {}
        for n, session in enumerate(everyone):
            ip = IPS[(n + 3) % len(IPS)]
            final[session] = client.get("/v1/route", params={"ip": ip, "session": session}).json()
        status = client.get("/v1/clusters").json()["sessions"]

    samples = load.samples
    bad = failures(samples)
    five_xx = sum(500 <= s.status < 600 for s in samples)
    moved = moved_sessions(samples)
    # Kept: answered with one cluster before, during and after (the final round included).
    kept = [
        sid
        for sid in everyone
        if sid in expected and sid not in moved and final[sid].get("cluster") == expected[sid]
    ]
    degraded = sum(bool(s.degraded) for s in samples)
    missing = [sid for sid in everyone if in_redis[sid] is None]
    groups = {"old": old, "quiet": quiet, "new": new_asked_after, "newquiet": new_not_asked}
    missing_by_group = ",".join(
        f"{name}:{sum(in_redis[sid] is None for sid in ids)}/{len(ids)}"
        for name, ids in groups.items()
    )
    wrong = [sid for sid in everyone if in_redis[sid] not in (None, expected.get(sid))]
    report(
        f"FAULT redis-killed: requests={len(samples)} 5xx={five_xx} errors={len(bad)}"
        f" kept={len(kept)}/{len(everyone)} degraded={degraded}"
        f" outage_s={outage_s:.1f} outage_requests={sum(s.phase == 'outage' for s in samples)}"
        f" back_in_redis={len(everyone) - len(missing) - len(wrong)}/{len(everyone)}"
        f" missing_in_redis={len(missing)} ({missing_by_group}) wrong_in_redis={len(wrong)}"
    )

    assert five_xx == 0, bad[:5]
    assert not bad, bad[:5]
    assert set(expected) == set(everyone), "some session was never answered"
    assert not moved, dict(list(moved.items())[:3])
    assert degraded > 0, "no answer was degraded: Redis was never missed?"
    for sid in everyone:
        body = final[sid]
        assert (body.get("cluster"), body.get("reason")) == (expected[sid], "sticky"), (sid, body)
    assert not missing, (
        f"{len(missing)} pins not back in Redis ({missing_by_group}), e.g. {missing[:3]}; {status}"
    )
    assert not wrong, {sid: (in_redis[sid], expected[sid]) for sid in wrong[:5]}
    assert len(kept) == len(everyone)
    assert status["breaker"] == "closed"
    assert status["pending_write_back"] == 0


def test_redis_hung_by_sigstop_adds_bounded_latency_and_no_errors(
    edge: Edge, redis_server: RedisServer
) -> None:
    pinned = new_sessions("pinned", 60)
    fresh = new_sessions("stall", 60)

    load = Load(edge.url, threads=2, pace_s=0.005).start()
    try:
        load.set("warmup", pinned)
        wait_for(lambda: load.rounds_in("warmup") >= 1, timeout_s=15, what="the warm-up round")
        load.set("before", pinned)
        wait_for(lambda: load.rounds_in("before") >= 2, timeout_s=15, what="the baseline")

        redis_server.pause()
        paused_at = time.monotonic()
        try:
            load.set("stall", pinned + fresh)
            pace_sync(2.0)  # hold the fault
        finally:
            redis_server.resume()
        resumed_at = time.monotonic()
        load.set("after", pinned + fresh)
        wait_for(
            lambda: (
                (s := sessions_status(edge))["breaker"] == "closed" and s["pending_write_back"] == 0
            ),
            timeout_s=10,
            what="the breaker to close and the pins to be written back",
        )
        wait_for(lambda: load.rounds_in("after") >= 1, timeout_s=15, what="an after round")
    finally:
        load.stop()

    samples = load.samples
    baseline = statistics.median(s.latency_s for s in samples if s.phase == "before")
    # Every request that overlapped the stall, including those in flight when it began.
    during = [s for s in samples if s.started < resumed_at and s.started + s.latency_s > paused_at]
    added = [s.latency_s - baseline for s in during]
    bad = failures(samples)
    five_xx = sum(500 <= s.status < 600 for s in samples)
    moved = moved_sessions(samples)
    degraded = sum(bool(s.degraded) for s in samples)
    worst = max(during, key=lambda s: s.latency_s)
    report(
        f"FAULT redis-sigstop: requests={len(samples)} during_stall={len(during)}"
        f" 5xx={five_xx} errors={len(bad)} degraded={degraded}"
        f" baseline_median_ms={baseline * 1000:.1f}"
        f" added_max_ms={max(added) * 1000:.1f} added_p99_ms={percentile(added, 0.99) * 1000:.1f}"
        f" moved={len(moved)}"
    )

    assert five_xx == 0, bad[:5]
    assert not bad, bad[:5]
    assert len(during) > 50, "too few requests during the stall to say anything"
    assert degraded > 0
    assert max(added) < MAX_ADDED_LATENCY_S, worst
    assert not moved, dict(list(moved.items())[:3])
    in_redis = redis_pins(redis_server, pinned + fresh)
    expected = first_clusters(samples)
    assert all(in_redis[s] == expected[s] for s in pinned + fresh), in_redis


async def _burst(url: str, asks: list[tuple[str, str]]) -> list[tuple[float, int, object]]:
    limits = httpx.Limits(max_connections=len(asks), max_keepalive_connections=len(asks))
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:

        async def one(ip: str, session: str) -> tuple[float, int, object]:
            started = time.monotonic()
            try:
                response = await client.get("/v1/route", params={"ip": ip, "session": session})
            except httpx.HTTPError as exc:
                return time.monotonic() - started, 0, f"{type(exc).__name__}: {exc}"
            return time.monotonic() - started, response.status_code, response.json()

        return await asyncio.gather(*(one(ip, s) for ip, s in asks))


def test_150_concurrent_requests_during_a_one_second_stall_all_answer(
    edge: Edge, redis_server: RedisServer
) -> None:
    pinned = new_sessions("burst-pinned", 75)
    fresh = new_sessions("burst-new", 75)
    expected: dict[str, str] = {}
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        for n, session in enumerate(pinned):
            body = client.get(
                "/v1/route", params={"ip": IPS[n % len(IPS)], "session": session}
            ).json()
            expected[session] = body["cluster"]
    asks = [(IPS[(n + 1) % len(IPS)], s) for n, s in enumerate(pinned + fresh)]
    # The same burst with Redis answering: what 150 at once cost on this machine anyway.
    others = new_sessions("burst-base", 75)
    healthy = asks[:75] + [(IPS[n % len(IPS)], s) for n, s in enumerate(others)]
    base = asyncio.run(_burst(edge.url, healthy))
    assert all(status == 200 for _, status, _ in base), [r for r in base if r[1] != 200][:3]
    base_max = max(lat for lat, _, _ in base)

    redis_server.pause()
    paused_at = time.monotonic()
    resumer = threading.Timer(1.0, redis_server.resume)
    resumer.start()
    try:
        results = asyncio.run(_burst(edge.url, asks))
        done_at = time.monotonic()
    finally:
        resumer.join(timeout=5)
        redis_server.resume()

    bad = [(n, r) for n, r in enumerate(results) if r[1] != 200]
    five_xx = sum(500 <= status < 600 for _, status, _ in results)
    latencies = [lat for lat, _, _ in results]
    bodies = [b for _, status, b in results if status == 200 and isinstance(b, dict)]
    degraded = sum(bool(b["session"]["degraded"]) for b in bodies)
    moved = [
        (s, b["cluster"])
        for (_, s), (_, status, b) in zip(asks, results, strict=True)
        if s in expected and isinstance(b, dict) and b.get("cluster") != expected[s]
    ]
    report(
        f"FAULT redis-sigstop-burst: requests={len(results)} 5xx={five_xx} errors={len(bad)}"
        f" degraded={degraded} max_ms={max(latencies) * 1000:.1f}"
        f" p99_ms={percentile(latencies, 0.99) * 1000:.1f}"
        f" healthy_burst_max_ms={base_max * 1000:.1f}"
        f" all_done_after_ms={(done_at - paused_at) * 1000:.0f} moved={len(moved)}"
    )

    assert five_xx == 0, bad[:5]
    assert not bad, bad[:5]
    assert len(bodies) == len(asks)
    assert all(isinstance(b["cluster"], str) for b in bodies)
    assert not moved, moved[:5]
    # The edge is whole afterwards: Redis is shared again and nothing is left queued.
    wait_for(
        lambda: (
            (s := sessions_status(edge))["breaker"] == "closed" and s["pending_write_back"] == 0
        ),
        timeout_s=10,
        what="the breaker to close and the pins to be written back",
    )


def test_a_redis_restarted_empty_gets_every_pin_back_without_a_request(
    edge: Edge, redis_server: RedisServer
) -> None:
    sessions = new_sessions("served", 1500)
    with httpx.Client(base_url=edge.url, timeout=30) as client:
        for start in range(0, len(sessions), 500):
            batch = [
                {"ip": IPS[n % len(IPS)], "session": s}
                for n, s in enumerate(sessions[start : start + 500])
            ]
            response = client.post("/v1/route", json={"requests": batch})
            assert response.status_code == 200, response.text
    pinned = redis_pins(redis_server, sessions)
    assert all(pinned.values())

    redis_server.restart_empty()  # kill -9, then at once a new, empty redis-server
    restarted = time.monotonic()
    wait_for(
        lambda: redis_pins(redis_server, sessions) == pinned,
        timeout_s=10,
        what="every pin the edge served back in Redis, with no request asking for it",
    )
    report(
        f"FAULT redis-restarted-empty: sessions={len(sessions)}"
        f" all_back_after_s={time.monotonic() - restarted:.2f}"
    )
