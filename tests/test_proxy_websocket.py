"""WebSockets in proxy mode: real WebSocket servers as clusters, a real edge, a real client.

Messages go both ways unchanged, close codes pass through in both directions,
the subprotocol the cluster picks is the client's, and a WebSocket is sticky
by session like any request.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.harness import Edge
from tests.redis_harness import RedisServer
from tests.test_proxy import API, proxy_config
from tests.upstream import Upstream

SERVERS = ["hypercorn", "uvicorn"]


class WebSocketCluster:
    """A WebSocket server on loopback in its own thread: it greets each connection
    with what its handshake carried, echoes, closes on request, records close codes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.client_close_codes: list[int | None] = []
        self.refuse = False
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WebSocketCluster:
        self._thread.start()
        assert self._started.wait(10), "the WebSocket cluster did not start"
        return self

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set_result, None)
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _handler(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        await ws.send(
            json.dumps(
                {
                    "cluster": self.name,
                    "path": request.path,
                    "headers": [[k.lower(), v] for k, v in request.headers.raw_items()],
                }
            )
        )
        try:
            async for message in ws:
                if message == "close-4001":
                    await ws.close(4001, "asked to")
                    return
                await ws.send(message)
        except ConnectionClosed:
            pass
        rcvd = ws.close_code
        self.client_close_codes.append(rcvd)

    def _process_request(self, ws: ServerConnection, request: object) -> object:
        if self.refuse:
            return ws.respond(403, "no\n")
        return None

    async def _serve(self) -> None:
        self._stop = self._loop.create_future()
        async with serve(
            self._handler,
            "127.0.0.1",
            0,
            select_subprotocol=lambda ws, offered: "chat.v2" if "chat.v2" in offered else None,
            process_request=self._process_request,
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._started.set()
            await self._stop


@pytest.fixture
def ws_clusters() -> Iterator[Callable[[str], WebSocketCluster]]:
    started: list[WebSocketCluster] = []

    def make(name: str) -> WebSocketCluster:
        cluster = WebSocketCluster(name).start()
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.stop()


def ws_config(
    clusters: list[tuple[str, WebSocketCluster]], health: Upstream, redis: RedisServer
) -> str:
    # The WebSocket servers answer no plain HTTP: one upstream answers their probes.
    return proxy_config([(name, c, health) for name, c in clusters], redis)  # type: ignore[misc]


@pytest.mark.parametrize("server", SERVERS)
def test_messages_and_close_codes_pass_both_ways_and_the_subprotocol_is_kept(
    server: str,
    ws_clusters: Callable[[str], WebSocketCluster],
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    cluster = ws_clusters("eu-west")
    edge = make_edge(
        write_config(ws_config([("eu-west", cluster)], upstreams("health"), redis_server)),
        args=("--server", server),
        api_prefix=API,
    )
    ws_url = edge.url.replace("http://", "ws://")

    async def talk() -> None:
        async with connect(
            f"{ws_url}/live/feed?x=1",
            subprotocols=["chat.v1", "chat.v2"],  # type: ignore[list-item]
            additional_headers={"x-forwarded-for": "6.6.6.6"},
        ) as ws:
            assert ws.subprotocol == "chat.v2"
            greeting = json.loads(await ws.recv())
            assert greeting["cluster"] == "eu-west"
            assert greeting["path"] == "/live/feed?x=1"
            seen = dict(greeting["headers"])
            assert seen["x-forwarded-for"] == "127.0.0.1"  # the untrusted claim is gone
            assert seen["via"] == "1.1 georouter"
            assert ws.response is not None
            assert ws.response.headers["x-georouter-cluster"] == "eu-west"
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01binary\xff")
            assert await ws.recv() == b"\x00\x01binary\xff"
            big = "x" * (1 << 20)
            await ws.send(big)
            assert await ws.recv() == big
            await ws.close(4000, "done here")

        async with connect(f"{ws_url}/live") as ws:
            await ws.recv()
            await ws.send("close-4001")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4001
            assert closed.value.rcvd.reason == "asked to"

    asyncio.run(talk())
    # Hypercorn hands an app only 1000 or 1006 for the client's close, whatever its code
    # (pgjones/hypercorn#127, open); Uvicorn hands over the code the client sent.
    assert cluster.client_close_codes[0] == (4000 if server == "uvicorn" else 1000)


def test_a_websocket_is_sticky_by_session_and_a_dead_cluster_is_passed_over(
    ws_clusters: Callable[[str], WebSocketCluster],
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    west, central = ws_clusters("eu-west"), ws_clusters("eu-central")
    health = upstreams("health")
    edge = make_edge(
        write_config(ws_config([("eu-west", west), ("eu-central", central)], health, redis_server)),
        api_prefix=API,
    )
    ws_url = edge.url.replace("http://", "ws://")

    async def cluster_of(headers: dict[str, str]) -> tuple[str, str | None]:
        async with connect(f"{ws_url}/live", additional_headers=headers) as ws:
            greeting = json.loads(await ws.recv())
            assert ws.response is not None
            return greeting["cluster"], ws.response.headers.get("set-cookie")

    async def scenario() -> None:
        first, cookie = await cluster_of({})
        assert first == "eu-west"
        assert cookie is not None
        assert cookie.startswith("georouter_session=")
        session = cookie.split(";")[0]
        # Its cluster goes away (probes still pass): the next handshake moves on, and so
        # does the session, which then stays where it moved.
        west.stop()
        moved, again = await cluster_of({"cookie": session})
        assert moved == "eu-central"
        assert again is None
        assert (await cluster_of({"cookie": session}))[0] == "eu-central"

    asyncio.run(scenario())


def test_a_cluster_refusing_the_handshake_is_a_refusal_the_client_sees(
    ws_clusters: Callable[[str], WebSocketCluster],
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    cluster = ws_clusters("eu-west")
    cluster.refuse = True
    edge = make_edge(
        write_config(ws_config([("eu-west", cluster)], upstreams("health"), redis_server)),
        api_prefix=API,
    )

    async def attempt() -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(edge.url.replace("http://", "ws://") + "/live"):
                pass
        return refused.value.response.status_code

    assert asyncio.run(attempt()) == 403
