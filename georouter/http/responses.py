"""Every HTTP response the edge answers, counted by status (``georouter_http_responses_total``)."""

from __future__ import annotations

from collections import Counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from georouter.metrics import Family, Metrics


def http_responses(metrics: Metrics) -> Family:
    """The responses counter (created on first use)."""
    return metrics.family(
        "georouter_http_responses_total",
        "HTTP responses this edge sent, by status (refusals and the data path included).",
        ("status",),
    )


class CountResponses:
    """ASGI middleware, outermost but for the access log: so the limits' refusals
    count too. A request whose client left before any answer is not counted."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self._counts: Counter[tuple[str, ...]] = http_responses(metrics).values
        # One label tuple per status, made once: no string is built per response.
        self._labels: dict[int, tuple[str, ...]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counts, labels = self._counts, self._labels

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status: int = message["status"]
                label = labels.get(status)
                if label is None:
                    label = labels[status] = (str(status),)
                counts[label] += 1
            await send(message)

        await self.app(scope, receive, counted)
