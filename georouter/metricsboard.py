"""Counters shared between an edge's worker processes, so its ``/metrics`` is the edge's.

Each worker, and the prober, has a slot in an anonymous shared memory block
mapped before they are forked, and publishes its counters and histograms there
(every second, and a worker whenever it answers a scrape). The worker that
answers a scrape adds its own live counts to every other slot. A slot only
ever grows, because a replacement starts from the counts its slot holds (what
the process it replaces last published), so the edge's counters never go back and
Prometheus ``rate()`` holds. Writes are guarded by a sequence number, odd
while a write is in progress, as on the health board.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import struct

import orjson

from georouter.metrics import Metrics, Snapshot

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<QI")  # sequence, length of the JSON that follows
SLOT_BYTES = 256 * 1024


class MetricsBoard:
    """``slots`` slots of counters; create before forking."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._mem = mmap.mmap(-1, SLOT_BYTES * slots)

    def publish(self, slot: int, snapshot: Snapshot) -> bool:
        """Write ``snapshot`` to ``slot``; False if it does not fit (nothing written)."""
        body = orjson.dumps(
            {
                "counters": {
                    name: [help_text, list(labels), [[*k, v] for k, v in rows.items()]]
                    for name, (help_text, labels, rows) in snapshot.counters.items()
                },
                "histograms": {
                    name: [
                        help_text,
                        list(labels),
                        list(buckets),
                        [[*k, v] for k, v in rows.items()],
                    ]
                    for name, (help_text, labels, buckets, rows) in snapshot.histograms.items()
                },
            }
        )
        if _HEADER.size + len(body) > SLOT_BYTES:
            return False
        at = slot * SLOT_BYTES
        seq = _HEADER.unpack_from(self._mem, at)[0]
        seq += seq % 2
        _HEADER.pack_into(self._mem, at, seq + 1, 0)
        self._mem[at + _HEADER.size : at + _HEADER.size + len(body)] = body
        _HEADER.pack_into(self._mem, at, seq + 2, len(body))
        return True

    def read(self, slot: int) -> Snapshot:
        """What ``slot`` holds (empty if nothing yet, or a write is in progress)."""
        at = slot * SLOT_BYTES
        seq, length = _HEADER.unpack_from(self._mem, at)
        if seq == 0 or seq % 2:
            return Snapshot()
        body = bytes(self._mem[at + _HEADER.size : at + _HEADER.size + length])
        if _HEADER.unpack_from(self._mem, at)[0] != seq:
            return Snapshot()
        decoded = orjson.loads(body)
        return Snapshot(
            {
                name: (help_text, tuple(labels), {tuple(row[:-1]): row[-1] for row in rows})
                for name, (help_text, labels, rows) in decoded["counters"].items()
            },
            {
                name: (
                    help_text,
                    tuple(labels),
                    tuple(buckets),
                    {tuple(row[:-1]): row[-1] for row in rows},
                )
                for name, (help_text, labels, buckets, rows) in decoded["histograms"].items()
            },
        )

    def others(self, slot: int) -> list[Snapshot]:
        return [self.read(i) for i in range(self.slots) if i != slot]


class SharedMetrics:
    """One worker's place on the board: where it publishes, what it adds to a scrape."""

    def __init__(self, board: MetricsBoard, slot: int) -> None:
        self.board = board
        self.slot = slot
        self._warned = False

    def carry_over(self, metrics: Metrics) -> None:
        """Start ``metrics`` from what this slot holds (the worker this one replaces)."""
        metrics.absorb(self.board.read(self.slot))

    def publish(self, metrics: Metrics) -> None:
        if not self.board.publish(self.slot, metrics.snapshot()) and not self._warned:
            self._warned = True
            log.warning(
                "this worker's counters outgrew their %d KiB on the metrics board; other"
                " workers' /metrics answers show them as they last fitted",
                SLOT_BYTES // 1024,
            )

    def others(self) -> list[Snapshot]:
        return self.board.others(self.slot)


async def publish_metrics(shared: SharedMetrics, metrics: Metrics, *, every_s: float = 1.0) -> None:
    """Keep a process's counts on the board for the workers' scrapes, until cancelled."""
    while True:
        shared.publish(metrics)
        await asyncio.sleep(every_s)
