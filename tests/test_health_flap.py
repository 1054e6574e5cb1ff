"""Sessions under a cluster that flaps for one edge only, ``[health] shared`` off and on.

Two real `georouter serve` edges share one real redis-server; real stand-in
clusters answer on loopback. Edge A probes eu-west at its own address and
sees it steadily up; edge B's file sends its probes of eu-west to a second
stand-in whose health a thread toggles between 200 and 503, so B sees eu-west
flap while its address, and the traffic to it, is the same for both edges.

New sessions of a London client (nearest eu-west, then eu-central) keep
arriving for a few seconds, and every session is routed again and again, at
both edges in turn, through the batch endpoint. Two figures, printed for
``pytest -s``: bounces (a session answered eu-west, then elsewhere, then
eu-west again) and disagreements (in one round the two edges named different
clusters for one session).

What shared health promises here, and what the shared test checks: with two
edges and the default quorum (0.5), B seeing eu-west down takes it down for
both, so the edges name the same cluster for every session once each has read
the other's report. A verdict change reaches B at its next probes and A one
exchange later, so for a moment after each flip the two may still differ; a
session pinned meanwhile moves once (``repin``), and never back.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from georouter.demo.standin import StandIn
from tests.harness import SITES, Edge, config_text, wait_for
from tests.redis_harness import RedisServer

LONDON = "81.2.69.142"  # nearest: eu-west, then eu-central
FLAPPING = "eu-west"
NAMES = ("eu-west", "eu-central", "us-east")
SESSIONS = 600
# New sessions arrive over this long, then all of them are routed until RUN_S.
ARRIVALS_S = 8.0
RUN_S = 9.0
# How long eu-west stays up, then down, in edge B's probes: longer than the
# moment after a flip (below), so that each half has a settled part.
HALF_PERIOD_S = 2.0
INTERVAL_S = 0.2
# A probe slow twice in a row on a busy machine does not take a cluster down,
# and one late report still counts (shared_window intervals).
FALL = 2
HEALTH: dict[str, object] = {
    "interval_s": INTERVAL_S,
    "timeout_s": INTERVAL_S,
    "rise": 1,
    "fall": FALL,
    "shared_window": 30,
}
# How long after eu-west flips for B the two edges may still name different
# clusters: B's probes see it (FALL probes, rise is 1), B publishes at its next
# exchange and A reads at its own, an interval each at most; on top, a batch
# holds an edge's event loop for a round (0.2 s at most here), and the machine
# may be busy. Measured: the latest disagreement comes about 0.4 s after a flip.
# A round clear of this after every flip must find the edges agreeing.
SETTLE_AFTER_FLIP_S = FALL * INTERVAL_S + 2 * INTERVAL_S + 0.4
SETTLE_S = 15.0


class Flapper:
    """Toggles a stand-in's health answer every ``half_period_s``; remembers when."""

    def __init__(self, standin: StandIn, half_period_s: float) -> None:
        self._standin = standin
        self._half_period_s = half_period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flapper", daemon=True)
        self.flips: list[float] = []

    def _run(self) -> None:
        while not self._stop.wait(self._half_period_s):
            up = self._standin.health_status == 200
            self._standin.health_status = 503 if up else 200
            self.flips.append(time.monotonic())

    def __enter__(self) -> Flapper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._standin.health_status = 200


@dataclass
class Rounds:
    """Every answer per session, in order, and each round's time span."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    disagreements: list[tuple[int, str]] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)
    # When each answer's round started, per session.
    times: dict[str, list[float]] = field(default_factory=dict)

    def bounces(self) -> dict[str, int]:
        """Per session, how often it came back to the flapping cluster after leaving it."""
        found: dict[str, int] = {}
        for session, seen in self.answers.items():
            on, left, back = False, False, 0
            for name in seen:
                if name == FLAPPING:
                    back += left
                    on, left = True, False
                elif on:
                    on, left = False, True
            if back:
                found[session] = back
        return found

    def moves(self, session: str) -> int:
        seen = self.answers[session]
        return sum(1 for a, b in itertools.pairwise(seen) if a != b)

    def settled(self, round_no: int, flips: list[float]) -> bool:
        """Whether the round ran wholly clear of the moments just after a flip."""
        start, end = self.spans[round_no]
        return not any(flip - 0.05 <= end and start <= flip + SETTLE_AFTER_FLIP_S for flip in flips)


def batch(edge: Edge, sessions: list[str]) -> list[str]:
    items = [{"ip": LONDON, "session": s} for s in sessions]
    response = edge.client.post("/v1/route", json={"requests": items}, timeout=30)
    assert response.status_code == 200, response.text
    decisions = response.json()["decisions"]
    assert len(decisions) == len(sessions)
    clusters = [d["cluster"] for d in decisions]
    # Another cluster may be chosen, but an answer is never "no cluster".
    assert None not in clusters, decisions
    return [str(c) for c in clusters]


def drive(a: Edge, b: Edge) -> Rounds:
    """Route a growing pool of sessions at both edges in turn (A first on even rounds)
    until RUN_S; a bounded number of batches of at most SESSIONS items."""
    rounds = Rounds()
    pool: list[str] = []
    started = time.monotonic()
    round_no = 0
    while (now := time.monotonic()) - started < RUN_S:
        due = min(SESSIONS, int(SESSIONS * (now - started) / ARRIVALS_S) + 10)
        pool.extend(f"flap-{uuid.uuid4().hex[:16]}" for _ in range(due - len(pool)))
        order = (a, b) if round_no % 2 == 0 else (b, a)
        first, second = batch(order[0], pool), batch(order[1], pool)
        rounds.spans.append((now, time.monotonic()))
        for session, x, y in zip(pool, first, second, strict=True):
            rounds.answers.setdefault(session, []).extend((x, y))
            rounds.times.setdefault(session, []).extend((now, now))
            if x != y:
                rounds.disagreements.append((round_no, session))
        round_no += 1
    return rounds


@dataclass
class Setup:
    """The stand-ins and Redis both edges use; B's probes of eu-west go to ``seen_by_b``."""

    standins: dict[str, StandIn]
    seen_by_b: StandIn
    redis: RedisServer
    write: Callable[[str], Path]

    def config(
        self,
        *,
        shared: bool,
        flapping: bool,
        router: dict[str, object] | None = None,
        health: dict[str, object] | None = None,
    ) -> Path:
        clusters: list[dict[str, object]] = []
        for name, s in self.standins.items():
            entry: dict[str, object] = {
                "name": name,
                "url": s.url,
                "lat": SITES[name][0],
                "lon": SITES[name][1],
            }
            if flapping and name == FLAPPING:
                entry["health_url"] = f"{self.seen_by_b.url}/healthz"
            clusters.append(entry)
        text = config_text(
            clusters,
            router={"fallback": "us-east", **(router or {})},
            health={**HEALTH, "shared": shared, **(health or {})},
            sessions={"redis_url": self.redis.url, "command_timeout_s": 1},
            limits={"new_sessions_per_s": 0},
        )
        return self.write(text)


@pytest.fixture
def setup(
    make_standins: Callable[..., dict[str, StandIn]],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
) -> Setup:
    standins = make_standins(*NAMES)
    seen_by_b = make_standins("eu-west-as-b-sees-it")["eu-west-as-b-sees-it"]
    return Setup(standins, seen_by_b, redis_server, write_config)


def cluster(edge: Edge, name: str) -> dict[str, object]:
    body = edge.get("/v1/clusters").json()
    found: dict[str, object] = next(c for c in body["clusters"] if c["name"] == name)
    return found


def reporting(edge: Edge) -> object:
    return edge.get("/v1/clusters").json()["shared_health"]["edges_reporting"]


@dataclass
class Figures:
    rounds: Rounds
    flips: list[float]
    # Disagreements in rounds clear of the moments just after a flip.
    settled: list[tuple[int, str]]
    bounced: dict[str, int]

    def latest_after_flip_s(self) -> float:
        """How long after its flip the latest disagreement's round started."""
        lags = [0.0]
        for round_no, _ in self.rounds.disagreements:
            start = self.rounds.spans[round_no][0]
            before = [f for f in self.flips if f <= start]
            if before:
                lags.append(start - before[-1])
        return max(lags)


def flap(
    setup: Setup, make_edge: Callable[..., Edge], *, shared: bool, **knobs: dict[str, object]
) -> Figures:
    """Start A (eu-west steady) and B (eu-west flapping), drive both, print the figures."""
    a = make_edge(setup.config(shared=shared, flapping=False, **knobs))
    b = make_edge(setup.config(shared=shared, flapping=True, **knobs))
    wait_for(
        lambda: all(cluster(e, FLAPPING)["routable"] is True for e in (a, b)),
        timeout_s=SETTLE_S,
        what="eu-west up at both edges before it flaps",
    )
    if shared:
        wait_for(
            lambda: all(reporting(e) == 2 for e in (a, b)),
            timeout_s=SETTLE_S,
            what="both edges to count two edges",
        )
    with Flapper(setup.seen_by_b, HALF_PERIOD_S) as flapper:
        rounds = drive(a, b)
    flips = list(flapper.flips)
    settled = [(r, s) for r, s in rounds.disagreements if rounds.settled(r, flips)]
    found = Figures(rounds, flips, settled, rounds.bounces())
    moves = [rounds.moves(s) for s in rounds.answers]
    print(
        f"\nFLAP shared={str(shared).lower()} {knobs or ''} sessions={len(rounds.answers)}"
        f" bounces={sum(found.bounced.values())} (sessions {len(found.bounced)})"
        f" disagreements={len(rounds.disagreements)} settled_disagreements={len(settled)}"
        f" latest_disagreement_after_flip_s={found.latest_after_flip_s():.2f}"
        f" moved={sum(1 for m in moves if m)} most_moves={max(moves)}"
        f" rounds={len(rounds.spans)} flips={len(flips)}"
    )
    assert flips, "eu-west never flapped for edge B"
    return found


def test_without_sharing_edges_name_different_clusters_for_a_session_while_one_sees_a_flap(
    setup: Setup, make_edge: Callable[..., Edge]
) -> None:
    found = flap(setup, make_edge, shared=False)
    # Today's behaviour: while B sees eu-west down and A up, every new session A
    # pins to eu-west is moved by B in the same round, long after the flip.
    assert found.settled, found.rounds.disagreements


def test_with_shared_health_a_flap_seen_by_one_edge_moves_each_session_once_for_both(
    setup: Setup, make_edge: Callable[..., Edge]
) -> None:
    found = flap(setup, make_edge, shared=True)
    rounds = found.rounds
    assert found.bounced == {}
    # Once both edges have read each other's reports they name the same cluster
    # for every session; a disagreement is the round in which a session moved.
    # How many sessions move in that round depends on which edge the flip reaches
    # first there (from tens to every session pinned to eu-west), so the total is
    # printed, not bounded; the rounds clear of a flip are where sharing shows.
    assert found.settled == []
    split = [s for _, s in rounds.disagreements]
    assert len(split) == len(set(split)), "a session the edges disagreed on twice"
    for session, seen in rounds.answers.items():
        assert rounds.moves(session) <= 1, (session, seen)
        if rounds.moves(session):
            assert seen[0] == FLAPPING, (session, seen)


def test_with_shared_health_and_stabilize_s_no_session_goes_back_to_a_flapping_cluster(
    setup: Setup, make_edge: Callable[..., Edge]
) -> None:
    # eu-west is up for 2 s at a time in B's probes, less than stabilize_s: once
    # it has failed, neither edge may send a session to it again, pinned there
    # (`temporary` keeps the pin) or new. A's own probes never saw it fail: it
    # counts stabilize_s from when the shared verdict brought it back.
    found = flap(
        setup,
        make_edge,
        shared=True,
        router={"on_pinned_down": "temporary"},
        health={"stabilize_s": 3 * HALF_PERIOD_S / 2},
    )
    rounds = found.rounds
    settled_from = found.flips[0] + SETTLE_AFTER_FLIP_S
    late = [
        (session, name)
        for session, seen in rounds.answers.items()
        for name, at in zip(seen, rounds.times[session], strict=True)
        if at > settled_from and name == FLAPPING
    ]
    assert late == [], late[:5]
    assert any(at > settled_from for times in rounds.times.values() for at in times)
