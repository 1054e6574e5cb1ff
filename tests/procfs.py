"""What /proc says about processes the tests and the benchmark start (Linux)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    comm: str
    state: str
    ppid: int
    cpu_s: float  # user + system time so far


def processes() -> Iterator[Proc]:
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # comm is in parentheses and may itself contain spaces or parentheses.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        yield Proc(
            int(entry.name),
            comm,
            fields[0],
            int(fields[1]),
            (int(fields[11]) + int(fields[12])) / ticks,
        )


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command name) of the processes whose parent is ``pid``."""
    return [(p.pid, p.comm) for p in processes() if p.ppid == pid]


def alive(pid: int) -> bool:
    """Running (a zombie is not alive)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def tree_cpu_seconds(root: int) -> float:
    """CPU time used so far by ``root`` and its children (a supervisor's workers)."""
    return sum(p.cpu_s for p in processes() if root in (p.pid, p.ppid))


def ignores_signal(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has set ``signum`` to be ignored (its SigIgn mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False
