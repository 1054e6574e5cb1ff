"""The metrics board (shared counters between workers), in one process."""

from __future__ import annotations

import pytest

from georouter.metrics import Metrics, Snapshot
from georouter.metricsboard import SLOT_BYTES, MetricsBoard, SharedMetrics

DECISIONS = "georouter_decisions_total"


def counted(n: int, cluster: str = "eu-west") -> Metrics:
    m = Metrics()
    m.family(DECISIONS, "Decisions.", ("reason", "cluster")).values[("nearest", cluster)] += n
    return m


def timed(*seconds: float, cluster: str = "eu-west") -> Metrics:
    m = Metrics()
    histogram = m.histogram("georouter_probe_duration_seconds", "Probes.", ("cluster",))
    for s in seconds:
        histogram.observe(s, (cluster,))
    return m


def test_a_scrape_sums_every_worker() -> None:
    board = MetricsBoard(3)
    a, b = SharedMetrics(board, 0), SharedMetrics(board, 1)
    b.publish(counted(5))
    b_slot = counted(2, "us-east")
    board.publish(2, b_slot.snapshot())
    merged = counted(3).merged(a.others())
    assert merged.value(DECISIONS, ("nearest", "eu-west")) == 8
    assert merged.value(DECISIONS, ("nearest", "us-east")) == 2


def test_a_replacement_goes_on_from_its_slot() -> None:
    board = MetricsBoard(2)
    SharedMetrics(board, 0).publish(counted(7))
    replacement = Metrics()
    SharedMetrics(board, 0).carry_over(replacement)
    replacement.family(DECISIONS, "Decisions.", ("reason", "cluster")).values[
        ("nearest", "eu-west")
    ] += 1
    assert replacement.value(DECISIONS, ("nearest", "eu-west")) == 8


def test_histograms_cross_the_board_and_add_bucket_by_bucket() -> None:
    board = MetricsBoard(2)
    SharedMetrics(board, 1).publish(timed(0.003, 20.0))
    merged = timed(0.003, 0.2).merged(SharedMetrics(board, 0).others())
    histogram = next(iter(merged.histograms))
    row = histogram.values[("eu-west",)]
    buckets = dict(zip((*histogram.buckets, float("inf")), row[:-1], strict=True))
    assert buckets[0.005] == 2  # 0.003 twice
    assert buckets[0.25] == 1
    assert buckets[float("inf")] == 1  # over the last bound
    assert sum(row[:-1]) == 4
    assert row[-1] == pytest.approx(0.003 + 20.0 + 0.003 + 0.2)


def test_an_observation_on_a_bound_falls_in_that_bound_s_bucket() -> None:
    histogram = timed(0.005).snapshot().histograms["georouter_probe_duration_seconds"]
    _, _, bounds, rows = histogram
    assert rows[("eu-west",)][bounds.index(0.005)] == 1


def test_an_empty_or_oversized_slot_reads_as_nothing_and_is_not_written() -> None:
    board = MetricsBoard(1)
    assert board.read(0) == Snapshot()
    huge = Metrics()
    fam = huge.family("georouter_x_total", "X.", ("k",))
    for i in range(SLOT_BYTES // 8):
        fam.values[(f"label-{i}",)] += 1
    assert board.publish(0, huge.snapshot()) is False
    assert board.read(0) == Snapshot()
