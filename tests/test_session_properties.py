"""Properties of the session map over random interleavings of several edges.

Several edges (real ``SessionMap`` objects) share one store that follows the
pin rule (``tests/memory_store.py``; the same rule as the Lua script, by the
table in ``test_pin_rule.py``). Hypothesis draws the interleavings: batches of
concurrent requests at different edges, announcements delivered late and out
of order, forgets, store outages and restarts that lose every key. Announcements
are delayed and reordered but never lost; a restart delivers those still on
the way first (they take milliseconds, a restart takes longer).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from georouter.config import SessionSettings
from georouter.core.pin import Pin
from georouter.metrics import Metrics
from georouter.sessions.map import SessionMap, Why
from tests.harness import loop_turns
from tests.memory_store import MemoryStore, MemoryStoreView

CLUSTERS = ("ap", "eu", "us")
EDGES = 3
SESSIONS = 12


@dataclass
class World:
    now_ms: int = 1_800_000_000_000
    store: MemoryStore = field(init=False)
    edges: list[SessionMap] = field(default_factory=list)
    views: list[MemoryStoreView] = field(default_factory=list)
    # Every answer given: (edge, session, pin, degraded), in order.
    answers: list[tuple[int, str, Pin, bool]] = field(default_factory=list)
    forgotten: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.store = MemoryStore(clock_ms=lambda: self.now_ms)
        settings = SessionSettings(
            ttl_s=3600, max_ttl_s=0, local_cache_size=10_000, near_cache_s=30
        )
        for i in range(EDGES):
            view = self.store.view(f"edge-{i}")
            self.views.append(view)
            m = SessionMap(view, settings, Metrics(), clock_ms=lambda: self.now_ms)
            m._known.near.activate()  # subscribed: announcements arrive through deliver()
            self.edges.append(m)

    def deliver(self, edge: int, count: int, rng: random.Random) -> None:
        inbox = self.store.inboxes[f"edge-{edge}"]
        rng.shuffle(inbox)
        for change in inbox[:count]:
            self.edges[edge].changed_elsewhere(change.session_id, change.pin)
        del inbox[:count]

    def deliver_all(self, rng: random.Random) -> None:
        for edge in range(EDGES):
            self.deliver(edge, len(self.store.inboxes[f"edge-{edge}"]), rng)

    async def recover(self) -> None:
        """What each edge's background ``run`` does once the store answers again."""
        for edge, m in enumerate(self.edges):
            if m.status().breaker != "closed":
                await m.store.ping()
                m._breaker.close()
                m._known.offer_everything_back()
            if await self.views[edge].lost_data():
                m._known.offer_everything_back()
            await m.write_back()


request = st.tuples(
    st.integers(0, EDGES - 1), st.integers(0, SESSIONS - 1), st.sampled_from(CLUSTERS)
)
# (edge, event-loop turns before its announcements are delivered), during a batch.
deliveries = st.lists(st.tuples(st.integers(0, EDGES - 1), st.integers(0, 8)), max_size=3)
requests = st.tuples(st.just("requests"), st.lists(request, min_size=1, max_size=8), deliveries)
step = st.one_of(
    requests,
    st.tuples(st.just("deliver"), st.integers(0, EDGES - 1), st.integers(0, 5)),
    st.tuples(st.just("forget"), st.integers(0, EDGES - 1), st.integers(0, SESSIONS - 1)),
    st.tuples(st.just("down")),
    st.tuples(st.just("up")),
    st.tuples(st.just("restart_empty")),
    st.tuples(st.just("tick"), st.integers(1, 60_000)),
)


async def play(world: World, steps: list[tuple[object, ...]], seed: int) -> None:
    rng = random.Random(seed)
    world.store.jitter = random.Random(seed + 1)
    last: dict[tuple[int, str], str] = {}
    for view in world.views:
        await view.lost_data()  # as each edge's ``run`` does when it starts
    for s in steps:
        kind = s[0]
        if kind == "requests":
            asks = [(e, f"s{n}", c) for e, n, c in s[1]]  # type: ignore[attr-defined]
            asks = [(e, sid, c) for e, sid, c in asks if sid not in world.forgotten]

            async def deliver_soon(edge: int, turns: int) -> None:
                # Announcements arrive while requests are in flight, too.
                await loop_turns(turns)
                world.deliver(edge, 99, rng)

            results = await asyncio.gather(
                *(world.edges[e].resolve(sid, c, lambda _: True) for e, sid, c in asks),
                *(deliver_soon(e, t) for e, t in s[2]),  # type: ignore[misc]
            )
            for (e, sid, _), res in zip(asks, results[: len(asks)], strict=True):
                assert res.pin is not None
                assert res.why in (Why.NEW, Why.STICKY)
                world.answers.append((e, sid, res.pin, res.degraded))
                # An edge keeps answering the pin it last had from the store, through
                # outages too; only a store that lost its data (and another edge pinning
                # the session anew meanwhile) may change it. A pin an edge made on its own
                # while the store was away may give way to the store's once it is back.
                held = last.get((e, sid))
                assert held is None or held == res.pin.cluster, (e, sid, held, res)
                if not res.degraded:
                    last[(e, sid)] = res.pin.cluster
        elif kind == "deliver":
            world.deliver(s[1], s[2], rng)  # type: ignore[arg-type]
        elif kind == "forget" and world.store.up:
            sid = f"s{s[2]}"
            await world.edges[s[1]].forget(sid)  # type: ignore[index]
            world.forgotten.add(sid)
        elif kind == "down":
            world.store.up = False
        elif kind == "up":
            world.store.up = True
            await world.recover()
        elif kind == "restart_empty":
            world.deliver_all(rng)
            world.store.restart_empty()
            for m in world.edges:
                # As ``follow_changes`` does: the subscription drops with the restart
                # (the near cache is emptied) and comes back.
                m._known.near.deactivate()
                m._known.near.activate()
            last.clear()
        elif kind == "tick":
            world.now_ms += s[1]  # type: ignore[operator]
    world.store.up = True
    world.deliver_all(rng)
    await world.recover()


def run(steps: list[tuple[object, ...]], seed: int) -> World:
    world = World()
    asyncio.run(play(world, steps, seed))
    return world


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(
    st.lists(
        st.one_of(
            requests,
            st.tuples(st.just("deliver"), st.integers(0, EDGES - 1), st.integers(0, 5)),
            st.tuples(st.just("tick"), st.integers(1, 60_000)),
        ),
        max_size=30,
    ),
    st.integers(0, 2**32),
)
def test_while_the_store_is_up_no_two_edges_answer_a_session_with_two_clusters(
    steps: list[tuple[object, ...]], seed: int
) -> None:
    world = run(steps, seed)
    clusters: dict[str, set[str]] = {}
    for _, sid, pin, degraded in world.answers:
        assert not degraded
        clusters.setdefault(sid, set()).add(pin.cluster)
    assert all(len(c) == 1 for c in clusters.values()), clusters


@PROPERTY
@given(st.lists(step, max_size=40), st.integers(0, 2**32))
def test_after_outages_every_pin_an_edge_served_is_back_or_superseded(
    steps: list[tuple[object, ...]], seed: int
) -> None:
    world = run(steps, seed)
    newest: dict[str, Pin] = {}
    for _, sid, pin, degraded in world.answers:
        if sid in world.forgotten:
            continue
        held = world.store.keys.get(sid)
        assert held is not None, (sid, pin)
        assert not held.forgotten, (sid, pin, held)
        if not degraded:
            # A version the store gave: what it holds now is that pin or a newer one.
            assert held.version >= pin.version, (sid, pin, held)
        newest[sid] = pin
    # And each edge remembers no pin older than the store's.
    for m in world.edges:
        for sid, remembered in m._known.memory.items(world.now_ms):
            held = world.store.keys.get(sid)
            if held is not None and remembered.version > held.version:
                raise AssertionError((sid, remembered, held))


@PROPERTY
@given(st.lists(step, max_size=40), st.integers(0, 2**32))
def test_a_forgotten_session_is_never_restored(steps: list[tuple[object, ...]], seed: int) -> None:
    world = run(steps, seed)
    for sid in world.forgotten:
        held = world.store.keys.get(sid)
        assert held is None or held.forgotten, (sid, held)
