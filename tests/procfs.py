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


def handles_signal(pid: int, signum: int) -> bool:
    """Whether ``pid`` ignores or catches ``signum`` yet (its default action is off)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    masks = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    bit = 1 << (signum - 1)
    return bool((int(masks["SigIgn"], 16) | int(masks["SigCgt"], 16)) & bit)
