"""Who the client is: the TCP peer, or what trusted proxies say it is.

Pure: strings in, an address out. The rule is nginx's ``real_ip_recursive on``
(and Envoy's ``xff_trusted_cidrs``): forwarding headers count only when the
peer itself is a trusted proxy, and then they are walked from the *right*,
because each proxy appends the address it saw; everything to the left of the
first untrusted address was written by the client and proves nothing. The walk
stops at the first entry that is not a well-formed address, so garbage can
never become the client; the client is then the last trusted hop reached.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from georouter.config import ClientIpHeader, Network

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def normalise(addr: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:10.0.0.9``) as the IPv4 address it carries,
    so it matches IPv4 trust rules and IPv4 GeoIP networks."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"


def parse_address(text: str) -> IPAddress | None:
    """A bare IPv4 or IPv6 literal, normalised; None for anything else.

    ``inet_pton`` (a pure conversion, no I/O) is strict where it matters and four
    times faster than ``ipaddress`` on this hot path: it refuses zone ids
    (``fe80::1%eth0``, which name an interface of some other host), leading
    zeros (``01.2.3.4``) and surrounding whitespace.
    """
    if not text or len(text) > 45:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError, UnicodeError):
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError, UnicodeError):
        return None
    if packed[:12] == _MAPPED_PREFIX:
        return ipaddress.IPv4Address(packed[12:])
    return ipaddress.IPv6Address(packed)


def _bracketed(inner: str) -> IPAddress | None:
    # Brackets hold IPv6 only; a mapped address inside is still normalised to IPv4.
    return parse_address(inner) if ":" in inner else None


def _port_ok(port: str) -> bool:
    return port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535


def parse_xff_entry(entry: str) -> IPAddress | None:
    """One ``X-Forwarded-For`` entry: ``v4``, ``v4:port``, ``v6``, ``[v6]`` or ``[v6]:port``."""
    entry = entry.strip(" \t")
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0:
            return None
        rest = entry[close + 1 :]
        if rest and not (rest.startswith(":") and _port_ok(rest[1:])):
            return None
        return _bracketed(entry[1:close])
    if entry.count(":") == 1:
        host, port = entry.split(":")
        if not _port_ok(port):
            return None
        addr = parse_address(host)
        return addr if isinstance(addr, ipaddress.IPv4Address) else None
    return parse_address(entry)


def _split_unquoted(value: str, sep: str) -> Iterator[str]:
    """Split on ``sep`` outside quoted strings (RFC 9110 lists, RFC 7239 pairs)."""
    start = 0
    quoted = escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == sep:
            yield value[start:i]
            start = i + 1
    # An unterminated quote leaves the tail as one (malformed) element.
    yield value[start:]


def _forwarded_pairs(element: str) -> dict[str, str] | None:
    """``for=...;proto=...`` into a dict of lower-cased names; None if malformed."""
    pairs: dict[str, str] = {}
    for raw_pair in _split_unquoted(element, ";"):
        pair = raw_pair.strip(" \t")
        if not pair:
            continue
        name, sep, value = pair.partition("=")
        name = name.lower()
        if not sep or not name or not set(name) <= _TCHARS or name in pairs:
            return None
        if value.startswith('"'):
            unquoted = _unquote(value)
            if unquoted is None:
                return None
            pairs[name] = unquoted
        elif value and set(value) <= _TCHARS:
            pairs[name] = value
        else:
            return None
    return pairs


def _unquote(value: str) -> str | None:
    if len(value) < 2 or not value.endswith('"'):
        return None
    out: list[str] = []
    escaped = False
    for ch in value[1:-1]:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return None
        else:
            out.append(ch)
    return None if escaped else "".join(out)


def parse_forwarded_node(node: str) -> IPAddress | None:
    """An RFC 7239 ``for=`` node (already unquoted): ``v4``, ``v4:port``, ``[v6]``, ``[v6]:port``.

    ``unknown`` and obfuscated identifiers (``_hidden``) are not addresses.
    """
    if node.startswith("["):
        close = node.find("]")
        if close < 0:
            return None
        rest = node[close + 1 :]
        if rest and not (rest.startswith(":") and _node_port_ok(rest[1:])):
            return None
        return _bracketed(node[1:close])
    host, sep, port = node.partition(":")
    if sep and not _node_port_ok(port):
        return None
    addr = parse_address(host)
    return addr if isinstance(addr, ipaddress.IPv4Address) else None


def _node_port_ok(port: str) -> bool:
    # RFC 7239 §6: a port may be obfuscated ("_" followed by letters, digits, ".", "_", "-").
    if port.startswith("_") and len(port) > 1:
        return all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in port[1:])
    return _port_ok(port)


def _xff_entries(lines: Iterable[str]) -> list[str]:
    entries: list[str] = []
    for line in lines:
        entries.extend(e for e in line.split(",") if e.strip(" \t"))
    return entries


def _forwarded_entries(lines: Iterable[str]) -> list[str]:
    entries: list[str] = []
    for line in lines:
        entries.extend(e for e in _split_unquoted(line, ",") if e.strip(" \t"))
    return entries


def _parse_forwarded_element(element: str) -> IPAddress | None:
    pairs = _forwarded_pairs(element)
    if pairs is None or "for" not in pairs:
        return None
    return parse_forwarded_node(pairs["for"])


@dataclass(frozen=True, slots=True)
class TrustRule:
    """Which peers may speak for the client, and through which header."""

    trusted: tuple[Network, ...] = ()
    header: ClientIpHeader = ClientIpHeader.X_FORWARDED_FOR
    max_hops: int = 20

    def is_trusted(self, addr: IPAddress) -> bool:
        return any(addr in net for net in self.trusted)

    def client_ip(self, peer: str | None, header_lines: Sequence[str]) -> IPAddress | None:
        """The client's address given the peer's and the values of ``self.header``
        (one string per header line, in the order received)."""
        hops = self.chain(peer, header_lines)
        return hops[0] if hops else None

    def chain(self, peer: str | None, header_lines: Sequence[str]) -> tuple[IPAddress, ...]:
        """The hops from the client to the peer, as far as trusted proxies vouch for them.

        What an edge may forward as ``X-Forwarded-For``: an untrusted peer's own
        header is never part of it, so a client cannot spoof its way in.
        """
        addr = parse_address(peer) if peer else None
        if addr is None:
            return ()
        if not self.trusted or not self.is_trusted(addr):
            return (addr,)
        parse: Callable[[str], IPAddress | None]
        if self.header is ClientIpHeader.FORWARDED:
            entries = _forwarded_entries(header_lines)
            parse = _parse_forwarded_element
        else:
            entries = _xff_entries(header_lines)
            parse = parse_xff_entry
        hops = [addr]
        for entry in reversed(entries[max(len(entries) - self.max_hops, 0) :]):
            hop = parse(entry)
            if hop is None:
                break
            hops.append(hop)
            if not self.is_trusted(hop):
                break
        return tuple(reversed(hops))
