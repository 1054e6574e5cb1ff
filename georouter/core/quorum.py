"""Health the edges agree on: this edge's probes and every edge's recent reports in,
the clusters down for everyone (by quorum) and those down from here only out. Pure.

Two edges that judge a flapping cluster alone move its sessions back and forth;
with one verdict computed the same way from the same reports, they name the same
clusters. A cluster this edge alone cannot reach is "down from here": this edge
sends its new sessions elsewhere, but does not fail the cluster over for everyone.

Only fresh reports count (``now_ms - at_ms <= window_ms``, both on the Redis
server's clock, so edges' clocks may disagree). This edge's own view always
counts, whatever Redis holds for it. A cluster no edge has voted on is "not
probed yet" everywhere, as without sharing; and with no other edge reporting,
the verdict is this edge's own, why included, exactly as without sharing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from georouter.core.health import Unroutable

# A share computed as a float (2/3) meets a quorum typed as one (0.6667) it equals.
_EPSILON = 1e-9


class Seen(StrEnum):
    """What one edge's probes say of one cluster (a cluster it has not probed yet is
    absent from its report)."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Report:
    """One edge's probe results as published, stamped with the Redis server's time."""

    edge: str
    at_ms: int
    seen: Mapping[str, Seen]


@dataclass(frozen=True, slots=True)
class EdgeView:
    """One edge's view of one cluster, for display."""

    edge: str
    seen: Seen | None  # None: not probed yet by that edge
    age_s: float
    here: bool = False

    def as_json(self) -> dict[str, object]:
        return {
            "edge": self.edge,
            "state": "unknown" if self.seen is None else self.seen.value,
            "age_s": round(self.age_s, 3),
            "here": self.here,
        }


@dataclass(frozen=True, slots=True)
class Agreement:
    # Down for routing at every edge that sees the same reports, with why.
    down: Mapping[str, str]
    # Down (or not probed yet) from this edge only: up by quorum elsewhere.
    here_only: Mapping[str, str]
    # `down` and `here_only` together: where this edge sends no new session.
    new: Mapping[str, str]
    # Each cluster's views, this edge's first, then the other fresh edges by id.
    views: Mapping[str, tuple[EdgeView, ...]]
    # Edges whose view counted, this one included.
    edges: int


def agree(
    clusters: Iterable[str],
    local: Mapping[str, Seen],
    local_why: Mapping[str, str],
    reports: Iterable[Report],
    *,
    edge: str,
    now_ms: int,
    window_ms: int,
    quorum: float,
) -> Agreement:
    """The verdict at ``edge`` on ``clusters``: ``local`` is its own probes' view
    (a cluster absent: not probed yet), ``local_why`` its own unroutable reasons
    (used as they are when no other edge has a say), ``quorum`` the share of the
    voting edges (0 < quorum <= 1) that must see a cluster down to take it down
    for everyone; a tie at exactly ``quorum`` is down."""
    names = tuple(dict.fromkeys(clusters))
    fresh = sorted(
        # Either way: a report "from the future" was stamped by a Redis whose clock
        # runs ahead of the one that replaced it (a Sentinel failover).
        (r for r in reports if r.edge != edge and abs(now_ms - r.at_ms) <= window_ms),
        key=lambda r: r.edge,
    )
    down: dict[str, str] = {}
    here_only: dict[str, str] = {}
    views: dict[str, tuple[EdgeView, ...]] = {}
    for name in names:
        mine = local.get(name)
        others = [r.seen[name] for r in fresh if name in r.seen]
        theirs = [EdgeView(r.edge, r.seen.get(name), _age_s(now_ms, r)) for r in fresh]
        views[name] = (EdgeView(edge, mine, 0.0, here=True), *theirs)
        if not others:
            # No one else has a say: this edge's own verdict, as without sharing.
            if mine is not Seen.UP:
                down[name] = local_why.get(name, "down" if mine else "not probed yet")
            continue
        votes = others if mine is None else [mine, *others]
        against = sum(1 for seen in votes if seen is Seen.DOWN)
        if against >= quorum * len(votes) - _EPSILON:
            down[name] = f"down for {against} of {len(votes)} edges"
        elif mine is not Seen.UP:
            first = "down from here only" if mine else "not probed from here yet"
            here_only[name] = f"{first}; up for {len(votes) - against} of {len(votes)} edges"
    known = frozenset(names)
    return Agreement(
        down=Unroutable(MappingProxyType(down), known),
        here_only=MappingProxyType(here_only),
        new=Unroutable(MappingProxyType({**down, **here_only}), known),
        views=MappingProxyType(views),
        edges=1 + len(fresh),
    )


def _age_s(now_ms: int, report: Report) -> float:
    return max(0, now_ms - report.at_ms) / 1000
