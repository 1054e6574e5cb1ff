"""Real parts for the tests: config files, stand-in clusters, `georouter serve` processes.

Everything here starts real processes and servers on loopback and stops them;
waiting is always on a condition with a deadline, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

from georouter.demo.standin import StandIn

REPO = Path(__file__).resolve().parent.parent
GEODATA = REPO / "geodata"
TEST_CITY_DB = GEODATA / "georouter-test-city.mmdb"
TEST_COUNTRY_DB = GEODATA / "georouter-test-country.mmdb"
TEST_ASN_DB = GEODATA / "georouter-test-asn.mmdb"

T = TypeVar("T")

# Cluster coordinates used across the tests (real cloud-region locations).
SITES: dict[str, tuple[float, float]] = {
    "us-east": (38.9445, -77.4558),
    "us-west": (45.8399, -119.7006),
    "sa-east": (-23.5505, -46.6333),
    "eu-west": (53.3498, -6.2603),
    "eu-central": (50.1109, 8.6821),
    "af-south": (-33.9249, 18.4241),
    "ap-northeast": (35.6762, 139.6503),
    "ap-sydney": (-33.8688, 151.2093),
}


def wait_for(
    condition: Callable[[], T | None], *, timeout_s: float, what: str, every_s: float = 0.02
) -> T:
    """Poll ``condition`` until it returns a truthy value; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last!r})")


async def until(
    condition: Callable[[], object], *, timeout_s: float = 10, what: str = "the condition"
) -> None:
    """The async ``wait_for``: poll ``condition`` in the event loop until it holds."""

    async def check() -> object:
        return condition()

    await until_async(check, timeout_s=timeout_s, what=what)


async def until_async(
    attempt: Callable[[], Awaitable[object]],
    *,
    timeout_s: float = 10,
    what: str = "the condition",
) -> None:
    """Repeat ``attempt`` (which may assert on what it sees) until it returns true."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await attempt():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}") from None


async def ready_now(client: httpx.AsyncClient) -> bool:
    """Whether the edge behind ``client`` answers ``/readyz`` with 200."""
    return (await client.get("/readyz")).status_code == 200


class SecondsClock:
    """Monotonic seconds that move only when the test moves them (``now += 1``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def pace(seconds: float) -> None:
    """A slow client or cluster on purpose (a trickle, a slowloris, a held fault)
    waits between its steps. That is the attack's pace, not a wait for a condition
    (those are ``until`` and ``wait_for``)."""
    await asyncio.sleep(seconds)


def pace_sync(seconds: float) -> None:
    """``pace`` for code outside the event loop."""
    time.sleep(seconds)


async def loop_turns(count: int) -> None:
    """Let the event loop run ``count`` turns: other tasks' steps interleave here."""
    for _ in range(count):
        await asyncio.sleep(0)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def config_text(clusters: Iterable[dict[str, object]], **sections: dict[str, object]) -> str:
    """A clusters.toml document: ``sections`` are tables (router=..., health=...)."""
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
        lines.append("")
    for cluster in clusters:
        lines.append("[[clusters]]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in cluster.items())
        lines.append("")
    return "\n".join(lines)


def cluster_entries(standins: dict[str, StandIn]) -> list[dict[str, object]]:
    return [
        {"name": name, "url": s.url, "lat": SITES[name][0], "lon": SITES[name][1]}
        for name, s in standins.items()
    ]


# A cluster's first probe decides whether it starts up or down. On a loaded machine
# (the suite runs under pytest-xdist, beside other work) a stand-in in a busy test
# process can take a few hundred ms to answer, so a tighter timeout would start
# healthy clusters down and send routes elsewhere.
FAST_HEALTH: dict[str, object] = {"interval_s": 1.0, "timeout_s": 1.0, "rise": 2, "fall": 3}


@dataclass
class Edge:
    """A running `georouter serve` process."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=5)

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return self.client.get(path, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


def georouter_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "georouter", *args]


def start_edge(
    config_path: Path,
    log_path: Path,
    *,
    ready: bool = True,
    args: tuple[str, ...] = (),
    prefix: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    api_prefix: str = "",
) -> Edge:
    """Start `georouter serve` on a free port; wait until it listens (and is ready).

    ``args`` are more `serve` arguments; ``prefix`` goes before the command
    (e.g. ``taskset -c 0``); ``env`` adds to its environment (secrets).
    """
    log_file = log_path.open("wb")
    command = georouter_command(
        "serve", "--config", str(config_path), "--listen", "127.0.0.1:0", *args
    )
    process = subprocess.Popen(
        [*prefix, *command],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    log_file.close()

    def listening() -> str | None:
        if process.poll() is not None:
            raise AssertionError(
                f"georouter serve exited with {process.returncode}:\n{log_path.read_text()}"
            )
        match = re.search(r"listening on (http://\S+)", log_path.read_text(errors="replace"))
        return match.group(1) if match else None

    try:
        url = wait_for(listening, timeout_s=30, what="georouter serve to listen")
        edge = Edge(process, url, log_path)
        if ready:
            ready_url = f"{api_prefix}/readyz"
            wait_for(lambda: _status(edge, ready_url) == 200, timeout_s=30, what=url + ready_url)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return edge


def _status(edge: Edge, path: str) -> int | None:
    try:
        return edge.get(path).status_code
    except httpx.TransportError:
        return None
