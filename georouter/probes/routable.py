"""The one health view the router asks: active probes, passive ejections and the
operator's drains and overrides (``core.controls.routability``), rebuilt only
when one of them changes or time moves past an ejection's end, an override's
expiry or a drain's deadline, so nearly every request reuses the same value.

With shared health (``core.quorum``) the probes' part differs by who asks: a new
session avoids clusters down by quorum and those down from here only, while a
pinned session leaves only those down by quorum; the rest are ``detours()``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType

from georouter.config import Config
from georouter.core.admission import Admission, admissions
from georouter.core.controls import NO_CONTROLS, Controls, Routability, routability
from georouter.core.health import HealthState
from georouter.core.quorum import Agreement
from georouter.probes.passive import PassiveHealth

# How long a view of the clusters' loads is reused: loads arrive with probes,
# so a new one is seen within this of its probe.
LOAD_REFRESH_S = 0.25
_NO_DETOURS: Mapping[str, str] = MappingProxyType({})


class RoutableView:
    """``unroutable()`` for new sessions, ``pinned()`` for sessions pinned already."""

    def __init__(
        self,
        health: Callable[[], Mapping[str, str]],
        *,
        passive: PassiveHealth | None = None,
        controls: Callable[[], tuple[int, Controls]] | None = None,
        clock: Callable[[], float] = time.time,
        states: Callable[[], Mapping[str, HealthState]] | None = None,
        config: Callable[[], Config] | None = None,
        shared: Callable[[], Agreement | None] | None = None,
    ) -> None:
        self._health = health
        # The edges' shared verdict (None from it: sharing is off, health decides).
        self._shared = shared
        self._passive = passive
        self._controls = controls
        self._clock = clock
        self._key: tuple[object, int, int] | None = None
        self._view = Routability({}, {}, -math.inf)
        self._states = states
        self._config = config
        self._held: tuple[Mapping[str, Admission], Mapping[str, float]] = ({}, {})
        self._held_until = -math.inf
        self._held_config: Config | None = None
        self._held_health: tuple[object, object] | None = None
        self._detours: Mapping[str, str] = _NO_DETOURS
        # Clusters the shared verdict has down, and when it last brought each one
        # back: failback's stabilize and ramp count from there too, so a cluster
        # every edge failed over is not flooded again by the edges that saw it up.
        self._verdict_down: frozenset[str] = frozenset()
        self._back: dict[str, float] = {}

    def _current(self) -> Routability:
        agreement = self._shared() if self._shared is not None else None
        health = self._health() if agreement is None else agreement.new
        base: object = health if agreement is None else agreement
        passive_version = self._passive.version if self._passive is not None else 0
        version, controls = self._controls() if self._controls is not None else (0, NO_CONTROLS)
        key = (base, passive_version, version)
        view = self._view
        same = self._key is not None and self._key[0] is base and self._key[1:] == key[1:]
        if same and (view.until == math.inf or self._clock() < view.until):
            return view
        now = self._clock()
        ejected: Mapping[str, str] = {}
        ends = math.inf
        if self._passive is not None:
            ejected = self._passive.ejected(now)
            ends = self._passive.next_change(now)
        view = routability(health, ejected, controls, now)
        detours: Mapping[str, str] = _NO_DETOURS
        if agreement is not None:
            down_now = frozenset(agreement.down)
            for name in self._verdict_down - down_now:
                self._back[name] = now
            for name in down_now:
                self._back.pop(name, None)
            self._verdict_down = down_now
            # Down from here only, by this edge's probes or by its own data path's
            # evidence (an ejection): pinned sessions keep their pin (detours()).
            local = {n: why for n, why in ejected.items() if n not in agreement.down}
            if agreement.here_only or local:
                pinned = routability(agreement.down, {}, controls, now).pinned
                view = view._replace(pinned=pinned)
                detours = MappingProxyType({**agreement.here_only, **local})
        if ends < view.until:
            view = view._replace(until=ends)
        self._key, self._view, self._detours = key, view, detours
        return view

    def unroutable(self) -> Mapping[str, str]:
        """The clusters a new session may not go to, with why."""
        return self._current().new

    def pinned(self) -> Mapping[str, str]:
        """The clusters a session pinned to may not stay on (a draining one may)."""
        return self._current().pinned

    def operator(self) -> Mapping[str, str]:
        """The clusters the operator took out for new sessions (drained, forced down),
        whatever health says: what still holds when health is ignored."""
        if self._controls is None:
            return _NO_DETOURS
        _, controls = self._controls()
        return routability(_NO_DETOURS, {}, controls, self._clock()).new

    def admissions(self) -> tuple[Mapping[str, Admission], Mapping[str, float]]:
        """The clusters taking only a share of new sessions now (load, failback ramp),
        and the load each up cluster last reported."""
        if self._states is None or self._config is None:
            return self._held
        view = self._current()
        now = self._clock()
        config = self._config()
        # A new health view is a status change: a cluster just back must be held
        # from its first request on, not once this answer is due for a refresh.
        health = (self._health(), view)
        held_health = self._held_health
        fresh = (
            config is self._held_config
            and held_health is not None
            and health[0] is held_health[0]
            and health[1] is held_health[1]
        )
        if fresh and now < self._held_until:
            return self._held
        states = self._states()
        if self._back:
            states = {
                name: _back_at(st, self._back[name]) if name in self._back else st
                for name, st in states.items()
            }
        r, h = config.router, config.health
        held, until = admissions(
            states,
            now=now,
            stabilize_s=h.stabilize_s,
            ramp_s=h.ramp_s,
            spill_low=r.spill_low,
            spill_high=r.spill_high,
        )
        loads = {
            name: st.load for name, st in states.items() if st.routable and st.load is not None
        }
        self._held = (held, loads)
        self._held_until = min(until, now + LOAD_REFRESH_S)
        self._held_config = config
        self._held_health = health
        return self._held

    def detours(self) -> Mapping[str, str]:
        """The clusters down from this edge only, with why: up by quorum (this edge's
        probes, or its data path's ejection, say otherwise), so a session pinned there
        keeps its pin while this edge serves it elsewhere (empty when health is not
        shared)."""
        self._current()
        return self._detours


def _back_at(state: HealthState, at: float) -> HealthState:
    """``state`` as if it had recovered at ``at`` (or later, if its probes say so)."""
    if not state.routable:
        return state
    if state.recovered_at is not None and state.recovered_at >= at:
        return state
    return replace(state, recovered_at=at)
