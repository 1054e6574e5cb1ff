"""Health probes against hostile or broken health endpoints (project issue 12).

Every endpoint here is a real TCP server on loopback: a raw asyncio server in a
thread of its own, so it answers the same way to an in-process ``HealthMonitor``
and to a `georouter serve` process. Nothing is mocked: the probes go through
httpx and the kernel's sockets, and what the server managed to send is counted
on the server's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from georouter.config import Cluster, HealthSettings
from georouter.core.health import HealthState, ProbeResult, Status
from georouter.demo.standin import StandIn
from georouter.probes.active import HealthMonitor
from tests.harness import Edge, config_text, pace, until, wait_for

pytestmark = pytest.mark.anyio

TIMEOUT_S = 0.5
FAST = HealthSettings(path="/healthz", interval_s=0.05, timeout_s=TIMEOUT_S, rise=2, fall=3)
# What the probe promises: a verdict within its timeout. The margin is for a loaded
# machine, not a speed claim.
BOUND_S = 3 * TIMEOUT_S + 0.5
FIFTY_MIB = 50 * 1024 * 1024
CHUNK = 64 * 1024

Handler = Callable[["RawEndpoint", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawEndpoint:
    """A raw HTTP/1.1 server on loopback, run by its own event loop in a thread.

    ``handler`` owns each accepted connection. ``sent`` counts the body bytes
    the server's socket took (written and no longer in the transport's buffer).
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sent = 0
        self.requests = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RawEndpoint:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=5)
        return self

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[writer] = task
        try:
            # A client hanging up mid-answer is what several of these tests cause on purpose.
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await self.handler(self, reader, writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        finally:
            del self._connections[writer]

    async def request(self, reader: asyncio.StreamReader) -> None:
        """Read one request head (probes are GETs: no body)."""
        await reader.readuntil(b"\r\n\r\n")
        self.requests += 1

    async def send_body(self, writer: asyncio.StreamWriter, total: int) -> None:
        """Send ``total`` bytes as fast as the peer takes them; count what the socket took."""
        chunk = b"x" * CHUNK
        written = 0
        try:
            while written < total:
                writer.write(chunk)
                written += len(chunk)
                await writer.drain()
                self.sent = written - writer.transport.get_write_buffer_size()
        finally:
            self.sent = written - writer.transport.get_write_buffer_size()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            # Breaking the connections ends every handler at its next read or write
            # (within one trickle step), with no cancelled task left to complain.
            tasks = list(self._connections.values())
            for writer in self._connections:
                writer.transport.abort()
            if tasks:
                await asyncio.wait(tasks, timeout=5)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


@pytest.fixture
def endpoint() -> Iterator[Callable[[Handler], RawEndpoint]]:
    started: list[RawEndpoint] = []

    def make(handler: Handler) -> RawEndpoint:
        ep = RawEndpoint(handler).start()
        started.append(ep)
        return ep

    yield make
    for ep in started:
        ep.stop()


# The endpoints.


def trickle(head: bytes, *, every_s: float = 0.3) -> Handler:
    """Answer ``head`` at once, then one body byte every ``every_s`` (as chunks if chunked)."""
    chunked = b"transfer-encoding: chunked" in head.lower()

    async def handler(ep: RawEndpoint, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await ep.request(r)
        w.write(head)
        while True:
            w.write(b"1\r\nx\r\n" if chunked else b"x")
            await w.drain()
            ep.sent += 1
            await pace(every_s)

    return handler


async def trickled_head(ep: RawEndpoint, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """The status line and headers themselves, one byte every 0.3 s."""
    await ep.request(r)
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
        w.write(bytes([byte]))
        await w.drain()
        await pace(0.3)


def big_body(*, content_length: bool) -> Handler:
    """A 200 with a fast 50 MiB body, declared or delimited by the connection's close."""
    head = b"HTTP/1.1 200 OK\r\n" + (
        b"Content-Length: %d\r\n\r\n" % FIFTY_MIB
        if content_length
        else b"Connection: close\r\n\r\n"
    )

    async def handler(ep: RawEndpoint, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await ep.request(r)
        w.write(head)
        await ep.send_body(w, FIFTY_MIB)

    return handler


def answers(*responses: bytes) -> Handler:
    """Each request on a connection gets the next response, round and round."""
    turn = iter(range(1 << 62))

    async def handler(ep: RawEndpoint, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await ep.request(r)
            w.write(responses[next(turn) % len(responses)])
            await w.drain()

    return handler


def response(status: str, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status.encode(), len(body), body)


GARBAGE = response("200 OK", b"\x00\xff\xfe<html>Bad Gateway</html>\x9c")


async def truncated(ep: RawEndpoint, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await ep.request(r)
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
    await w.drain()  # then the handler returns and the connection closes


async def not_http(ep: RawEndpoint, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await ep.request(r)
    w.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    await w.drain()


# Helpers.


def cluster(name: str, url: str) -> Cluster:
    return Cluster(name, url, 0.0, 0.0)


async def probe_within(
    monitor: HealthMonitor, target: Cluster, bound_s: float = BOUND_S
) -> tuple[ProbeResult, float]:
    """One probe, its verdict and how long it took; fails the test past ``bound_s``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(bound_s):
            result = await monitor.probe(target)
    except TimeoutError:
        raise AssertionError(f"the probe gave no verdict within {bound_s:g}s") from None
    return result, loop.time() - started


async def probe_once(
    settings: HealthSettings, url: str, bound_s: float = BOUND_S
) -> tuple[ProbeResult, float]:
    target = cluster("c", url)
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor((target,), settings, client)
        return await probe_within(monitor, target, bound_s)


# 1. A deadline for the whole exchange, and a bounded body.


@pytest.mark.parametrize(
    ("handler", "settings"),
    [
        pytest.param(
            trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n"),
            # A cap above the declared length: only the deadline can end this probe.
            replace(FAST, max_body_bytes=2_000_000_000),
            id="huge-content-length",
        ),
        pytest.param(
            trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"), FAST, id="within-cap"
        ),
        pytest.param(
            trickle(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), FAST, id="chunked"
        ),
        pytest.param(trickled_head, FAST, id="trickled-headers"),
    ],
)
async def test_a_trickling_answer_is_a_failed_probe_after_the_timeout(
    endpoint: Callable[[Handler], RawEndpoint], handler: Handler, settings: HealthSettings
) -> None:
    ep = endpoint(handler)
    result, elapsed = await probe_once(settings, ep.url)
    print(f"trickle: failed after {elapsed:.3f}s ({ep.sent} bytes trickled): {result.detail}")
    assert not result.ok
    assert result.detail == f"timeout after {TIMEOUT_S:g}s"
    assert elapsed >= TIMEOUT_S * 0.9  # the deadline ended it, nothing sooner


async def test_a_huge_declared_body_fails_at_once_with_the_default_cap(
    endpoint: Callable[[Handler], RawEndpoint],
) -> None:
    ep = endpoint(trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n"))
    result, elapsed = await probe_once(FAST, ep.url)
    print(f"declared 1e9 bytes: failed after {elapsed:.3f}s: {result.detail}")
    assert not result.ok
    assert result.detail == f"HTTP 200, body over {FAST.max_body_bytes} bytes"


async def test_a_monitor_beside_a_trickling_cluster_becomes_ready_in_bounded_time(
    endpoint: Callable[[Handler], RawEndpoint],
    make_standins: Callable[..., dict[str, StandIn]],
) -> None:
    healthy = make_standins("healthy")["healthy"]
    stalling = endpoint(trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"))
    clusters = (cluster("healthy", healthy.url), cluster("stalling", stalling.url))
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor(clusters, FAST, client)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(monitor.run())
            try:
                async with asyncio.timeout(BOUND_S):
                    await monitor.first_round_done.wait()
            except TimeoutError:
                raise AssertionError(f"not ready within {BOUND_S:g}s") from None
            finally:
                task.cancel()
        elapsed = loop.time() - started
    print(f"ready after {elapsed:.3f}s beside a trickling cluster")
    assert monitor.states["healthy"].status is Status.UP
    assert monitor.states["stalling"].status is Status.DOWN
    assert monitor.states["stalling"].last_detail == f"timeout after {TIMEOUT_S:g}s"


@pytest.mark.parametrize(
    "content_length",
    [pytest.param(True, id="content-length"), pytest.param(False, id="until-close")],
)
async def test_a_50_mib_body_fails_the_probe_and_is_not_read(
    endpoint: Callable[[Handler], RawEndpoint], content_length: bool
) -> None:
    ep = endpoint(big_body(content_length=content_length))
    # A generous deadline: on loopback the whole 50 MiB would arrive well within it.
    result, elapsed = await probe_once(replace(FAST, timeout_s=10.0), ep.url, bound_s=20)
    # The client closed the connection; give the server a moment to notice.
    await pace(0.2)
    print(
        f"50 MiB body ({'declared' if content_length else 'until close'}):"
        f" server sent {ep.sent} bytes ({ep.sent / 2**20:.2f} MiB) in {elapsed:.3f}s:"
        f" {result.detail}"
    )
    assert not result.ok
    assert result.detail == f"HTTP 200, body over {FAST.max_body_bytes} bytes"
    # max_body_bytes plus what the kernel's socket buffers hold on both ends.
    assert ep.sent < 8 * 2**20


# 2. What counts as healthy: the status and body the operator asks for.


@pytest.mark.parametrize(
    ("answer", "expect_status", "expect_body", "ok", "detail"),
    [
        pytest.param(response("200 OK", b"ok"), (), "", True, "HTTP 200", id="any-2xx"),
        pytest.param(response("204 No Content", b""), (), "", True, "HTTP 204", id="204"),
        pytest.param(response("301 Moved", b""), (), "", False, "HTTP 301", id="redirect"),
        pytest.param(
            response("204 No Content", b""),
            (200,),
            "",
            False,
            "HTTP 204, expected 200",
            id="status-not-listed",
        ),
        pytest.param(
            response("503 Unavailable", b""),
            (200, 503),
            "",
            True,
            "HTTP 503",
            id="listed-non-2xx",
        ),
        pytest.param(GARBAGE, (), "", True, "HTTP 200", id="garbage-without-expect-body"),
        pytest.param(GARBAGE, (), "ok", False, "HTTP 200, body lacks 'ok'", id="garbage-lacks-ok"),
        pytest.param(
            response("200 OK", b'{"status": "ok"}'),
            (200,),
            '"status": "ok"',
            True,
            "HTTP 200",
            id="body-matches",
        ),
        pytest.param(
            response("200 OK", b"\xff\xfe ok \x80"),
            (),
            "ok",
            True,
            "HTTP 200",
            id="undecodable-bytes-around-a-match",
        ),
        pytest.param(
            response("500 Oops", b"ok"),
            (),
            "ok",
            False,
            "HTTP 500",
            id="status-fails-before-body",
        ),
    ],
)
async def test_the_status_and_body_must_match_what_the_operator_expects(
    endpoint: Callable[[Handler], RawEndpoint],
    answer: bytes,
    expect_status: tuple[int, ...],
    expect_body: str,
    ok: bool,
    detail: str,
) -> None:
    ep = endpoint(answers(answer))
    settings = replace(FAST, expect_status=expect_status, expect_body=expect_body)
    result, _ = await probe_once(settings, ep.url)
    assert (result.ok, result.detail) == (ok, detail)


async def test_a_match_beyond_the_body_cap_does_not_count(
    endpoint: Callable[[Handler], RawEndpoint],
) -> None:
    ep = endpoint(answers(response("200 OK", b" " * 100 + b"ok")))
    settings = replace(FAST, expect_body="ok", max_body_bytes=64)
    result, _ = await probe_once(settings, ep.url)
    assert (result.ok, result.detail) == (False, "HTTP 200, body over 64 bytes")


async def test_a_body_exactly_at_the_cap_is_read_whole(
    endpoint: Callable[[Handler], RawEndpoint],
) -> None:
    ep = endpoint(answers(response("200 OK", b" " * 62 + b"ok")))
    settings = replace(FAST, expect_body="ok", max_body_bytes=64)
    result, _ = await probe_once(settings, ep.url)
    assert (result.ok, result.detail) == (True, "HTTP 200")


@pytest.mark.parametrize(
    ("expect_body", "ok", "detail"),
    [
        pytest.param("", True, "HTTP 200", id="size-only"),
        pytest.param("ok", False, "HTTP 200, body is gzip-encoded", id="cannot-match"),
    ],
)
async def test_probes_ask_for_an_unencoded_body(
    endpoint: Callable[[Handler], RawEndpoint], expect_body: str, ok: bool, detail: str
) -> None:
    import gzip

    heads: list[bytes] = []
    # About 10 KiB on the wire, 10 MiB once inflated: the cap applies to the former.
    bomb = gzip.compress(b"ok" + b"\0" * (10 * 2**20))

    async def gzipping(ep: RawEndpoint, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        heads.append((await r.readuntil(b"\r\n\r\n")).lower())
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(bomb), bomb)
        )
        await w.drain()

    ep = endpoint(gzipping)
    settings = replace(FAST, expect_body=expect_body, max_body_bytes=64 * 1024)
    result, _ = await probe_once(settings, ep.url)
    assert b"accept-encoding: identity\r\n" in heads[0]
    assert (result.ok, result.detail) == (ok, detail)


@pytest.mark.parametrize(
    ("handler", "detail_starts"),
    [
        pytest.param(truncated, "RemoteProtocolError", id="truncated-body"),
        pytest.param(not_http, "RemoteProtocolError", id="not-http"),
    ],
)
async def test_a_broken_answer_is_a_failed_probe(
    endpoint: Callable[[Handler], RawEndpoint], handler: Handler, detail_starts: str
) -> None:
    ep = endpoint(handler)
    result, _ = await probe_once(FAST, ep.url)
    assert not result.ok
    assert result.detail.startswith(detail_starts), result.detail


async def test_healthy_probes_keep_reusing_one_connection(
    endpoint: Callable[[Handler], RawEndpoint],
) -> None:
    connections = 0

    async def counting(ep: RawEndpoint, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await answers(response("200 OK", b"ok"))(ep, r, w)

    ep = endpoint(counting)
    target = cluster("c", ep.url)
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor((target,), replace(FAST, expect_body="ok"), client)
        for _ in range(5):
            result, _ = await probe_within(monitor, target)
            assert result.ok, result.detail
    # The body was read to its end, so the connection went back to the pool.
    assert (ep.requests, connections) == (5, 1)


# 3. Failures over a window as well as in a row.

ALTERNATING = answers(response("200 OK", b"ok"), response("503 Unavailable", b"no"))


async def test_a_cluster_failing_every_other_probe_goes_down_with_the_default_window(
    endpoint: Callable[[Handler], RawEndpoint],
) -> None:
    ep = endpoint(ALTERNATING)
    target = cluster("flaky", ep.url)
    assert (FAST.window, FAST.window_fall) == (10, 5)  # the defaults
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor((target,), FAST, client)
        statuses = []
        for _ in range(12):
            result, _ = await probe_within(monitor, target)
            statuses.append(monitor.record(target, result).status)
    # Up on its first (good) probe; down on its 5th failure among 10 probes, though
    # never more than one failed in a row; and no two good probes in a row since.
    assert statuses == [Status.UP] * 9 + [Status.DOWN] * 3
    assert monitor.states["flaky"].consecutive_failed <= 1
    assert dict(monitor.unroutable()) == {"flaky": "down"}


async def test_a_cluster_failing_every_other_probe_stays_up_without_a_window(
    endpoint: Callable[[Handler], RawEndpoint],
) -> None:
    ep = endpoint(ALTERNATING)
    target = cluster("flaky", ep.url)
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor((target,), replace(FAST, window=0), client)
        statuses = set()
        for _ in range(30):
            result, _ = await probe_within(monitor, target)
            statuses.add(monitor.record(target, result).status)
    assert statuses == {Status.UP}
    assert monitor.states["flaky"].recent_failures == 0  # no window: nothing counted


async def test_the_window_goes_down_under_a_running_monitor_too(
    endpoint: Callable[[Handler], RawEndpoint],
) -> None:
    ep = endpoint(ALTERNATING)
    target = cluster("flaky", ep.url)
    settings = replace(FAST, interval_s=0.01)
    # The state as it was when the cluster went down: polling it from here would
    # see one probe later on a loaded machine, where the monitor runs on meanwhile.
    went_down: list[HealthState] = []

    def changed() -> None:
        now = monitor.states["flaky"]
        if now.status is Status.DOWN and not went_down:
            went_down.append(now)

    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor((target,), settings, client, on_change=changed)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(monitor.run())
            try:
                await until(lambda: went_down, timeout_s=10, what="the flaky cluster down")
            finally:
                task.cancel()
    state = went_down[0]
    assert state.probes == 10
    assert state.as_json()["recent_failures"] == 1  # a fresh window from the change on


# 4. Across processes: an edge beside a 50 MiB health body keeps its memory.


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_an_edge_beside_a_50_mib_health_body_keeps_its_memory(
    endpoint: Callable[[Handler], RawEndpoint],
    make_standins: Callable[..., dict[str, StandIn]],
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    healthy = make_standins("eu-west")["eu-west"]
    hostile = endpoint(big_body(content_length=False))
    text = config_text(
        [
            {"name": "eu-west", "url": healthy.url, "lat": 53.3498, "lon": -6.2603},
            {"name": "us-east", "url": hostile.url, "lat": 38.9445, "lon": -77.4558},
        ],
        router={"fallback": "eu-west"},
        health={"interval_s": 0.2, "timeout_s": 0.2, "rise": 2, "fall": 3},
    )
    edge = make_edge(write_config(text))
    pid = edge.process.pid
    at_ready = _rss_kib(pid)
    peak = at_ready
    started = time.monotonic()

    # Twenty probes of the hostile endpoint; each would be 50 MiB read whole.
    def sampled() -> bool:
        nonlocal peak
        peak = max(peak, _rss_kib(pid))
        return hostile.requests >= 20

    wait_for(sampled, timeout_s=30, what="twenty probes of the hostile endpoint")
    peak = max(peak, _rss_kib(pid))
    clusters = wait_for(
        lambda: edge.get("/v1/clusters").json()["clusters"], timeout_s=5, what="/v1/clusters"
    )
    hostile_health = next(c["health"] for c in clusters if c["name"] == "us-east")
    print(
        f"edge RSS: {at_ready / 1024:.1f} MiB at ready, peak {peak / 1024:.1f} MiB over"
        f" {hostile.requests} probes of a 50 MiB body in {time.monotonic() - started:.1f}s;"
        f" last probe's server sent {hostile.sent / 2**20:.2f} MiB"
    )
    assert peak - at_ready < 32 * 1024
    assert hostile_health["status"] == "down"
    assert "body over" in hostile_health["last_detail"]
