"""From a client (and maybe a session) to a decision: locate, rank, resolve the session.

Plain orchestration. The router owns no I/O of its own: it is handed a GeoIP
database, a health view and optionally a session map at construction, so
the same router answers the HTTP API, the CLI's offline ``route`` command and
the tests. It holds the current runtime snapshot; each request uses one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

from georouter.config import PinnedDown
from georouter.core.admission import Admission, Held, admits, point_of
from georouter.core.clientip import IPAddress
from georouter.core.decision import Decision, SessionView
from georouter.core.location import Location
from georouter.core.policy import Ranking, Reason, spread_of
from georouter.core.tenants import StoredHome
from georouter.errors import NewSessionRefused
from georouter.metrics import Metrics
from georouter.runtime import Runtime
from georouter.sessions.map import SessionMap, Why


class Locator(Protocol):
    def lookup(self, ip: IPAddress) -> Location | None: ...


class HealthView(Protocol):
    def unroutable(self) -> Mapping[str, str]: ...


_NONE_DOWN: Mapping[str, str] = MappingProxyType({})
_NO_ADMISSIONS: Mapping[str, Admission] = MappingProxyType({})
_NO_LOADS: Mapping[str, float] = MappingProxyType({})
# What holds new sessions back (load, failback) and the load each cluster reports.
Admissions = tuple[Mapping[str, Admission], Mapping[str, float]]
_NOT_HELD: Admissions = (_NO_ADMISSIONS, _NO_LOADS)


class AssumeAllUp:
    """The health view of an offline tool: every cluster is taken to be up."""

    def unroutable(self) -> Mapping[str, str]:
        # One value, as a real health view is until health changes (Runtime.usable
        # reuses its test while the view is the same).
        return _NONE_DOWN


_REASONS = {Why.FAILOVER: Reason.FAILOVER, Why.STICKY: Reason.STICKY}


class Router:
    def __init__(
        self,
        runtime: Runtime,
        *,
        locator: Locator,
        health: HealthView,
        metrics: Metrics,
        sessions: SessionMap | None = None,
        pinned: Callable[[], Mapping[str, str]] | None = None,
        detours: Callable[[], Mapping[str, str]] | None = None,
        admissions: Callable[[], Admissions] | None = None,
        homes: Callable[[], Mapping[str, StoredHome]] | None = None,
        operator: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.runtime = runtime
        self._locator = locator
        self._health = health
        # The clusters a pinned session may not stay on; health's unless told (a
        # draining cluster takes no new sessions but keeps its pins until its deadline).
        self._pinned = pinned or health.unroutable
        # Clusters down from this edge only (shared health): its requests go
        # elsewhere, but no session is moved off them for every edge.
        self._detours = detours
        self._admissions = admissions
        # The clusters the operator took out (drains, forced down): out even when
        # health is ignored.
        self._operator = operator
        self._sessions = sessions
        # The tenant homes set at run time (shared through Redis); the configured
        # ones are in the runtime snapshot.
        self._homes = homes or dict
        self._decisions = metrics.family(
            "georouter_decisions_total",
            "Routing decisions by reason and cluster.",
            ("reason", "cluster"),
        ).values

    async def move(
        self,
        client_ip: IPAddress | None,
        session_id: str | None,
        cluster: str,
        runtime: Runtime,
        *,
        tenant: str | None = None,
    ) -> Decision:
        """The decision to send a request to ``cluster`` because a cluster said so (a
        replay hint): its session, if any, is pinned there, unless it belongs to a
        tenant whose home holds it (then only this request goes)."""
        location, ranking = self._rank(
            runtime, client_ip, session_id, self._health.unroutable(), tenant=tenant
        )
        if cluster in ranking.forbidden:
            # A cluster's hint never takes a client out of its strict rule.
            return await self.route(client_ip, session_id, runtime, tenant=tenant)
        view = None
        if cluster in ranking.keep_out:
            # The tenant's home keeps the session: moving its pin here would only
            # have the next request move it back.
            session_id = None
        if session_id is not None and self._sessions is not None:
            pin, _, degraded = await self._sessions.move(session_id, cluster)
            view = SessionView(session_id, pin, degraded)
        chosen = runtime.clusters[cluster]
        distance = next((d for c, d in ranking.order if c is chosen), None)
        self._decisions[(Reason.REPLAY, cluster)] += 1
        return Decision(chosen, Reason.REPLAY, client_ip, location, distance, ranking, view)

    async def learned(self, session_id: str, cluster: str) -> None:
        """An id the application issued at ``cluster``: its later requests go there."""
        if self._sessions is not None:
            await self._sessions.move(session_id, cluster)

    def swap(self, runtime: Runtime) -> None:
        """Route every request that starts from now on with ``runtime``."""
        self.runtime = runtime

    def _rank(
        self,
        rt: Runtime,
        client_ip: IPAddress | None,
        session_id: str | None,
        unroutable: Mapping[str, str],
        *,
        held: Admissions = _NOT_HELD,
        tenant: str | None = None,
    ) -> tuple[Location | None, Ranking]:
        """Locate the client (its override first) and rank the clusters for it (from
        its tenant's home, if it has one)."""
        admit, loads = held
        view = None if tenant is None else rt.tenant(tenant, self._homes())
        location: Location | None = None
        override = None
        spread_by: str | bytes | None = None
        if client_ip is None:
            spread_by = session_id if admit and session_id is not None else None
        else:
            location, override = rt.locate(client_ip, self._locator.lookup)
            if rt.weighted or admit:
                # New sessions split by a hash of their id (hashed only if a split is
                # due), so every edge draws the same cluster.
                spread_by = session_id if session_id is not None else client_ip.packed
        ranking = rt.rank(
            location,
            unroutable,
            client_ip=client_ip,
            spread=spread_by,
            override=override,
            admit=admit,
            loads=loads,
            tenant=view,
            # Panic and all_down ignore health, not the operator: a drained or
            # forced-down cluster stays out (asked for only when health is ignored).
            operator=self._operator,
        )
        return location, ranking

    def _held(self) -> Admissions:
        admissions = self._admissions
        return _NOT_HELD if admissions is None else admissions()

    def _decision(
        self,
        client_ip: IPAddress | None,
        location: Location | None,
        ranking: Ranking,
        session: SessionView | None = None,
        reason: Reason | None = None,
    ) -> Decision:
        """The decision for the ranking's choice (nearest, fallback, failover)."""
        if ranking.chosen_at is None:
            # The answer, its log line and its metric say the same: no cluster.
            self._decisions[(Reason.NONE, "")] += 1
            return Decision(None, Reason.NONE, client_ip, location, None, ranking, session)
        cluster, distance = ranking.order[ranking.chosen_at]
        reason = reason or ranking.reason
        self._decisions[(reason, cluster.name)] += 1
        return Decision(cluster, reason, client_ip, location, distance, ranking, session)

    def decide(
        self,
        client_ip: IPAddress | None,
        runtime: Runtime | None = None,
        *,
        avoid: Mapping[str, str] | None = None,
        new_session: str | None = None,
        tenant: str | None = None,
    ) -> Decision:
        """The cluster for a client at ``client_ip`` with no session (None: no address);
        ``new_session``: an id to draw weighted splits and shares by, as for a new one."""
        rt = runtime or self.runtime
        unroutable = self._unroutable(avoid)
        location, ranking = self._rank(
            rt, client_ip, new_session, unroutable, held=self._held(), tenant=tenant
        )
        return self._decision(client_ip, location, ranking)

    def _unroutable(self, avoid: Mapping[str, str] | None) -> Mapping[str, str]:
        unroutable = self._health.unroutable()
        return {**unroutable, **avoid} if avoid else unroutable

    def unroutable(self) -> Mapping[str, str]:
        """The clusters a new session may not go to now, with why."""
        return self._health.unroutable()

    def admissions(self) -> Admissions:
        """The clusters taking only a share of new sessions now, and the loads seen."""
        return self._held()

    async def route(
        self,
        client_ip: IPAddress | None,
        session_id: str | None,
        runtime: Runtime | None = None,
        *,
        may_create: bool | Callable[[], bool] = True,
        avoid: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> Decision:
        """The cluster for a client, keeping a session on the cluster it is pinned to.

        ``may_create=False``: a session with no pin raises ``NewSessionRefused``
        instead of being pinned (the caller's client is over its budget).
        ``avoid``: clusters (and why) this request must not go to besides those
        health rules out, such as one the data path just failed to reach; a
        session pinned to one moves (``failover``). A session pinned to a cluster
        the client's strict rule keeps it out of moves too (``rule``), and so does
        one pinned away from its ``tenant``'s routable home (``tenant``).
        """
        if session_id is None or self._sessions is None:
            return self.decide(client_ip, runtime, avoid=avoid, tenant=tenant)
        rt = runtime or self.runtime
        unroutable = self._unroutable(avoid)
        held = self._held()
        location, ranking = self._rank(
            rt, client_ip, session_id, unroutable, held=held, tenant=tenant
        )
        chosen = ranking.chosen_at
        preferred = ranking.order[chosen][0].name if chosen is not None else None
        on_down = rt.config.router.on_pinned_down
        panic = ranking.reason is Reason.PANIC
        pinned = self._pinned()
        if avoid:
            pinned = {**pinned, **avoid}
        # In panic health is ignored, and `temporary` and `strict` sessions do not move
        # off a cluster that is down: their pin stays whatever health says. A strict
        # rule's forbidden clusters, or all but a tenant's routable home, it leaves.
        stay = pinned if not panic and on_down is PinnedDown.REPIN else _NONE_DOWN
        keep_out = ranking.keep_out
        usable = rt.usable(stay, keep_out) if keep_out else rt.usable(stay)
        refused: list[str] = []
        if keep_out:
            usable = _noting(usable, keep_out, refused)
        pin, why, degraded = await self._sessions.resolve(
            session_id, preferred, usable, may_create=may_create
        )
        if why is Why.REFUSED:
            raise NewSessionRefused(session_id)
        view = SessionView(session_id, pin, degraded, new=why is Why.NEW)
        if why is not Why.STICKY or pin is None:
            reason = _REASONS.get(why)
            if why is Why.FAILOVER and refused:
                # Its pin was to a cluster its rule forbids (or away from its tenant's
                # home), whatever that cluster's health.
                reason = Reason.RULE if refused[0] in ranking.forbidden else Reason.TENANT
            return self._decision(client_ip, location, ranking, view, reason)
        away = None if panic else self._away(pin.cluster, pinned, held[0], session_id, on_down)
        if away is not None:
            return self._detour(client_ip, location, ranking, view, on_down)
        cluster = rt.clusters[pin.cluster]
        distance = None
        if ranking.order[0][1] is not None:
            # The order already holds the distance to every cluster.
            for ranked, d in ranking.order:
                if ranked is cluster:
                    distance = d
                    break
        self._decisions[(Reason.STICKY, cluster.name)] += 1
        return Decision(cluster, Reason.STICKY, client_ip, location, distance, ranking, view)

    def _away(
        self,
        home: str,
        pinned: Mapping[str, str],
        admit: Mapping[str, Admission],
        session_id: str,
        on_down: PinnedDown,
    ) -> str | None:
        """Why a session pinned to ``home`` is not served there now, its pin kept
        (None: it is). Down from this edge only: never moved for every edge. Down
        with `temporary` or `strict`: kept. Back up but still ramping: a `temporary`
        session goes home only once the ramp admits it, so they return gradually."""
        if self._detours is not None:
            why = self._detours().get(home)
            if why is not None:
                return why
        if on_down is PinnedDown.REPIN:
            return None
        why = pinned.get(home)
        if why is not None:
            return why
        admission = admit.get(home)
        if (
            on_down is PinnedDown.TEMPORARY
            and admission is not None
            and admission.held is Held.RAMP
            and not admits(admission, point_of(spread_of(session_id)))
        ):
            return admission.why
        return None

    def _detour(
        self,
        client_ip: IPAddress | None,
        location: Location | None,
        ranking: Ranking,
        view: SessionView,
        on_down: PinnedDown,
    ) -> Decision:
        assert view.pin is not None
        home = view.pin.cluster
        if on_down is PinnedDown.STRICT:
            self._decisions[(Reason.PINNED_DOWN, home)] += 1
            return Decision(None, Reason.PINNED_DOWN, client_ip, location, None, ranking, view)
        if ranking.chosen_at is None:
            return self._decision(client_ip, location, ranking, view)
        cluster, distance = ranking.order[ranking.chosen_at]
        self._decisions[(Reason.DETOUR, cluster.name)] += 1
        return Decision(cluster, Reason.DETOUR, client_ip, location, distance, ranking, view)


def _noting(
    allowed: Callable[[str], bool], forbidden: frozenset[str], refused: list[str]
) -> Callable[[str], bool]:
    """``allowed``, noting in ``refused`` each cluster it turned down for the rule."""

    def usable(name: str) -> bool:
        if name in forbidden:
            refused.append(name)
            return False
        return allowed(name)

    return usable


__all__ = ["AssumeAllUp", "Decision", "HealthView", "Locator", "Reason", "Router"]
