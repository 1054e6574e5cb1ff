"""Bad clients against real `georouter serve` processes, under both servers.

Every attack is bounded in count and time and goes to loopback only. Each
test prints what it measured (``pytest -s`` shows it): the README's
reliability section quotes these figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from georouter.demo.standin import StandIn
from georouter.sessions.ids import CookieSigner
from tests.harness import (
    FAST_HEALTH,
    Edge,
    cluster_entries,
    config_text,
    pace,
    wait_for,
)
from tests.redis_harness import RedisServer

SERVERS = ["hypercorn", "uvicorn"]
HEADER_TIMEOUT_S = 1.0
REQUEST_DEADLINE_S = 2.0
KEYS = "k" * 32


def _config(standins: dict[str, StandIn], redis: RedisServer, **limits: object) -> str:
    return config_text(
        cluster_entries(standins),
        router={"fallback": "us-east"},
        health=FAST_HEALTH,
        sessions={"redis_url": redis.url},
        limits={
            "header_timeout_s": HEADER_TIMEOUT_S,
            "request_deadline_s": REQUEST_DEADLINE_S,
            **limits,
        },
    )


@pytest.fixture
def standins(make_standins: Callable[..., dict[str, StandIn]]) -> dict[str, StandIn]:
    return make_standins("us-east", "eu-west")


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def edge(
    server: str,
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> Edge:
    return make_edge(write_config(_config(standins, redis_server)), args=("--server", server))


def _address(edge: Edge) -> tuple[str, int]:
    host, port = edge.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _metric(edge: Edge, name: str, labels: str = "") -> float:
    text = edge.get("/metrics").text
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _raw_status(edge: Edge, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` on a new connection; the status and body of the answer."""
    with socket.create_connection(_address(edge), timeout=10) as sock:
        # The edge may refuse and hang up before it has read all of the request.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        answer = b""
        while True:
            head, sep, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body


# -- clients that leave -------------------------------------------------------------


def test_a_client_that_abandons_its_body_is_counted_not_logged_as_an_error(edge: Edge) -> None:
    abandoned = 200
    request = (
        b"POST /v1/route HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"requests": ['
    )
    for _ in range(abandoned):
        with socket.create_connection(_address(edge), timeout=5) as sock:
            sock.sendall(request)
    name = "georouter_client_disconnects_total"
    wait_for(
        lambda: _metric(edge, name) >= abandoned,
        timeout_s=20,
        what=f"{abandoned} disconnects counted",
    )
    log = edge.log()
    print(f"\nabandoned bodies: {abandoned}, counted {_metric(edge, name):g}")
    assert _metric(edge, name) == abandoned
    assert "Traceback" not in log, log[-3000:]
    assert "unhandled error" not in log


# -- oversized requests -------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "headers"),
    [
        pytest.param("a 1 MiB header", {"x-big": "a" * (1 << 20)}, id="1MiB-header"),
        pytest.param("10,000 headers", {f"x-h{i}": "1" for i in range(10_000)}, id="10k-headers"),
        pytest.param("a 1 MiB cookie", {"cookie": "c=" + "a" * (1 << 20)}, id="1MiB-cookie"),
        pytest.param(
            "a 100,000-entry X-Forwarded-For",
            {"x-forwarded-for": ", ".join(["10.0.0.1"] * 100_000)},
            id="100k-xff",
        ),
    ],
)
def test_oversized_headers_are_refused_with_431(
    edge: Edge, what: str, headers: dict[str, str]
) -> None:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET /v1/route?ip=81.2.69.142 HTTP/1.1\r\nHost: edge\r\n{lines}\r\n".encode()
    status, body = _raw_status(edge, request)
    print(f"\n{what}: {status} {body[:60]!r}")
    assert status == 431
    assert edge.get("/v1/route", params={"ip": "81.2.69.142"}).status_code == 200


def test_a_declared_oversized_body_is_refused_before_it_is_sent(edge: Edge) -> None:
    request = (
        b"POST /v1/route HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        b"Content-Length: 104857600\r\n\r\n"
    )
    started = time.monotonic()
    status, body = _raw_status(edge, request)
    print(f"\n100 MiB declared: {status} after {time.monotonic() - started:.3f}s, 0 bytes sent")
    assert status == 413
    assert b"body_too_large" in body


def test_a_chunked_oversized_body_is_refused_after_the_limit_not_at_its_end(edge: Edge) -> None:
    chunk = b"a" * 65536
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0
    with socket.create_connection(_address(edge), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/route HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sock.settimeout(0.0)
        answer = b""
        # Up to 100 MiB, stopping as soon as the edge answers.
        while sent < 100 << 20 and b"\r\n\r\n" not in answer:
            try:
                sock.setblocking(True)
                sock.sendall(frame)
                sent += len(chunk)
                sock.setblocking(False)
                answer += sock.recv(65536)
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(5)
        while b"\r\n\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    print(f"\nchunked 100 MiB: {answer[:12]!r} after {sent / 2**20:.1f} MiB sent")
    assert answer.startswith(b"HTTP/1.1 413")
    assert sent < 16 << 20


# -- slow clients -------------------------------------------------------------------


async def _good_client(edge: Edge, stop: asyncio.Event) -> tuple[int, int, list[float]]:
    ok = failed = 0
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=edge.url, timeout=5) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                response = await client.get("/v1/route", params={"ip": "81.2.69.142"})
            except httpx.HTTPError:
                failed += 1
                continue
            latencies.append(time.perf_counter() - started)
            if response.status_code == 200:
                ok += 1
            else:
                failed += 1
    return ok, failed, latencies


async def _slow_connection(edge: Edge, first: bytes, drip: bytes, every_s: float) -> float:
    """Send ``first``, then ``drip`` every ``every_s``; seconds until the edge hangs up."""
    host, port = _address(edge)
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    try:
        writer.write(first)
        await writer.drain()
        while time.monotonic() - started < 30:
            try:
                data = await asyncio.wait_for(reader.read(65536), every_s)
            except TimeoutError:
                writer.write(drip)
                try:
                    await writer.drain()
                except ConnectionError:
                    break
                continue
            if not data:
                break
            # An answer (the 408): the edge hangs up after it.
            if b"HTTP/1.1 " in data:
                await reader.read()
                break
        return time.monotonic() - started
    except ConnectionError:
        return time.monotonic() - started
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("kind", "first", "drip", "bound_s"),
    [
        pytest.param(
            "slowloris",
            b"GET /v1/route HTTP/1.1\r\nHost: edge\r\n",
            b"x-a: b\r\n",
            HEADER_TIMEOUT_S,
            id="slow-headers",
        ),
        pytest.param(
            "slow body",
            b"POST /v1/route HTTP/1.1\r\nHost: edge\r\nContent-Length: 100000\r\n\r\n",
            b"a",
            REQUEST_DEADLINE_S,
            id="slow-body",
        ),
    ],
)
def test_slow_clients_are_cut_off_and_a_good_client_keeps_being_served(
    edge: Edge, server: str, kind: str, first: bytes, drip: bytes, bound_s: float
) -> None:
    connections = 200

    async def attack() -> tuple[list[float], tuple[int, int, list[float]]]:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            good = tg.create_task(_good_client(edge, stop))
            held = await asyncio.gather(
                *(_slow_connection(edge, first, drip, 0.3) for _ in range(connections))
            )
            stop.set()
        return held, good.result()

    held, (ok, failed, latencies) = asyncio.run(attack())
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"\n{server} {kind}: {connections} connections held {min(held):.2f}-{max(held):.2f}s"
        f" (limit {bound_s:g}s); good client {ok} ok, {failed} failed,"
        f" p50 {quantiles[49] * 1000:.1f} ms, p99 {quantiles[98] * 1000:.1f} ms"
    )
    # The bound the edge promises, with a wide margin for a busy machine.
    assert max(held) < bound_s + 5
    assert failed == 0
    assert ok > 0


def test_requests_beyond_the_in_flight_cap_get_a_json_503(
    server: str,
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    cap = 20
    edge = make_edge(
        write_config(_config(standins, redis_server, max_in_flight=cap)),
        args=("--server", server),
    )
    host, port = _address(edge)
    # Requests whose bodies have not arrived hold their place in flight.
    holders = [socket.create_connection((host, port), timeout=10) for _ in range(cap)]
    try:
        for sock in holders:
            sock.sendall(b"POST /v1/route HTTP/1.1\r\nHost: edge\r\nContent-Length: 100\r\n\r\n")
        response = wait_for(
            lambda: (r := edge.get("/v1/clusters")).status_code == 503 and r,
            timeout_s=10,
            what="the edge to be at its cap",
        )
        assert response.json()["error"] == "overloaded"
        assert response.headers["retry-after"] == "1"
    finally:
        for sock in holders:
            sock.close()
    wait_for(lambda: edge.get("/v1/clusters").status_code == 200, timeout_s=10, what="room again")


# -- session-key growth -------------------------------------------------------------


def _session_keys(redis: RedisServer) -> int:
    return sum(1 for _ in redis.client().scan_iter(match="georouter:s:*", count=1000))


def test_one_address_cannot_fill_redis_with_new_sessions(
    server: str,
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    rate, burst, attempts = 5.0, 50, 2000
    edge = make_edge(
        write_config(
            _config(standins, redis_server, new_sessions_per_s=rate, new_sessions_burst=burst)
        ),
        args=("--server", server),
    )
    returning = [f"returning-{i}" for i in range(10)]
    for sid in returning:
        assert edge.get("/v1/route", params={"session": sid}).status_code == 200

    async def flood() -> tuple[dict[int, int], float]:
        codes: dict[int, int] = {}
        started = time.monotonic()
        # The edge closes a connection idle for header_timeout_s; a client that kept
        # it longer (a stalled loop on a loaded machine) would send into the close.
        limits = httpx.Limits(max_connections=32, keepalive_expiry=HEADER_TIMEOUT_S / 2)
        async with httpx.AsyncClient(base_url=edge.url, timeout=10, limits=limits) as client:
            gate = asyncio.Semaphore(32)

            async def one(i: int) -> None:
                async with gate:
                    r = await client.get("/v1/route", params={"session": f"flood-{i}"})
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code == 429:
                    assert r.json()["error"] == "too_many_new_sessions"
                    assert int(r.headers["retry-after"]) >= 1

            await asyncio.gather(*(one(i) for i in range(attempts)))
        return codes, time.monotonic() - started

    codes, elapsed = asyncio.run(flood())
    keys = _session_keys(redis_server)
    # The sessions it already had are still served while it is over its budget.
    for sid in returning:
        assert edge.get("/v1/route", params={"session": sid}).status_code == 200
    allowed = burst + rate * (elapsed + 1)
    print(
        f"\n{server}: {attempts} new sessions from one address in {elapsed:.1f}s:"
        f" {codes}; {keys} session keys in Redis (budget {allowed:.0f} + 10 returning)"
    )
    assert set(codes) == {200, 429}
    # Tokens are taken before a session is pinned: concurrency cannot overdraw them.
    assert keys <= allowed + len(returning)


def test_with_signing_keys_unsigned_ids_from_any_source_create_no_keys(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    config = write_config(_config(standins, redis_server))
    edge = make_edge(config, env={"GEOROUTER_SESSION_KEYS": KEYS})
    query = edge.get("/v1/route", params={"session": "unsigned-1"})
    header = edge.get("/v1/route", headers={"x-session-id": "unsigned-2"})
    cookie = edge.get("/v1/route", headers={"cookie": "georouter_session=unsigned-3"})
    signed = CookieSigner((KEYS.encode(),)).sign("signed-1")
    good = edge.get("/v1/route", params={"session": signed})
    print(
        f"\nunsigned: query {query.status_code}, header {header.status_code},"
        f" cookie {cookie.status_code} (no session); signed: {good.status_code}"
    )
    assert query.status_code == 400
    assert query.json()["parameter"] == "session"
    assert header.status_code == 400
    assert cookie.status_code == 200
    assert "session" not in cookie.json()
    assert good.status_code == 200
    assert good.json()["session"]["id"] == "signed-1"
    assert _session_keys(redis_server) == 1


def test_an_operator_may_accept_unsigned_ids_from_chosen_sources(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    text = _config(standins, redis_server).replace(
        "[sessions]\n", '[sessions]\nunsigned_sources = ["header"]\n'
    )
    edge = make_edge(write_config(text), env={"GEOROUTER_SESSION_KEYS": KEYS})
    assert edge.get("/v1/route", headers={"x-session-id": "plain"}).status_code == 200
    assert edge.get("/v1/route", params={"session": "plain"}).status_code == 400


# -- graceful shutdown --------------------------------------------------------------


def test_sigterm_drains_readiness_first_then_stops(
    server: str,
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    drain_s = 2.0
    edge = make_edge(
        write_config(_config(standins, redis_server)),
        args=("--server", server, "--drain-s", str(drain_s)),
    )
    signalled = time.monotonic()
    edge.process.send_signal(signal.SIGTERM)
    ready = wait_for(
        lambda: (r := httpx.get(edge.url + "/readyz", timeout=2)).status_code == 503 and r,
        timeout_s=drain_s,
        what="/readyz to turn 503",
    )
    assert ready.json() == {"ready": False, "draining": True}
    # Still serving while the balancer in front takes it out of rotation.
    during = httpx.get(edge.url + "/v1/route", params={"ip": "81.2.69.142"}, timeout=2)
    assert during.status_code == 200
    assert during.headers["connection"] == "close"
    assert edge.process.poll() is None
    code = edge.process.wait(timeout=drain_s + 15)
    took = time.monotonic() - signalled
    print(f"\n{server}: drained and stopped {took:.2f}s after SIGTERM (drain {drain_s:g}s)")
    assert code == 0
    assert took >= drain_s


def test_with_workers_every_worker_drains_before_the_edge_stops(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    # Long enough that the 20 probes of /readyz and the request after them all land
    # inside the window on a loaded machine: once it ends, the workers close.
    drain_s = 5.0
    edge = make_edge(
        write_config(_config(standins, redis_server)),
        args=("--workers", "2", "--drain-s", str(drain_s)),
    )
    signalled = time.monotonic()
    edge.process.send_signal(signal.SIGTERM)
    # New connections land on either worker (SO_REUSEPORT): each must say it drains.
    answers = wait_for(
        lambda: (
            (rs := [httpx.get(edge.url + "/readyz", timeout=2).status_code for _ in range(20)])
            and set(rs) == {503}
            and rs
        ),
        timeout_s=drain_s,
        what="/readyz to turn 503 on every worker",
    )
    served = httpx.get(edge.url + "/v1/route", params={"ip": "81.2.69.142"}, timeout=2)
    code = edge.process.wait(timeout=drain_s + 20)
    took = time.monotonic() - signalled
    print(f"\n2 workers: {len(answers)} x 503 while draining; stopped after {took:.2f}s")
    assert served.status_code == 200
    assert code == 0
    assert took >= drain_s


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))  # type: ignore[union-attr]


def test_headers_that_never_end_are_cut_off_before_they_are_buffered(edge: Edge) -> None:
    sent = 0
    chunk = b"x-big-" + b"a" * 65530
    before = _rss_kib(edge.process.pid)
    with socket.create_connection(_address(edge), timeout=10) as sock:
        sock.sendall(b"GET /v1/route HTTP/1.1\r\nHost: edge\r\nX-Big: ")
        cut_off = False
        try:
            # Up to 8 MiB of one header, stopping as soon as the edge answers or hangs up.
            while sent < 8 << 20:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            cut_off = True
        sock.settimeout(5)
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            answer = b""
    grown = _rss_kib(edge.process.pid) - before
    print(
        f"\nan endless header: {sent / 2**20:.2f} MiB sent before the edge hung up"
        f" ({answer[:12]!r}); edge RSS grew {grown} KiB"
    )
    # What was sent sits in socket buffers; the edge keeps at most header_bytes + 8 KiB.
    assert cut_off or answer.startswith(b"HTTP/1.1 431") or answer == b""
    assert grown < 4096
    assert edge.get("/v1/route", params={"ip": "81.2.69.142"}).status_code == 200


def test_an_http2_body_without_a_length_is_bounded_too(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    # Hypercorn accepts HTTP/2 without TLS (prior knowledge), where a body needs
    # neither Content-Length nor chunked encoding.
    edge = make_edge(write_config(_config(standins, redis_server)))

    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(100):  # 20 s of body, unless the edge cuts it off
            yield b" "
            await pace(0.2)

    async def slow_post() -> tuple[str, float]:
        started = time.monotonic()
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
            try:
                r = await client.post(edge.url + "/v1/route", content=trickle())
                outcome = f"{r.status_code} {r.json()['error']}"
            except httpx.WriteError:
                # The edge answered 408 and reset the stream while the body was still going.
                outcome = "stream reset"
            return outcome, time.monotonic() - started

    outcome, took = asyncio.run(slow_post())
    print(f"\nHTTP/2 slow body: {outcome} after {took:.2f}s (deadline {REQUEST_DEADLINE_S:g}s)")
    assert outcome in ("408 request_timeout", "stream reset")
    assert took < REQUEST_DEADLINE_S + 5
