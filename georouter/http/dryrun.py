"""What a reload would do on this edge, measured: the sessions it would move, the clients it
would send elsewhere.

A dry run of ``POST /v1/config/reload`` answers, besides what the file changes
(``config.diff``), its ``impact`` on this edge:

- ``sessions``: a census of the session map in the edge's own Redis (for the
  embedded default, the edge's private one), bounded (``sessions.census``):
  the live pins per cluster, of which ``moving`` are pinned to clusters the
  file removes (each fails over on its next request, to the client's nearest
  routable cluster then) and ``staying`` to clusters it keeps, a moved one
  included: a pin is never moved because its cluster's coordinates changed.
- ``decisions``: the client addresses of the edge's latest routing decisions
  (``Services.recent_clients``), each ranked under the running snapshot and
  under the file's, with health as the edge sees it now, and how many would
  start a new session on another cluster. A cluster the file adds has not been
  probed yet; it is counted as up, as it takes new sessions once its first
  probes pass. Counts only: no address leaves the edge.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from georouter.config import ConfigChange, compare, load_version
from georouter.core.clientip import IPAddress
from georouter.errors import ConfigError, StoreUnavailable
from georouter.http.common import Services
from georouter.http.reload import ConfigFile
from georouter.router import Locator
from georouter.runtime import Runtime
from georouter.sessions.census import take_census
from georouter.sessions.redisstore import RedisSessionStore


@dataclass(frozen=True, slots=True)
class DecisionShift:
    """How the new-session choice of a sample of clients changes between two snapshots."""

    sampled: int
    # (cluster before, cluster after) -> clients, for those that change; None: no
    # cluster could take them.
    moves: Mapping[tuple[str | None, str | None], int]

    @property
    def changed(self) -> int:
        return sum(self.moves.values())

    def as_json(self) -> dict[str, object]:
        return {
            "sampled": self.sampled,
            "changed": self.changed,
            "share": round(self.changed / self.sampled, 4) if self.sampled else None,
            "moves": [
                {"from": before, "to": after, "count": n}
                for (before, after), n in sorted(
                    self.moves.items(), key=lambda kv: (-kv[1], str(kv[0]))
                )
            ],
        }


def _choice(
    runtime: Runtime, ip: IPAddress | None, locator: Locator, unroutable: Mapping[str, str]
) -> str | None:
    location, override = runtime.locate(ip, locator.lookup) if ip is not None else (None, None)
    spread = ip.packed if runtime.weighted and ip is not None else None
    ranking = runtime.rank(location, unroutable, client_ip=ip, spread=spread, override=override)
    return None if ranking.chosen_at is None else ranking.order[ranking.chosen_at][0].name


def decision_shift(
    clients: Iterable[IPAddress | None],
    locator: Locator,
    *,
    old: Runtime,
    new: Runtime,
    unroutable: Mapping[str, str],
    added: Collection[str],
) -> DecisionShift:
    """Rank each client under ``old`` and ``new`` (``Runtime.rank``, the router's own
    ranking) with ``unroutable`` as health now; clusters in ``added`` count as up."""
    # Only clusters the health view knows keep its verdict; a plain dict, because the
    # view counts every name it has no state for as not probed yet.
    after = {
        c.name: unroutable[c.name]
        for c in new.config.clusters
        if c.name not in added and c.name in unroutable
    }
    sampled = 0
    moves: Counter[tuple[str | None, str | None]] = Counter()
    for ip in clients:
        sampled += 1
        before, now = _choice(old, ip, locator, unroutable), _choice(new, ip, locator, after)
        if before != now:
            moves[(before, now)] += 1
    return DecisionShift(sampled, dict(moves))


async def _sessions(svc: Services, change: ConfigChange, kept: set[str]) -> object:
    if svc.sessions is None:
        return None
    store = svc.sessions.store
    if not isinstance(store, RedisSessionStore):
        return {"census": "unavailable", "message": "the session store is not Redis"}
    settings = svc.runtime.config.sessions
    try:
        census = await take_census(
            store.client, settings.key_prefix, max_age_ms=int(settings.max_ttl_s * 1000)
        )
    except StoreUnavailable as exc:
        return {"census": "unavailable", "message": f"Redis did not answer: {exc}"}
    return census.as_json(kept, change.removed)


async def impact(svc: Services, source: ConfigFile) -> dict[str, object] | None:
    """The impact of the file at ``source.path`` over the running one (None: it no
    longer reads as a valid file, as it did a moment ago for the dry run itself)."""
    try:
        new, version = load_version(source.path)
    except ConfigError:
        return None
    change = compare(source.as_loaded, new)
    running = svc.runtime
    shift = decision_shift(
        # A copy: requests append while this runs between awaits.
        list(svc.recent_clients),
        svc.geo,
        old=running,
        new=Runtime.of(new),
        unroutable=svc.health.unroutable(),
        added=change.added,
    )
    return {
        "version": version,
        "sessions": await _sessions(svc, change, {c.name for c in new.clusters}),
        "decisions": shift.as_json(),
    }
