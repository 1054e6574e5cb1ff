"""A demo cluster: a small application that says which cluster answered, over HTTP
and over a WebSocket, served in the demo's own event loop until it is stopped.

Unlike ``demo.standin`` (a thread that answers health probes, for the routing
API), this one is an application the edge can proxy to: any path answers with
the cluster's name, ``/healthz`` answers probes, and ``/ws`` echoes messages
prefixed with the cluster's name, so a client sees where each one went.
"""

from __future__ import annotations

import asyncio
import socket

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from georouter.serve.server import ListenAddress, serve, url_of


def cluster_app(name: str, health_path: str) -> Starlette:
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "cluster": name})

    async def page(request: Request) -> Response:
        return JSONResponse({"cluster": name, "path": request.url.path})

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(f"{name}: {await websocket.receive_text()}")
        except WebSocketDisconnect:
            return

    return Starlette(
        routes=[
            Route(health_path, health),
            WebSocketRoute("/ws", echo),
            Route("/{path:path}", page, methods=["GET", "HEAD", "POST", "PUT", "DELETE"]),
        ]
    )


class DemoCluster:
    """One demo cluster on a free loopback port; ``stop()`` takes it off the network."""

    def __init__(self, name: str, *, health_path: str = "/healthz") -> None:
        self.name = name
        self._sock = ListenAddress.parse("127.0.0.1:0").bind()
        self.url = url_of(self._sock)
        self._app = cluster_app(name, health_path)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, tg: asyncio.TaskGroup) -> DemoCluster:
        sock: socket.socket = self._sock
        self._task = tg.create_task(serve(self._app, sock, self._stop), name=f"cluster-{self.name}")
        return self

    async def stop(self) -> None:
        """Stop serving and close the listening socket: new connections are refused."""
        self._stop.set()
        if self._task is not None:
            await self._task
