"""Health of one cluster as a pure state machine: probe results in, state out.

Thresholds damp flapping (HAProxy's ``rise``/``fall``): a cluster that is up
goes down only after ``fall`` consecutive failed probes, and a cluster that is
down comes back only after ``rise`` consecutive successes. Start-up is decided
on purpose, not by accident (HAProxy's ``init-state``, PowerDNS's
everything-fails-first): the first probe alone sets the initial state, so an
edge that starts beside healthy clusters routes at once, and one that starts
beside a dead cluster never sends it a request.

Failures in a row alone miss a cluster that fails every other probe: it never
reaches ``fall`` and stays up while half its answers are errors. So failures
are also counted over a window (gdnsd's down counter): an up cluster goes
down after ``window_fall`` failures among its last ``window`` probes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

# The most probes a window may span: the recent results are kept as the bits of
# one unsigned 64-bit word, which is also how the HealthBoard carries them.
MAX_WINDOW = 64


class Status(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    # What the probe saw: "HTTP 200", "HTTP 503", "timeout", "connection refused".
    detail: str
    # The load the cluster reported with its answer (0 idle to 1 full); None: none.
    load: float | None = None


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
    # The window: the outcomes of the last ``recent_len`` probes since the status
    # last changed, newest in bit 0, a set bit a failure.
    recent: int = 0
    recent_len: int = 0
    # The load its last answer reported (None: none, or the probe failed).
    load: float | None = None
    # When it came back up after being down (None: not since it was last down, or
    # up since its first probe): failback's stabilize and ramp count from here.
    recovered_at: float | None = None

    @property
    def routable(self) -> bool:
        return self.status is Status.UP

    @property
    def recent_failures(self) -> int:
        return self.recent.bit_count()

    def as_json(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "consecutive_ok": self.consecutive_ok,
            "consecutive_failed": self.consecutive_failed,
            "probes": self.probes,
            "since": self.since,
            "last_probe_at": self.last_probe_at,
            "last_detail": self.last_detail,
            "recent_failures": self.recent_failures,
            "recent_probes": self.recent_len,
            "load": self.load,
            "recovered_at": self.recovered_at,
        }


def check_window(window: int, window_fall: int) -> None:
    """Raise ``ValueError`` for window settings ``observe`` cannot honour."""
    if not 0 <= window <= MAX_WINDOW:
        raise ValueError(f"health window must be 0 (off) to {MAX_WINDOW} probes, not {window}")
    if window and not 1 <= window_fall <= window:
        raise ValueError(f"health window_fall must be 1 to window ({window}), not {window_fall}")


def observe(
    state: HealthState,
    result: ProbeResult,
    *,
    now: float,
    rise: int,
    fall: int,
    window: int = 0,
    window_fall: int = 0,
) -> HealthState:
    """The state after one more probe result (``window = 0``: no window, failures in a
    row only; see ``check_window`` for the valid settings)."""
    ok = state.consecutive_ok + 1 if result.ok else 0
    failed = 0 if result.ok else state.consecutive_failed + 1
    # A window shorter than the one kept so far (the settings changed) drops the oldest.
    keep = (1 << window) - 1
    recent = ((state.recent << 1) | (not result.ok)) & keep
    recent_len = min(state.recent_len + 1, window)
    status = state.status
    if status is Status.UNKNOWN:
        status = Status.UP if result.ok else Status.DOWN
    elif status is Status.UP and (
        failed >= fall or (window and not result.ok and recent.bit_count() >= window_fall)
    ):
        status = Status.DOWN
    elif status is Status.DOWN and ok >= rise:
        status = Status.UP
    if status is not state.status:
        # A new status starts a new record, holding only the probe that changed it:
        # a cluster that has just met ``rise`` is judged on what it does from now on,
        # not taken down again by a single failure on top of the failures that took
        # it down before (rise/fall, not the window, decide when it is back).
        recent = int(not result.ok) & keep
        recent_len = min(1, window)
    recovered_at = state.recovered_at
    if status is not state.status:
        recovered_at = now if state.status is Status.DOWN and status is Status.UP else None
    return replace(
        state,
        status=status,
        consecutive_ok=ok,
        consecutive_failed=failed,
        probes=state.probes + 1,
        since=now if status is not state.status else state.since,
        last_probe_at=now,
        last_detail=result.detail,
        recent=recent,
        recent_len=recent_len,
        load=result.load if result.ok else None,
        recovered_at=recovered_at,
    )


class Unroutable(Mapping[str, str]):
    """The clusters that take no traffic, with why; a name the health view has no
    state for counts as not probed yet. A snapshot taken before a reload still
    names a cluster the reload removed (a batch request mid-way), and a worker's
    newer snapshot names one its prober has not published yet: neither is
    routable by default."""

    def __init__(self, down: Mapping[str, str], known: frozenset[str]) -> None:
        self._down = down
        self._known = known

    def __getitem__(self, name: str) -> str:
        if name in self._down:
            return self._down[name]
        if name in self._known:
            raise KeyError(name)
        return "not probed yet"

    def __contains__(self, name: object) -> bool:
        return name in self._down or name not in self._known

    def __iter__(self) -> Iterator[str]:
        return iter(self._down)

    def __len__(self) -> int:
        return len(self._down)


def unroutable(states: Mapping[str, HealthState]) -> Mapping[str, str]:
    """The clusters that take no traffic now, each with why: the policy's input."""
    return Unroutable(
        {
            name: "down" if st.status is Status.DOWN else "not probed yet"
            for name, st in states.items()
            if not st.routable
        },
        frozenset(states),
    )
