"""Proxy mode streams: bodies of hundreds of MiB pass both ways, byte for byte, while
the edge's memory stays flat (read from /proc, outside the process), under both servers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Edge
from tests.redis_harness import RedisServer
from tests.test_proxy import API, proxy_config
from tests.upstream import Upstream, pattern_bytes, pattern_sha256

MIB = 1 << 20
SIZE = 256 * MIB
# What the issue allows an edge to grow by while streaming: well under one body.
MAX_GROWTH = 64 * MIB
SERVERS = ["hypercorn", "uvicorn"]


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no {field}")


@pytest.mark.parametrize("server", SERVERS)
def test_hundreds_of_mib_stream_both_ways_byte_exact_in_flat_memory(
    server: str,
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    app = upstreams("eu-west")
    edge = make_edge(
        write_config(proxy_config([("eu-west", app)], redis_server)),
        args=("--server", server),
        api_prefix=API,
    )
    pid = edge.process.pid
    with httpx.Client(timeout=120) as client:
        # Warm up (first imports, pools) before the baseline is read.
        assert client.get(f"{edge.url}/bytes/{MIB}").content == b"".join(pattern_bytes(MIB))
        baseline = rss_kib(pid, "VmRSS")

        def upload() -> Iterator[bytes]:
            yield from pattern_bytes(SIZE)

        seen = client.post(f"{edge.url}/upload", content=upload()).json()
        assert seen["body_bytes"] == SIZE
        assert seen["body_sha256"] == pattern_sha256(SIZE)

        for chunked in (False, True):
            digest = hashlib.sha256()
            got = 0
            path = f"/bytes/{SIZE}" + ("?chunked=1" if chunked else "")
            with client.stream("GET", f"{edge.url}{path}") as response:
                assert response.status_code == 200
                if not chunked:
                    assert response.headers["content-length"] == str(SIZE)
                for piece in response.iter_raw():
                    digest.update(piece)
                    got += len(piece)
            assert got == SIZE
            assert digest.hexdigest() == pattern_sha256(SIZE)
    growth = (rss_kib(pid, "VmHWM") - baseline) * 1024
    assert growth < MAX_GROWTH, f"peak RSS grew by {growth / MIB:.1f} MiB while streaming"


@pytest.mark.parametrize("server", SERVERS)
def test_a_client_leaving_mid_response_closes_the_upstream_under_either_server(
    server: str,
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    app = upstreams("eu-west")
    edge = make_edge(
        write_config(proxy_config([("eu-west", app)], redis_server)),
        args=("--server", server),
        api_prefix=API,
    )
    with httpx.Client(timeout=5) as client, client.stream("GET", f"{edge.url}/slow") as response:
        assert response.status_code == 200
        next(response.iter_raw())
    assert app.abort_seen.wait(10), "the cluster kept streaming to an edge whose client left"
    # The edge goes on serving.
    assert httpx.get(f"{edge.url}/ok", timeout=5).json()["cluster"] == "eu-west"
