"""What a proxied request and its response carry across the edge. Pure.

Hop-by-hop headers (RFC 9110 §7.6.1) and every header a ``Connection`` header
names belong to one connection and are dropped; the forwarding headers are
then set by the edge from what it knows, after that removal, so a client
sending ``Connection: X-Forwarded-For`` cannot strip them, and a client's own
``X-Forwarded-For`` reaches a cluster only when a trusted proxy vouched for it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from georouter.core.clientip import IPAddress

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Replaced by the edge's own values on every proxied request. `expect` is the
# client's conversation with this edge (its server already answered 100-continue).
_SET_BY_EDGE = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"expect"}
)
# A cluster's instruction to the edge (see ``replay``); never shown to a client.
REPLAY_HINT = b"georouter-replay"
_TCHARS = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def _connection_named(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(named)


def end_to_end(
    headers: Iterable[tuple[bytes, bytes]], also: frozenset[bytes] = frozenset()
) -> Headers:
    """``headers`` without hop-by-hop ones, those ``Connection`` names, and ``also``."""
    listed = list(headers)
    drop = HOP_BY_HOP | _connection_named(listed) | also
    return [(n, v) for n, v in listed if n not in drop]


def _node(ip: IPAddress) -> str:
    # RFC 7239 §6: an IPv6 node is bracketed, and so must be quoted.
    return f'"[{ip}]"' if isinstance(ip, ipaddress.IPv6Address) else str(ip)


def _param(value: str) -> str:
    if value and all(ord(c) < 128 and ord(c) in _TCHARS for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def first_value(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for n, v in headers:
        if n == name:
            return v.decode("latin-1").split(",")[0].strip() or None
    return None


def upstream_request_headers(
    headers: Sequence[tuple[bytes, bytes]],
    *,
    chain: Sequence[IPAddress],
    scheme: str,
    trusted_peer: bool,
    cluster_host: str | None,
    http_version: str,
) -> Headers:
    """The headers a cluster receives for a client request carrying ``headers``.

    ``chain``: the client and the proxies that vouch for it, up to the peer
    (``TrustRule.chain``). ``cluster_host``: the Host to send instead of the
    client's, or None to pass the client's through.
    """
    host = first_value(headers, b"host")
    proto = scheme
    forwarded_host = host
    if trusted_peer:
        # A trusted proxy in front knows the scheme and host the client used.
        proto = first_value(headers, b"x-forwarded-proto") or proto
        forwarded_host = first_value(headers, b"x-forwarded-host") or host
    out = end_to_end(headers, _SET_BY_EDGE)
    if cluster_host is not None:
        out = [(n, v) for n, v in out if n != b"host"]
        out.append((b"host", cluster_host.encode("latin-1")))
    if chain:
        out.append((b"x-forwarded-for", ", ".join(str(ip) for ip in chain).encode("latin-1")))
    out.append((b"x-forwarded-proto", proto.encode("latin-1")))
    if forwarded_host:
        out.append((b"x-forwarded-host", forwarded_host.encode("latin-1")))
    elements = [f"for={_node(ip)}" for ip in chain] or ["for=unknown"]
    last = f"{elements[-1]};proto={_param(proto)}"
    if forwarded_host:
        last += f";host={_param(forwarded_host)}"
    elements[-1] = last
    out.append((b"forwarded", ", ".join(elements).encode("latin-1")))
    out.append((b"via", f"{via_version(http_version)} georouter".encode("latin-1")))
    return out


def via_version(http_version: str) -> str:
    """``Via``'s protocol version: "1.1", "1.0", "2" as ASGI names them."""
    return http_version if http_version in ("1.0", "1.1", "2", "3") else "1.1"


def client_response_headers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The headers a client receives from a cluster's response."""
    return end_to_end(headers, frozenset({REPLAY_HINT}))
