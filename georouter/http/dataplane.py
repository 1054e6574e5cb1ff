"""The data path in proxy and redirect modes: every application request, to its cluster.

Each request is routed as the routing API routes it (client address through
trusted proxies, session from the configured cookie, header or query
parameter, the new-session budget), then either carried to the cluster and
its answer streamed back (``proxy``) or answered ``307`` to the cluster's URL
(``redirect``). A request without a session is given the router's own
cookie, an id of 128 random bits signed with the edge's key, so its next
requests stay on the cluster that served the first. A cluster that cannot be
reached is avoided for the rest of the request: the next routable one is
tried (``[proxy] retries``) when nothing was sent yet or the request may be
repeated, and the session moves there.
"""

from __future__ import annotations

import logging
import secrets
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from georouter.config import LearnedSource, ProxySettings, RouterMode, SessionSource
from georouter.core.clientip import IPAddress
from georouter.core.decision import Decision
from georouter.errors import ApiError
from georouter.http.accesslog import note_decision
from georouter.http.common import Services, client_ip, query_of, send_json
from georouter.http.routing import accepted_id, client_disconnects, route_with_budget, tenant_of
from georouter.metrics import Family, Metrics
from georouter.proxy import headers as hop
from georouter.proxy.forward import (
    IDEMPOTENT,
    ClientGone,
    Failure,
    RequestBody,
    Target,
    UpstreamFailed,
    first_message,
    open_exchange,
    relay,
    timeouts,
    unless_client_leaves,
)
from georouter.runtime import Runtime
from georouter.sessions.ids import learned_id, new_id, set_cookie_header

log = logging.getLogger(__name__)

_STATUS = {Failure.TIMEOUT: 504, Failure.POOL: 503}
_ERROR = {
    Failure.CONNECT: "upstream_unreachable",
    Failure.PROTOCOL: "upstream_failed",
    Failure.TIMEOUT: "upstream_timeout",
    Failure.POOL: "upstream_busy",
}


def _session(request: HTTPConnection, svc: Services, rt: Runtime) -> tuple[str | None, bool]:
    """The request's session id, and whether the router should set its own cookie.

    On the data path an id that fails its check is not the client's error to
    be told about (it may be an old cookie, or a forged one): it is ignored,
    so it creates no Redis key, and the client is given a new cookie.
    """
    settings = rt.config.sessions
    if settings.query is not None:
        raw = query_of(request).get(settings.query)
        if raw is not None and (found := accepted_id(raw, SessionSource.QUERY, svc, rt)):
            return found, False
    raw = request.headers.get(settings.header)
    if raw is not None and (found := accepted_id(raw, SessionSource.HEADER, svc, rt)):
        return found, False
    raw = request.cookies.get(settings.cookie)
    if raw is not None and (found := accepted_id(raw, SessionSource.COOKIE, svc, rt)):
        return found, False
    for learned in settings.learn:
        if learned.source is SessionSource.COOKIE:
            raw = request.cookies.get(learned.name)
        else:
            raw = request.headers.get(learned.name)
        if raw:
            return learned_id(learned.source, learned.name, raw), False
    # An application that issues its own ids needs no cookie of the router's.
    return None, not settings.learn


def _issued(headers: httpx.Headers, learn: tuple[LearnedSource, ...]) -> list[str]:
    """The session ids of application-issued ids a response carries."""
    if not learn:
        return []
    found = []
    cookies: dict[str, str] = {}
    for line in headers.get_list("set-cookie"):
        name, _, rest = line.partition("=")
        cookies[name.strip()] = rest.split(";", 1)[0].strip()
    for source in learn:
        if source.source is SessionSource.COOKIE:
            value = cookies.get(source.name)
        else:
            value = headers.get(source.name)
        if value:
            found.append(learned_id(source.source, source.name, value))
    return found


def _cookie(svc: Services, rt: Runtime, session_id: str) -> tuple[bytes, bytes]:
    value = svc.signer.sign(session_id) if svc.signer is not None else session_id
    settings = rt.config.sessions
    header = set_cookie_header(
        settings.cookie, value, max_age_s=None, secure=settings.cookie_secure
    )
    return b"set-cookie", header.encode("latin-1")


def decision_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    assert decision.cluster is not None
    return [
        (b"x-georouter-cluster", decision.cluster.name.encode("latin-1")),
        (b"x-georouter-reason", str(decision.reason).encode("latin-1")),
    ]


def target_url(cluster_url: str, scope: Scope) -> str:
    # The raw path as the client sent it: decoding and re-encoding could change
    # what the cluster's router sees.
    raw_path: bytes | None = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope["path"]
    query: bytes = scope.get("query_string", b"")
    url = cluster_url.rstrip("/") + path
    return url + "?" + query.decode("latin-1") if query else url


class Routed(NamedTuple):
    """An application request routed: the decision, and what every cluster tried for
    it is routed by again (a retry moves the session)."""

    decision: Decision
    client: IPAddress | None
    session_id: str | None
    # The router's Set-Cookie, for a request that came without a session.
    cookies: list[tuple[bytes, bytes]]
    # The tenant the request names ([tenants] header or cookie).
    tenant: str | None = None


async def route(conn: HTTPConnection, svc: Services, rt: Runtime) -> Routed:
    """Where an application request (HTTP or WebSocket) goes; ``ApiError`` if nowhere yet."""
    if not svc.health.ready:
        raise ApiError(
            503, "not_ready", "the first round of health checks has not finished; retry shortly"
        )
    client = client_ip(conn, rt.trust)
    tenant = tenant_of(conn, rt)
    session_id, fresh = _session(conn, svc, rt)
    cookies = []
    if svc.sessions is not None and fresh:
        session_id = new_id(secrets.token_bytes(16))
        cookies.append(_cookie(svc, rt, session_id))
    decision = await route_with_budget(
        svc, rt, conn, client, session_id, client_is_peer=True, tenant=tenant
    )
    return Routed(decision, client, session_id, cookies, tenant)


async def reroute(svc: Services, rt: Runtime, routed: Routed, avoid: dict[str, str]) -> Routed:
    """The same request, away from clusters that failed it (its session moves)."""
    decision = await svc.router.route(
        routed.client, routed.session_id, rt, avoid=avoid, tenant=routed.tenant
    )
    return routed._replace(decision=decision)


async def data_path(scope: Scope, receive: Receive, send: Send) -> None:
    """An application request in proxy or redirect mode (``ApiError``s answered by the caller)."""
    svc: Services = scope["state"]["services"]
    rt = svc.runtime
    routed = await route(HTTPConnection(scope), svc, rt)
    decision = routed.decision
    if decision.cluster is None:
        note_decision(scope, decision.reason, None, decision.session)
        await send_json(send, 503, decision.as_json())
        return
    if rt.config.router.mode is RouterMode.REDIRECT:
        note_decision(scope, decision.reason, decision.cluster.name, decision.session)
        location = target_url(decision.cluster.url, scope)
        await send_json(
            send,
            307,
            {"cluster": decision.cluster.name, "location": location},
            {"location": location, "cache-control": "no-store"},
            raw_headers=decision_headers(decision) + routed.cookies,
        )
        return
    await _proxy(scope, receive, send, svc=svc, rt=rt, routed=routed)


def forwarded_headers(scope: Scope, rt: Runtime, cluster_url: str) -> list[tuple[bytes, bytes]]:
    """What the cluster is sent of the client's headers, with the edge's forwarding ones."""
    peer = scope.get("client")
    name = rt.trust.header.value.encode("latin-1")
    values = [v.decode("latin-1") for n, v in scope["headers"] if n == name]
    chain = rt.trust.chain(peer[0] if peer else None, values)
    return hop.upstream_request_headers(
        scope["headers"],
        chain=chain,
        scheme=scope.get("scheme", "http"),
        trusted_peer=len(chain) > 1,
        cluster_host=None if rt.config.proxy.preserve_host else urlsplit(cluster_url).netloc,
        http_version=scope.get("http_version", "1.1"),
    )


async def _proxy(
    scope: Scope, receive: Receive, send: Send, *, svc: Services, rt: Runtime, routed: Routed
) -> None:
    settings: ProxySettings = rt.config.proxy
    upstream = svc.upstream
    assert upstream is not None, "proxy mode without its client"
    try:
        body = RequestBody(receive, await first_message(receive), keep=settings.replay_body_bytes)
    except ClientGone:
        client_left(svc)
        return
    method: str = scope["method"]
    avoid: dict[str, str] = {}
    replayed = False
    while True:
        decision = routed.decision
        cluster = decision.cluster
        assert cluster is not None
        headers = forwarded_headers(scope, rt, cluster.url)
        target = Target(target_url(cluster.url, scope), method, headers)
        try:
            exchange = open_exchange(
                upstream.for_cluster(cluster.name), target, body, timeouts(settings)
            )
            if body.complete:
                # Nothing more to read from the client: a hang-up ends the wait at once.
                exchange = unless_client_leaves(receive, exchange)
            response = await exchange
        except ClientGone:
            client_left(svc)
            return
        except UpstreamFailed as failed:
            upstream_failed(svc, cluster.name, failed.kind)
            if svc.passive is not None and failed.kind is not Failure.POOL:
                # A full pool is this edge's own limit, not the cluster's failure.
                passive(svc, cluster.name, ok=False, detail=f"{failed.kind} failure")
            again = not failed.sent or (method in IDEMPOTENT and body.replayable)
            if again and len(avoid) < settings.retries and failed.kind is not Failure.POOL:
                log.info(
                    "cluster %s failed (%s: %s); trying the next", cluster.name, failed.kind, failed
                )
                avoid[cluster.name] = f"{failed.kind} failed from this edge"
                routed = await reroute(svc, rt, routed, avoid)
                if routed.decision.cluster is not None:
                    continue
            note_decision(scope, decision.reason, cluster.name, decision.session)
            await send_json(
                send,
                _STATUS.get(failed.kind, 502),
                {
                    "error": _ERROR[failed.kind],
                    "message": f"cluster {cluster.name}: {failed}",
                    "cluster": cluster.name,
                },
            )
            return
        if svc.passive is not None:
            code = response.status_code
            passive(svc, cluster.name, ok=code < 500, detail=f"HTTP {code}")
        hint = response.headers.get("georouter-replay")
        if hint is not None and not replayed:
            # At most one replay per request, whatever the second cluster answers.
            replayed = True
            elsewhere = _replay_target(hint.strip(), cluster.name, svc, rt, body.replayable)
            if elsewhere is not None:
                await response.aclose()
                decision = await svc.router.move(
                    routed.client, routed.session_id, elsewhere, rt, tenant=routed.tenant
                )
                routed = routed._replace(decision=decision)
                continue
        break
    for issued in _issued(response.headers, rt.config.sessions.learn):
        await svc.router.learned(issued, cluster.name)
    note_decision(scope, decision.reason, cluster.name, decision.session)
    headers_out = [
        *hop.client_response_headers(response.headers.raw),
        *decision_headers(decision),
        *routed.cookies,
    ]
    await relay(response, send, receive, headers_out, watch_client=body.complete)


def _replay_target(
    hint: str, sender: str, svc: Services, rt: Runtime, replayable: bool
) -> str | None:
    """The cluster a replay hint names, if the request may go there."""
    why = None
    if hint == sender:
        why = "it names the cluster that sent it"
    elif hint not in rt.clusters:
        why = "no cluster has that name"
    elif hint in svc.router.unroutable():
        why = "that cluster is not routable"
    elif not replayable:
        kept = rt.config.proxy.replay_body_bytes
        why = f"the request body is over [proxy] replay_body_bytes ({kept})"
    if why is None:
        return hint
    log.warning("cluster %s sent a replay hint naming %r, ignored: %s", sender, hint[:64], why)
    return None


def upstream_failures(metrics: Metrics) -> Family:
    """Proxied requests a cluster could not take (created on first use)."""
    return metrics.family(
        "georouter_upstream_failures_total",
        "Proxied requests a cluster could not take, by cluster and failure.",
        ("cluster", "failure"),
    )


def upstream_failed(svc: Services, cluster: str, failure: str) -> None:
    upstream_failures(svc.metrics).values[(cluster, failure)] += 1


def passive(svc: Services, cluster: str, *, ok: bool, detail: str) -> None:
    """Tell passive health what ``cluster`` did with this request."""
    assert svc.passive is not None
    if svc.passive.report(cluster, ok=ok, detail=detail):
        svc.metrics.family(
            "georouter_passive_ejections_total",
            "Clusters ejected by passive health (errors on the data path), by cluster.",
            ("cluster",),
        ).values[(cluster,)] += 1


def client_left(svc: Services) -> None:
    client_disconnects(svc.metrics).values[()] += 1
