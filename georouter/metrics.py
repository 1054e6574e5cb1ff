"""Counters and histograms an operator scrapes, as plain values; no I/O.

The hot path adds to a ``Counter`` or observes into a list of bucket counts
here, never into a ``prometheus_client`` object: a scrape takes a snapshot of
every process of the edge (``metricsboard``), merges them, and only then are
they turned into Prometheus families (``http.exposition``). Both kinds merge
by addition, so the edge's sum of them only ever grows.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Upper bounds (seconds) of the latency histograms' buckets: from a near-cache
# decision (tens of microseconds) to a probe at its timeout.
LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# label values -> value
CounterRows = dict[tuple[str, ...], float]
# label values -> [count in each bucket (each bound, then +Inf; not cumulative), sum]
HistogramRows = dict[tuple[str, ...], list[float]]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A process's counts as plain data (what the metrics board carries).

    ``counters``: name -> (help, label names, rows); ``histograms``: name ->
    (help, label names, bucket bounds, rows).
    """

    counters: dict[str, tuple[str, tuple[str, ...], CounterRows]] = field(default_factory=dict)
    histograms: dict[str, tuple[str, tuple[str, ...], tuple[float, ...], HistogramRows]] = field(
        default_factory=dict
    )


@dataclass
class Family:
    """A counter with labels; hot paths add to ``values[label_values]`` directly."""

    name: str
    help: str
    labels: tuple[str, ...]
    values: Counter[tuple[str, ...]] = field(default_factory=Counter)


@dataclass
class Histogram:
    """A histogram with fixed buckets, kept as plain counts per label values."""

    name: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    values: HistogramRows = field(default_factory=dict)

    def row(self, label_values: tuple[str, ...] = ()) -> list[float]:
        """The counts for ``label_values`` (all zero until observed)."""
        found = self.values.get(label_values)
        if found is None:
            found = self.values[label_values] = [0.0] * (len(self.buckets) + 2)
        return found

    def observe(self, value: float, label_values: tuple[str, ...] = ()) -> None:
        row = self.row(label_values)
        # Prometheus buckets are "less than or equal": bisect_left finds the first
        # bound at or above the value (past the last one: the +Inf bucket).
        row[bisect_left(self.buckets, value)] += 1
        row[-1] += value


class Metrics:
    """Every counter and histogram of one process, by name."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        self._histograms: dict[str, Histogram] = {}

    def family(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Family:
        """The counter family ``name``, created on first use."""
        found = self._families.get(name)
        if found is None:
            found = self._families[name] = Family(name, help_text, labels)
        return found

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...] = (),
        buckets: tuple[float, ...] = LATENCY_BUCKETS_S,
    ) -> Histogram:
        """The histogram ``name``, created on first use."""
        found = self._histograms.get(name)
        if found is None:
            found = self._histograms[name] = Histogram(name, help_text, labels, buckets)
        return found

    @property
    def counters(self) -> Iterable[Family]:
        return self._families.values()

    @property
    def histograms(self) -> Iterable[Histogram]:
        return self._histograms.values()

    def value(self, name: str, label_values: tuple[str, ...] = ()) -> float:
        """One counter's value (0 if never counted)."""
        found = self._families.get(name)
        return 0.0 if found is None else found.values[label_values]

    def snapshot(self) -> Snapshot:
        return Snapshot(
            {name: (f.help, f.labels, dict(f.values)) for name, f in self._families.items()},
            {
                name: (h.help, h.labels, h.buckets, {k: list(v) for k, v in h.values.items()})
                for name, h in self._histograms.items()
            },
        )

    def absorb(self, snapshot: Snapshot) -> None:
        """Add another process's counts to these (a scrape, a replacement worker's start)."""
        for name, (help_text, labels, rows) in snapshot.counters.items():
            self.family(name, help_text, labels).values.update(rows)
        for name, (help_text, labels, buckets, hrows) in snapshot.histograms.items():
            histogram = self.histogram(name, help_text, labels, buckets)
            if histogram.buckets != buckets:
                continue  # another version's buckets: counts that cannot be added
            for label_values, counts in hrows.items():
                row = histogram.row(label_values)
                for i, count in enumerate(counts):
                    row[i] += count

    def merged(self, others: Sequence[Snapshot] = ()) -> Metrics:
        """A copy of these counts plus ``others`` (the other processes' of the edge)."""
        merged = Metrics()
        merged.absorb(self.snapshot())
        for snapshot in others:
            merged.absorb(snapshot)
        return merged
