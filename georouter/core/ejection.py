"""Passive health as a pure state machine: data-path outcomes in, ejections out.

Envoy's outlier detection, for whole clusters: ``passive_failures`` connection
errors or 5xx answers in a row from one cluster eject it for ``ejection_s``;
each ejection that follows within a healthy period of its return lasts twice
as long as the one before, up to ``max_ejection_s``, and a cluster that stays
out of trouble for ``max_ejection_s`` after its return starts over at
``ejection_s``. Never more than ``max_ejected_share`` of the clusters are out
at once (Envoy's ``max_ejection_percent``): a cluster that reaches the
threshold while the share is used up stays in, and is ejected by its next
failure once there is room. An ejection ends only by time: an active probe
that succeeds does not shorten it (the probe asks one path; the data path saw
the answers users got).

Times are plain seconds passed in by the caller; nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from georouter.config import HealthSettings


@dataclass(frozen=True, slots=True)
class Outlier:
    """What the data path has seen of one cluster."""

    consecutive_failures: int = 0
    # When the current (or the last) ejection ends; None: never ejected.
    ejected_until: float | None = None
    # Ejections in a row without a healthy period between them (the multiplier).
    ejections: int = 0
    # What the last failure was ("HTTP 503", "connect failed").
    last_failure: str = ""
    # The failures in a row that ejected it last.
    ejected_after: int = 0

    def ejected(self, now: float) -> bool:
        return self.ejected_until is not None and now < self.ejected_until

    def as_json(self, now: float) -> dict[str, object]:
        until = self.ejected_until
        ejected = until is not None and now < until
        return {
            "ejected": ejected,
            "back_in_s": round(until - now, 1) if until is not None and ejected else None,
            "ejections_in_a_row": self.ejections,
            "consecutive_failures": self.consecutive_failures,
            "last_failure": self.last_failure,
        }


# Every cluster's record, by name; a name with no record has seen nothing yet.
Outliers = Mapping[str, Outlier]

_FRESH = Outlier()


def ejection_s(ejections: int, settings: HealthSettings) -> float:
    """How long the ``ejections``-th ejection in a row lasts (1 for the first)."""
    doubled = settings.ejection_s * float(1 << min(max(ejections - 1, 0), 62))
    return min(doubled, max(settings.max_ejection_s, settings.ejection_s))


def room(outliers: Outliers, clusters: int, now: float, share: float) -> bool:
    """Whether one more of ``clusters`` may be ejected now without passing ``share``."""
    allowed = math.floor(share * clusters + 1e-9)
    out = sum(1 for o in outliers.values() if o.ejected(now))
    return out < allowed


def report(
    outliers: Outliers,
    name: str,
    *,
    ok: bool,
    detail: str,
    now: float,
    clusters: int,
    settings: HealthSettings,
) -> tuple[Outliers, bool]:
    """The records after one data-path outcome at ``name`` (one of ``clusters``
    configured), and whether it ejected the cluster just now."""
    before = outliers.get(name, _FRESH)
    if settings.passive_failures <= 0 or before.ejected(now):
        # Off, or already out: what was in flight when it went out proves nothing new.
        return outliers, False
    if ok:
        if before.consecutive_failures == 0:
            return outliers, False
        return _with(outliers, name, replace(before, consecutive_failures=0)), False
    failures = before.consecutive_failures + 1
    after = replace(before, consecutive_failures=failures, last_failure=detail)
    if failures < settings.passive_failures or not room(
        outliers, clusters, now, settings.max_ejected_share
    ):
        return _with(outliers, name, after), False
    ejections = before.ejections + 1
    healthy_s = max(settings.max_ejection_s, settings.ejection_s)
    if before.ejected_until is None or now - before.ejected_until >= healthy_s:
        # Its last ejection is long over: this one is a first again.
        ejections = 1
    after = replace(
        after,
        consecutive_failures=0,
        ejected_after=failures,
        ejections=ejections,
        ejected_until=now + ejection_s(ejections, settings),
    )
    return _with(outliers, name, after), True


def ejected(outliers: Outliers, now: float) -> Mapping[str, str]:
    """The clusters out now, each with why: an input to the router's health view."""
    return MappingProxyType(
        {
            name: _why(o, now)
            for name, o in outliers.items()
            if o.ejected(now) and o.ejected_until is not None
        }
    )


def next_change(outliers: Outliers, now: float) -> float:
    """When ``ejected`` next changes on its own (an ejection ends), or its countdown
    text does (each second); ``math.inf`` when nothing is ejected."""
    ends = [
        o.ejected_until for o in outliers.values() if o.ejected_until is not None and o.ejected(now)
    ]
    return min(*ends, now + 1.0) if ends else math.inf


def forget(outliers: Outliers, names: frozenset[str]) -> Outliers:
    """The records of the clusters still configured (``names``) only."""
    if all(name in names for name in outliers):
        return outliers
    return MappingProxyType({n: o for n, o in outliers.items() if n in names})


def _why(o: Outlier, now: float) -> str:
    assert o.ejected_until is not None
    left = max(1, math.ceil(o.ejected_until - now))
    what = f", the last {o.last_failure}" if o.last_failure else ""
    return f"ejected: {o.ejected_after} consecutive failures{what}, back in {left} s"


def _with(outliers: Outliers, name: str, outlier: Outlier) -> Outliers:
    return MappingProxyType({**outliers, name: outlier})
