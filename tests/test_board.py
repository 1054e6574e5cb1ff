"""The shared HealthBoard: what one process publishes, every process reads back exactly."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Mapping

import pytest

from georouter.config import Cluster
from georouter.core.health import MAX_WINDOW, HealthState, Status
from georouter.probes.board import HealthBoard

NAMES = ("eu-west", "us-east", "ap-sydney")


@pytest.fixture
def board() -> Iterator[HealthBoard]:
    board = HealthBoard(tuple(Cluster(n, f"https://{n}.example.net", 0.0, 0.0) for n in NAMES))
    yield board
    board.close()


def states(**overrides: HealthState) -> dict[str, HealthState]:
    out = {n: HealthState() for n in NAMES}
    out.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return out


UP = HealthState(
    status=Status.UP,
    consecutive_ok=7,
    consecutive_failed=0,
    probes=4_000_000_000,  # near the top of a u32: no silent wrap
    since=1_700_000_000.125,
    last_probe_at=1_700_000_123.5,
    last_detail="HTTP 200",
    recent=0b10_0000_0100,  # two failures among the last ten
    recent_len=10,
)
DOWN = HealthState(
    status=Status.DOWN,
    consecutive_ok=0,
    consecutive_failed=3,
    probes=12,
    since=1_700_000_100.25,
    last_probe_at=1_700_000_123.75,
    last_detail="connect error: [Errno 111] Connection refused",
    recent=0b1,
    recent_len=1,
)
UNPROBED = HealthState()


def test_a_fresh_board_reads_as_never_probed_and_not_ready(board: HealthBoard) -> None:
    # What a worker sees before the prober's first publish.
    assert dict(board.states) == {n: HealthState() for n in NAMES}
    assert board.ready is False
    assert dict(board.unroutable()) == dict.fromkeys(NAMES, "not probed yet")


def test_published_states_read_back_equal(board: HealthBoard) -> None:
    published = states(eu_west=UP, us_east=DOWN, ap_sydney=UNPROBED)
    board.publish(published, ready=True)
    assert dict(board.states) == published
    # None (never) survives the round trip, as does 0.0 (the epoch is a time, not "never").
    at_epoch = HealthState(status=Status.UP, since=0.0, last_probe_at=0.0, last_detail="")
    board.publish(states(eu_west=at_epoch), ready=True)
    assert board.states["eu-west"] == at_epoch
    assert board.states["us-east"].since is None
    assert board.states["us-east"].last_probe_at is None


@pytest.mark.parametrize(
    ("recent", "recent_len"),
    [
        pytest.param(0, 0, id="empty"),
        pytest.param(1 << (MAX_WINDOW - 1), MAX_WINDOW, id="oldest-bit-of-the-longest"),
        pytest.param((1 << MAX_WINDOW) - 1, MAX_WINDOW, id="all-failed"),
    ],
)
def test_the_failure_window_reads_back_whole(
    board: HealthBoard, recent: int, recent_len: int
) -> None:
    # A replacement prober carries on from the board: the window must not be cut.
    state = HealthState(status=Status.UP, recent=recent, recent_len=recent_len)
    board.publish(states(eu_west=state), ready=True)
    read = board.states["eu-west"]
    assert (read.recent, read.recent_len) == (recent, recent_len)
    assert read.as_json()["recent_failures"] == recent.bit_count()


@pytest.mark.parametrize(
    "detail",
    [
        pytest.param("x" * 96, id="ascii-exactly-96"),
        pytest.param("x" * 300, id="ascii-long"),
        pytest.param("é" * 48, id="two-byte-exactly-96"),
        pytest.param("a" + "é" * 60, id="two-byte-split-at-96"),
        pytest.param("ab" + "€" * 40, id="three-byte-split-at-96"),
        pytest.param("abc" + "🌍" * 30, id="four-byte-split-at-96"),
        pytest.param("timeout after 2s", id="short"),
    ],
)
def test_last_detail_is_cut_to_96_bytes_on_a_character_boundary(
    board: HealthBoard, detail: str
) -> None:
    board.publish(states(eu_west=HealthState(status=Status.DOWN, last_detail=detail)), ready=True)
    read = board.states["eu-west"].last_detail
    # The longest prefix of the original that fits in 96 bytes of UTF-8: never a
    # replacement character for half a character.
    expected = detail
    while len(expected.encode("utf-8")) > 96:
        expected = expected[:-1]
    assert read == expected
    assert "\ufffd" not in read


def test_ready_follows_the_latest_publish(board: HealthBoard) -> None:
    board.publish(states(eu_west=UP), ready=False)
    assert board.ready is False
    board.publish(states(eu_west=UP, us_east=UP, ap_sydney=UP), ready=True)
    assert board.ready is True
    board.publish(states(eu_west=UP, us_east=UP, ap_sydney=UP), ready=False)
    assert board.ready is False


def test_unroutable_names_down_and_unknown_clusters_with_why(board: HealthBoard) -> None:
    board.publish(states(eu_west=UP, us_east=DOWN, ap_sydney=UNPROBED), ready=True)
    assert dict(board.unroutable()) == {"us-east": "down", "ap-sydney": "not probed yet"}
    board.publish(states(eu_west=DOWN, us_east=UP, ap_sydney=UP), ready=True)
    assert dict(board.unroutable()) == {"eu-west": "down"}
    board.publish(states(eu_west=UP, us_east=UP, ap_sydney=UP), ready=True)
    assert dict(board.unroutable()) == {}


def test_readers_re_read_only_when_the_sequence_moves(board: HealthBoard) -> None:
    board.publish(states(eu_west=UP), ready=False)
    first = board.states
    first_unroutable = board.unroutable()
    # Nothing published since: the very same copies, no new read.
    assert board.states is first
    assert board.unroutable() is first_unroutable
    # Two publishes between reads: the reader sees the latest, once.
    board.publish(states(eu_west=DOWN), ready=False)
    board.publish(states(eu_west=UP, us_east=UP, ap_sydney=DOWN), ready=True)
    second = board.states
    assert second is not first
    assert dict(second) == states(eu_west=UP, us_east=UP, ap_sydney=DOWN)
    assert board.ready is True
    assert dict(board.unroutable()) == {"ap-sydney": "down"}
    assert board.states is second
    # The copy handed out is read-only: a reader cannot corrupt what others read.
    with pytest.raises(TypeError):
        second["eu-west"] = DOWN  # type: ignore[index]


def _in_child(work: object) -> int:
    """Fork; the child runs ``work()`` and exits 0 (1 if it raised); the parent gets the code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()  # type: ignore[operator]
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_states_published_by_another_process_are_read_here(board: HealthBoard) -> None:
    assert board.ready is False  # this process has read the board before the child writes
    published = states(eu_west=UP, us_east=DOWN, ap_sydney=UNPROBED)
    assert _in_child(lambda: board.publish(published, ready=True)) == 0
    assert board.ready is True
    assert dict(board.states) == published
    assert dict(board.unroutable()) == {"us-east": "down", "ap-sydney": "not probed yet"}


class _DiesMidWrite(Mapping[str, HealthState]):
    """States whose second cluster's record is never written: the writer process dies there."""

    def __init__(self, inner: dict[str, HealthState]) -> None:
        self.inner = inner

    def __getitem__(self, name: str) -> HealthState:
        if name == NAMES[1]:
            os.kill(os.getpid(), signal.SIGKILL)  # in the middle of publish()
        return self.inner[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def test_a_prober_that_dies_mid_write_does_not_freeze_the_board(board: HealthBoard) -> None:
    before = states(eu_west=UP, us_east=UP, ap_sydney=UP)
    board.publish(before, ready=True)
    assert dict(board.states) == before
    # A prober is killed half-way through a publish; readers keep the last whole copy...
    torn = _DiesMidWrite(states(eu_west=DOWN, us_east=DOWN, ap_sydney=DOWN))
    assert _in_child(lambda: board.publish(torn, ready=True)) == -signal.SIGKILL
    assert dict(board.states) == before
    # ...and the prober that replaces it is heard by every reader, from its first publish on.
    after = states(eu_west=DOWN, us_east=UP, ap_sydney=UP)
    assert _in_child(lambda: board.publish(after, ready=True)) == 0
    assert dict(board.states) == after
    later = states(eu_west=UP, us_east=UP, ap_sydney=DOWN)
    assert _in_child(lambda: board.publish(later, ready=True)) == 0
    assert dict(board.states) == later
