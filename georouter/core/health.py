"""Health of one cluster as a pure state machine: probe results in, state out.

Thresholds damp flapping (HAProxy's ``rise``/``fall``): a cluster that is up
goes down only after ``fall`` consecutive failed probes, and a cluster that is
down comes back only after ``rise`` consecutive successes. Start-up is decided
on purpose, not by accident (HAProxy's ``init-state``, PowerDNS's
everything-fails-first): the first probe alone sets the initial state, so an
edge that starts beside healthy clusters routes at once, and one that starts
beside a dead cluster never sends it a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType


class Status(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    # What the probe saw: "HTTP 200", "HTTP 503", "timeout", "connection refused".
    detail: str


@dataclass(frozen=True, slots=True)
class HealthState:
    status: Status = Status.UNKNOWN
    consecutive_ok: int = 0
    consecutive_failed: int = 0
    probes: int = 0
    # Wall-clock seconds, supplied by the caller: when the status last changed
    # and when the last probe finished.
    since: float | None = None
    last_probe_at: float | None = None
    last_detail: str = ""

    @property
    def routable(self) -> bool:
        return self.status is Status.UP

    def as_json(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "consecutive_ok": self.consecutive_ok,
            "consecutive_failed": self.consecutive_failed,
            "probes": self.probes,
            "since": self.since,
            "last_probe_at": self.last_probe_at,
            "last_detail": self.last_detail,
        }


def observe(
    state: HealthState, result: ProbeResult, *, now: float, rise: int, fall: int
) -> HealthState:
    """The state after one more probe result."""
    ok = state.consecutive_ok + 1 if result.ok else 0
    failed = 0 if result.ok else state.consecutive_failed + 1
    status = state.status
    if status is Status.UNKNOWN:
        status = Status.UP if result.ok else Status.DOWN
    elif status is Status.UP and failed >= fall:
        status = Status.DOWN
    elif status is Status.DOWN and ok >= rise:
        status = Status.UP
    return replace(
        state,
        status=status,
        consecutive_ok=ok,
        consecutive_failed=failed,
        probes=state.probes + 1,
        since=now if status is not state.status else state.since,
        last_probe_at=now,
        last_detail=result.detail,
    )


def unroutable(states: Mapping[str, HealthState]) -> Mapping[str, str]:
    """The clusters that take no traffic now, each with why: the policy's input."""
    return MappingProxyType(
        {
            name: "down" if st.status is Status.DOWN else "not probed yet"
            for name, st in states.items()
            if not st.routable
        }
    )
