"""Cluster health shared between processes: one prober writes, every worker reads.

With several worker processes an edge still probes each cluster once: a
single prober process owns the ``HealthMonitor`` and publishes every state
change to this board, an anonymous shared memory block mapped before the
workers are forked. Writes are guarded by a sequence number (odd while a
write is in progress), so a reader never sees half a state; readers re-read
only when the sequence number moved, so a request pays for one small read.

The board names its clusters itself and has room for ``CAPACITY`` of them, so
a reload that adds or removes clusters republishes it in place. A worker
whose configuration names a cluster the board does not (yet) hold treats it
as not probed yet: unroutable, never routable by default.
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Mapping
from types import MappingProxyType

from georouter.config import Cluster
from georouter.config.model import MAX_CLUSTERS
from georouter.core.health import HealthState, Status, unroutable

_HEADER = struct.Struct("<QBH")  # sequence, first round done, clusters on the board
# name, status, consecutive ok, consecutive failed, probes, since, last probe at,
# detail, and the window (its bits and length): a replacement prober carries on
# from what is published here, so the window must survive the trip like the counters.
# Then the load last reported and when it recovered (NaN: none).
_RECORD = struct.Struct("<64sBIIIdd96sQBdd")
# Clusters a board has room for (cluster names are at most 63 bytes).
CAPACITY = MAX_CLUSTERS
_STATUS_CODES = {Status.UNKNOWN: 0, Status.UP: 1, Status.DOWN: 2}
_STATUSES = {code: status for status, code in _STATUS_CODES.items()}
_NAN = float("nan")


_Fields = tuple[bytes, int, int, int, int, float, float, bytes, int, int, float, float]


def _fields(name: str, state: HealthState) -> _Fields:
    return (
        name.encode("ascii"),
        _STATUS_CODES[state.status],
        state.consecutive_ok,
        state.consecutive_failed,
        state.probes,
        _NAN if state.since is None else state.since,
        _NAN if state.last_probe_at is None else state.last_probe_at,
        _truncate(state.last_detail, 96),
        state.recent,
        state.recent_len,
        _NAN if state.load is None else state.load,
        _NAN if state.recovered_at is None else state.recovered_at,
    )


def _truncate(text: str, limit: int) -> bytes:
    """At most ``limit`` bytes of UTF-8, cut on a character boundary."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw
    return raw[:limit].decode("utf-8", "ignore").encode("utf-8")


def _decode(raw: _Fields) -> tuple[str, HealthState]:
    name, status, ok, failed, probes, since, last, detail, recent, recent_len, load, back = raw
    return name.rstrip(b"\0").decode("ascii"), HealthState(
        status=_STATUSES[status],
        consecutive_ok=ok,
        consecutive_failed=failed,
        probes=probes,
        since=None if math.isnan(since) else since,  # NaN: never
        last_probe_at=None if math.isnan(last) else last,
        last_detail=detail.rstrip(b"\0").decode("utf-8", "replace"),
        recent=recent,
        recent_len=recent_len,
        load=None if math.isnan(load) else load,
        recovered_at=None if math.isnan(back) else back,
    )


class HealthBoard:
    """The shared block; create it before forking, then write (the prober) or read."""

    def __init__(self, clusters: tuple[Cluster, ...]) -> None:
        if len(clusters) > CAPACITY:
            raise ValueError(f"a health board holds at most {CAPACITY} clusters")
        self._mem = mmap.mmap(-1, _HEADER.size + _RECORD.size * CAPACITY)
        self._seen = -1
        self._states: Mapping[str, HealthState] = {c.name: HealthState() for c in clusters}
        self._unroutable: Mapping[str, str] = unroutable(self._states)
        self._ready = False
        # Zeroed memory is not a valid record (0.0 is a time; NaN means never):
        # write the initial states before any reader can look.
        self.publish(self._states, ready=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.states)

    # The writer side (the prober process).

    def publish(self, states: Mapping[str, HealthState], *, ready: bool) -> None:
        """Publish ``states`` as the board's whole content (clusters not in it leave)."""
        if len(states) > CAPACITY:
            raise ValueError(f"a health board holds at most {CAPACITY} clusters")
        seq = _HEADER.unpack_from(self._mem, 0)[0]
        seq += seq % 2  # odd: a writer died mid-write; its record is garbage, ours replaces it
        _HEADER.pack_into(self._mem, 0, seq + 1, int(ready), len(states))  # odd: writing
        for i, (name, state) in enumerate(states.items()):
            _RECORD.pack_into(self._mem, _HEADER.size + i * _RECORD.size, *_fields(name, state))
        _HEADER.pack_into(self._mem, 0, seq + 2, int(ready), len(states))

    # The reader side (every worker): the HealthView the router and the API read.

    def _refresh(self) -> None:
        seq, ready, count = _HEADER.unpack_from(self._mem, 0)
        if seq == self._seen or seq % 2:
            return  # unchanged, or a write in progress: keep the last good copy
        states = dict(
            _decode(_RECORD.unpack_from(self._mem, _HEADER.size + i * _RECORD.size))
            for i in range(count)
        )
        if _HEADER.unpack_from(self._mem, 0)[0] != seq:
            return  # overwritten while reading: read again next time
        self._states = MappingProxyType(states)
        self._unroutable = unroutable(states)
        self._ready = bool(ready)
        self._seen = seq

    @property
    def states(self) -> Mapping[str, HealthState]:
        self._refresh()
        return self._states

    def unroutable(self) -> Mapping[str, str]:
        self._refresh()
        return self._unroutable

    @property
    def ready(self) -> bool:
        self._refresh()
        return self._ready

    def close(self) -> None:
        self._mem.close()
