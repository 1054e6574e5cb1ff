"""The metrics board (shared counters between workers), in one process."""

from __future__ import annotations

from georouter.metrics import Metrics
from georouter.metricsboard import SLOT_BYTES, MetricsBoard, SharedMetrics


def counted(n: int, cluster: str = "eu-west") -> Metrics:
    m = Metrics()
    m.family("georouter_decisions_total", "Decisions.", ("reason", "cluster")).values[
        ("nearest", cluster)
    ] += n
    return m


def test_a_scrape_sums_every_worker() -> None:
    board = MetricsBoard(3)
    a, b = SharedMetrics(board, 0), SharedMetrics(board, 1)
    b.publish(counted(5))
    b_slot = counted(2, "us-east")
    board.publish(2, b_slot.snapshot())
    text = counted(3).render(others=a.others())
    assert 'georouter_decisions_total{reason="nearest",cluster="eu-west"} 8' in text
    assert 'georouter_decisions_total{reason="nearest",cluster="us-east"} 2' in text


def test_a_replacement_goes_on_from_its_slot() -> None:
    board = MetricsBoard(2)
    SharedMetrics(board, 0).publish(counted(7))
    replacement = Metrics()
    SharedMetrics(board, 0).carry_over(replacement)
    replacement.family("georouter_decisions_total", "Decisions.", ("reason", "cluster")).values[
        ("nearest", "eu-west")
    ] += 1
    assert 'cluster="eu-west"} 8' in replacement.render()


def test_an_empty_or_oversized_slot_reads_as_nothing_and_is_not_written() -> None:
    board = MetricsBoard(1)
    assert board.read(0) == {}
    huge = Metrics()
    fam = huge.family("georouter_x_total", "X.", ("k",))
    for i in range(SLOT_BYTES // 8):
        fam.values[(f"label-{i}",)] += 1
    assert board.publish(0, huge.snapshot()) is False
    assert board.read(0) == {}
