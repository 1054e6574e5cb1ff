"""Route building blocks that keep Starlette's routing answers JSON and truthful.

* ``one_route``: one ``Route`` per path, dispatching by method, so a 405's
  ``Allow`` lists every method of the path (with two routes on one path,
  Starlette answers with the first one's methods only).
* ``any_tail``: a path parameter that takes any characters, newlines included
  (Starlette's converters stop at one), so the handler answers a malformed
  value itself with its 400 instead of a generic 404.
"""

from __future__ import annotations

import re

from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class ByMethod:
    """An ASGI app that hands each method to its own app (HEAD to GET's unless given)."""

    def __init__(self, apps: dict[str, ASGIApp]) -> None:
        self.apps = {method.upper(): app for method, app in apps.items()}
        if "GET" in self.apps:
            self.apps.setdefault("HEAD", self.apps["GET"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Route.handle answers a method missing here with 405 before this is called.
        await self.apps[scope["method"]](scope, receive, send)


def one_route(path: str, **apps: ASGIApp) -> Route:
    """The route of ``path`` for every method in ``apps`` (``get=``, ``post=`` ...)."""
    dispatch = ByMethod(apps)
    return Route(path, dispatch, methods=sorted(dispatch.apps))


def any_tail(route: Route) -> Route:
    """``route`` with its path parameters matching newlines too."""
    route.path_regex = re.compile(route.path_regex.pattern, re.DOTALL)
    return route
