"""What an operator says about clusters (drains, forced states), and what that and
health together make routable. Pure: values in, two views out, times passed in.

A drain stops new sessions at once and keeps the ones pinned to the cluster
until its deadline; from then on the cluster is out for everyone and its
sessions fail over. A forced state overrides health for a while: ``down``
takes the cluster out for everyone, ``up`` makes it routable whatever the
probes and the data path say (a drain still holds: forcing a cluster up says
it is healthy, not that it should take new sessions).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple


class Forced(StrEnum):
    DOWN = "down"
    UP = "up"


@dataclass(frozen=True, slots=True)
class Drain:
    """No new sessions; sessions pinned there move at ``deadline`` (seconds)."""

    deadline: float
    since: float
    by: str = ""

    def as_json(self, now: float) -> dict[str, object]:
        return {
            "deadline": self.deadline,
            "since": self.since,
            "by": self.by,
            "pinned_move_in_s": max(0.0, round(self.deadline - now, 1)),
        }


@dataclass(frozen=True, slots=True)
class ForcedState:
    """An override of health until ``until`` (seconds)."""

    state: Forced
    until: float
    since: float
    reason: str = ""
    by: str = ""

    def as_json(self, now: float) -> dict[str, object]:
        return {
            "state": self.state.value,
            "until": self.until,
            "expires_in_s": max(0.0, round(self.until - now, 1)),
            "since": self.since,
            "reason": self.reason,
            "by": self.by,
        }


@dataclass(frozen=True, slots=True)
class Controls:
    """Every drain and forced state in effect, by cluster name."""

    drains: Mapping[str, Drain] = field(default_factory=dict)
    forced: Mapping[str, ForcedState] = field(default_factory=dict)

    def forced_now(self, name: str, now: float) -> ForcedState | None:
        found = self.forced.get(name)
        return found if found is not None and now < found.until else None

    def as_json(self, name: str, now: float) -> dict[str, object]:
        drain = self.drains.get(name)
        forced = self.forced_now(name, now)
        return {
            "drain": None if drain is None else drain.as_json(now),
            "override": None if forced is None else forced.as_json(now),
        }


NO_CONTROLS = Controls()


class Routability(NamedTuple):
    """The clusters a new session may not go to, those a pinned session may not stay
    on (a draining cluster keeps its pins), and when either next changes by itself."""

    new: Mapping[str, str]
    pinned: Mapping[str, str]
    until: float


class Merged(Mapping[str, str]):
    """``base`` (a health view, which may answer for names it does not list) with
    ``extra`` added and the ``lifted`` names taken out of it."""

    def __init__(self, base: Mapping[str, str], extra: Mapping[str, str], lifted: frozenset[str]):
        self._base = base
        self._extra = extra
        self._lifted = lifted

    def __getitem__(self, name: str) -> str:
        if name in self._extra:
            return self._extra[name]
        if name in self._lifted:
            raise KeyError(name)
        return self._base[name]

    def __contains__(self, name: object) -> bool:
        return name in self._extra or (name not in self._lifted and name in self._base)

    def __iter__(self) -> Iterator[str]:
        yield from self._extra
        for name in self._base:
            if name not in self._extra and name not in self._lifted:
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)


def routability(
    health: Mapping[str, str], ejected: Mapping[str, str], controls: Controls, now: float
) -> Routability:
    """What health (the probes' view), passive ``ejected`` clusters and the operator's
    ``controls`` together rule out at ``now``. With nothing but health, both views
    are ``health`` itself (the same object, so callers can cache on it)."""
    if not ejected and not controls.drains and not controls.forced:
        return Routability(health, health, math.inf)
    until = math.inf
    both: dict[str, str] = {}
    lifted: set[str] = set()
    downed: set[str] = set()
    for name, why in ejected.items():
        both.setdefault(name, why)
    for name, forced in controls.forced.items():
        if now >= forced.until:
            continue
        until = min(until, forced.until, now + 1.0)
        if forced.state is Forced.DOWN:
            left = math.ceil(forced.until - now)
            said = f": {forced.reason}" if forced.reason else ""
            both[name] = f"overridden down{said} (expires in {left} s)"
            downed.add(name)
        else:
            lifted.add(name)
            both.pop(name, None)
    new_only: dict[str, str] = {}
    for name, drain in controls.drains.items():
        if name in downed:
            continue
        if now < drain.deadline:
            until = min(until, drain.deadline, now + 1.0)
            left = math.ceil(drain.deadline - now)
            new_only[name] = f"draining: no new sessions, pinned ones move in {left} s"
        else:
            both[name] = "drained: takes no traffic until undrained"
    frozen_lifted = frozenset(lifted)
    pinned = Merged(health, MappingProxyType(both), frozen_lifted)
    new = Merged(health, MappingProxyType({**new_only, **both}), frozen_lifted)
    if not new_only:
        new = pinned
    return Routability(new, pinned, until)
