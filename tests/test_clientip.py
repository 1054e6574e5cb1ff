"""Client-IP extraction: ``TrustRule.client_ip`` and its parsers, as tables of vectors.

The vectors come from the test suites of real proxies and from the RFC, translated
into georouter's one rule (nginx ``real_ip_recursive on`` / Envoy ``xff_trusted_cidrs``):

* the forwarding header counts only when the TCP peer is trusted;
* entries are walked from the right, trusted ones are skipped, the first untrusted
  address is the client; if all are trusted, the leftmost entry reached is the client;
* a malformed entry stops the walk: the client is the last address reached;
* at most ``max_hops`` entries (from the right) are examined;
* IPv4-mapped IPv6 addresses are normalised to IPv4 before trust checks.

Sources (each case id starts with its source):

* ``nginx-realip``   nginx/nginx-tests ``realip.t``
* ``nginx-remote``   nginx/nginx-tests ``realip_remote_addr.t``
* ``envoy-xff``      envoyproxy/envoy ``test/extensions/http/original_ip_detection/xff/xff_test.cc``
* ``envoy-util``     envoyproxy/envoy ``test/common/http/utility_test.cc`` (getLastAddressFromXFF)
* ``uvicorn``        Kludex/uvicorn (was encode/uvicorn) ``tests/middleware/test_proxy_headers.py``
* ``haproxy-7239``   haproxy/haproxy ``reg-tests/http-rules/forwarded-header-7239.vtc``
* ``rfc7239-sN``     RFC 7239 section N examples
* ``spec``           georouter's own specification (no external vector)

Where a source's semantics differ from ours the case is written for OUR rule and the
difference is noted in a comment next to it.
"""

from __future__ import annotations

import ipaddress
import random
import re

import pytest

from georouter.config import ClientIpHeader
from georouter.core.clientip import (
    IPAddress,
    TrustRule,
    parse_address,
    parse_forwarded_node,
    parse_xff_entry,
)

ip = ipaddress.ip_address

XFF = ClientIpHeader.X_FORWARDED_FOR
FWD = ClientIpHeader.FORWARDED

# Trust sets, as the sources configure them.
NGINX = ("127.0.0.1/32", "10.0.1.0/24")  # realip.t: set_real_ip_from
NGINX_REMOTE = ("127.0.0.1/32", "192.0.2.1/32")  # realip_remote_addr.t
ENVOY = ("192.0.2.0/24", "198.51.100.0/24", "2001:db8:7e57:1::/64")  # xff_test.cc
UVICORN = ("127.0.0.1/32", "10.0.0.0/8")  # test_proxy_headers_trusted_hosts_malformed
EVERYTHING = ("0.0.0.0/0", "::/0")  # uvicorn's trusted_hosts="*"
LB = ("10.0.0.0/8", "fd00::/8")  # ours: an IPv4 and an IPv6 load-balancer network

UVICORN_PEER = "127.0.0.1"  # uvicorn's make_httpx_client default client
LB_PEER = "10.0.0.1"


def _rule(trusted: tuple[str, ...], header: ClientIpHeader = XFF, max_hops: int = 20) -> TrustRule:
    return TrustRule(
        trusted=tuple(ipaddress.ip_network(c) for c in trusted),
        header=header,
        max_hops=max_hops,
    )


def _assert_same(got: IPAddress | None, expected: IPAddress | None) -> None:
    assert got == expected
    assert type(got) is type(expected)


# --------------------------------------------------------------------------------------
# X-Forwarded-For: the walk
# --------------------------------------------------------------------------------------

XFF_WALK = [
    # nginx-tests realip.t (set_real_ip_from 127.0.0.1/32, 10.0.1.0/24; peer 127.0.0.1).
    pytest.param(
        NGINX,
        "127.0.0.1",
        ["192.0.2.1"],
        ip("192.0.2.1"),
        id="nginx-realip-single-entry",  # the X-Real-IP vector, as a one-entry list
    ),
    pytest.param(
        NGINX,
        "127.0.0.1",
        ["10.0.0.1, 192.0.2.1"],
        ip("192.0.2.1"),
        id="nginx-realip-multi",
    ),
    # nginx with `real_ip_recursive off` answers 127.0.0.1 (the rightmost entry);
    # georouter is always recursive, so trusted 127.0.0.1 and 10.0.1.1 are skipped.
    pytest.param(
        NGINX,
        "127.0.0.1",
        ["192.0.2.1, 10.0.1.1, 127.0.0.1"],
        ip("192.0.2.1"),
        id="nginx-realip-recursive-off-vector-walked-recursively",
    ),
    pytest.param(
        NGINX,
        "127.0.0.1",
        ["10.0.1.1, 192.0.2.1, 127.0.0.1"],
        ip("192.0.2.1"),
        id="nginx-realip-recursive-on",
    ),
    # nginx (recursive off) answers 10.0.1.1; recursively it is 192.0.2.1.
    pytest.param(
        NGINX,
        "127.0.0.1",
        ["192.0.2.1", "127.0.0.1, 10.0.1.1"],
        ip("192.0.2.1"),
        id="nginx-realip-multi-xff-recursive-off-vector-walked-recursively",
    ),
    pytest.param(
        NGINX,
        "127.0.0.1",
        ["10.0.1.1", "192.0.2.1", "127.0.0.1"],
        ip("192.0.2.1"),
        id="nginx-realip-multi-xff-recursive-on",
    ),
    pytest.param(NGINX, "127.0.0.1", [], ip("127.0.0.1"), id="nginx-realip-no-header"),
    # nginx-tests realip_remote_addr.t (set_real_ip_from 127.0.0.1/32, 192.0.2.1/32).
    pytest.param(NGINX_REMOTE, "127.0.0.1", [], ip("127.0.0.1"), id="nginx-remote-request"),
    # 192.0.2.1 is itself trusted; it is the leftmost entry reached, so it is the client.
    pytest.param(
        NGINX_REMOTE,
        "127.0.0.1",
        ["192.0.2.1"],
        ip("192.0.2.1"),
        id="nginx-remote-realip-trusted-only-entry",
    ),
    # Envoy xff_test.cc, XffTrustedCidrsTest.
    pytest.param(
        ENVOY,
        "192.0.2.11",
        ["1.2.3.4,2.2.2.2"],
        ip("2.2.2.2"),
        id="envoy-xff-remote-ipv4-is-trusted",
    ),
    pytest.param(
        ENVOY,
        "2001:db8:7e57:1::1",
        ["1.2.3.4,2.2.2.2"],
        ip("2.2.2.2"),
        id="envoy-xff-remote-ipv6-is-trusted",
    ),
    pytest.param(
        ENVOY,
        "192.0.2.11",
        ["1.2.3.4,2.2.2.2,192.0.2.5, 198.51.100.1"],
        ip("2.2.2.2"),
        id="envoy-xff-recurse",
    ),
    pytest.param(
        ENVOY,
        "192.0.2.11",
        ["192.0.2.4,192.0.2.5, 198.51.100.1"],
        ip("192.0.2.4"),
        id="envoy-xff-recurse-all-addresses-trusted",
    ),
    pytest.param(
        ENVOY,
        "2001:db8:7e57:1::1",
        ["2001:db8::beef, 2001:db8:7e57:1::5"],
        ip("2001:db8::beef"),
        id="envoy-xff-recurse-ipv6-entries",  # the Recurse vector with IPv6 hops
    ),
    # Envoy utility_test.cc getLastAddressFromXFF(headers, num_to_skip). Skipping N
    # entries from the right is translated into trusting exactly those N addresses.
    pytest.param(
        ("127.0.0.1/32",),
        "127.0.0.1",
        ["192.0.2.10, 192.0.2.1, 10.0.0.1"],
        ip("10.0.0.1"),
        id="envoy-util-last-address-skip-0",
    ),
    pytest.param(
        ("127.0.0.1/32", "10.0.0.1/32"),
        "127.0.0.1",
        ["192.0.2.10, 192.0.2.1, 10.0.0.1"],
        ip("192.0.2.1"),
        id="envoy-util-last-address-skip-1",
    ),
    pytest.param(
        ("127.0.0.1/32", "10.0.0.1/32", "192.0.2.1/32"),
        "127.0.0.1",
        ["192.0.2.10, 192.0.2.1, 10.0.0.1"],
        ip("192.0.2.10"),
        id="envoy-util-last-address-skip-2",
    ),
    # Envoy returns no address when all are skipped; we take the leftmost reached.
    pytest.param(
        ("127.0.0.1/32", "10.0.0.1/32", "192.0.2.0/24"),
        "127.0.0.1",
        ["192.0.2.10, 192.0.2.1, 10.0.0.1"],
        ip("192.0.2.10"),
        id="envoy-util-last-address-skip-3-all-trusted",
    ),
    pytest.param(
        ("127.0.0.1/32",),
        "127.0.0.1",
        ["192.0.2.10, 192.0.2.1 ,10.0.0.1,10.0.0.2"],
        ip("10.0.0.2"),
        id="envoy-util-no-space-on-the-left",
    ),
    pytest.param(
        ("127.0.0.1/32", "10.0.0.2/32"),
        "127.0.0.1",
        ["192.0.2.10, 192.0.2.1 ,10.0.0.1,10.0.0.2"],
        ip("10.0.0.1"),
        id="envoy-util-no-space-on-either-side",
    ),
    pytest.param(
        ("127.0.0.1/32", "10.0.0.0/30"),
        "127.0.0.1",
        ["192.0.2.10, 192.0.2.1 ,10.0.0.1,10.0.0.2"],
        ip("192.0.2.1"),
        id="envoy-util-rtrim-and-ltrim",
    ),
    pytest.param(
        ("127.0.0.1/32", "10.0.0.0/30", "192.0.2.1/32"),
        "127.0.0.1",
        ["192.0.2.10, 192.0.2.1 ,10.0.0.1,10.0.0.2"],
        ip("192.0.2.10"),
        id="envoy-util-no-space-trimming",
    ),
    # Envoy: empty XFF gives no address; for us the client is then the peer.
    pytest.param(("127.0.0.1/32",), "127.0.0.1", [""], ip("127.0.0.1"), id="envoy-util-empty"),
    pytest.param(("127.0.0.1/32",), "127.0.0.1", [","], ip("127.0.0.1"), id="envoy-util-comma"),
    pytest.param(
        ("127.0.0.1/32",), "127.0.0.1", [", "], ip("127.0.0.1"), id="envoy-util-comma-space"
    ),
    pytest.param(
        ("127.0.0.1/32",),
        "127.0.0.1",
        ["34.0.0.1"],
        ip("34.0.0.1"),
        id="envoy-util-one-address",
    ),
    pytest.param(
        ("127.0.0.1/32",),
        "127.0.0.1",
        ["34.0.0.1, 34.0.0.1, 10.0.0.1"],
        ip("10.0.0.1"),
        id="envoy-util-two-addresses-in-xff",
    ),
    # uvicorn test_proxy_headers_trusted_hosts (XFF "1.2.3.4", peer 127.0.0.1).
    pytest.param(EVERYTHING, UVICORN_PEER, ["1.2.3.4"], ip("1.2.3.4"), id="uvicorn-trust-star"),
    pytest.param(
        ("127.0.0.1/32",), UVICORN_PEER, ["1.2.3.4"], ip("1.2.3.4"), id="uvicorn-trusted-proxy"
    ),
    pytest.param(
        ("127.0.0.1/32", "10.0.0.1/32"),
        UVICORN_PEER,
        ["1.2.3.4"],
        ip("1.2.3.4"),
        id="uvicorn-trusted-proxy-list",
    ),
    pytest.param(
        ("127.0.0.0/24", "10.0.0.1/32"),
        UVICORN_PEER,
        ["1.2.3.4"],
        ip("1.2.3.4"),
        id="uvicorn-trusted-proxy-network",
    ),
    pytest.param(
        ("127.0.0.1/32", "1.2.3.4/32"),
        UVICORN_PEER,
        ["1.2.3.4"],
        ip("1.2.3.4"),
        id="uvicorn-client-running-on-proxy-server",
    ),
    # uvicorn test_proxy_headers_multiple_proxies (XFF "1.2.3.4, 10.0.2.1, 192.168.0.2").
    pytest.param(
        EVERYTHING,
        UVICORN_PEER,
        ["1.2.3.4, 10.0.2.1, 192.168.0.2"],
        ip("1.2.3.4"),
        id="uvicorn-multiple-proxies-trust-star",
    ),
    pytest.param(
        ("127.0.0.1/32", "10.0.2.1/32", "192.168.0.2/32"),
        UVICORN_PEER,
        ["1.2.3.4, 10.0.2.1, 192.168.0.2"],
        ip("1.2.3.4"),
        id="uvicorn-multiple-proxies-all-trusted",
    ),
    pytest.param(
        ("10.0.2.1/32", "192.168.0.2/32", "127.0.0.1/32"),
        UVICORN_PEER,
        ["1.2.3.4, 10.0.2.1, 192.168.0.2"],
        ip("1.2.3.4"),
        id="uvicorn-multiple-proxies-order-does-not-matter",
    ),
    pytest.param(
        ("192.168.0.2/32", "127.0.0.1/32"),
        UVICORN_PEER,
        ["1.2.3.4, 10.0.2.1, 192.168.0.2"],
        ip("10.0.2.1"),
        id="uvicorn-multiple-proxies-first-untrusted",
    ),
    pytest.param(
        ("127.0.0.1/32", "10.0.0.0/8", "192.168.0.2/32"),
        UVICORN_PEER,
        ["1.2.3.4, 10.0.2.1, 192.168.0.2"],
        ip("1.2.3.4"),
        id="uvicorn-multiple-proxies-mixed-networks",
    ),
    # uvicorn test_proxy_headers_multiple_proxies_with_ports.
    pytest.param(
        EVERYTHING,
        UVICORN_PEER,
        ["1.2.3.4:1234, [2001:db8::1]:8080, 192.168.0.2:9000"],
        ip("1.2.3.4"),
        id="uvicorn-ports-trust-star",
    ),
    pytest.param(
        ("127.0.0.1/32", "2001:db8::1/128", "192.168.0.2/32"),
        UVICORN_PEER,
        ["1.2.3.4:1234, [2001:db8::1]:8080, 192.168.0.2:9000"],
        ip("1.2.3.4"),
        id="uvicorn-ports-all-trusted",
    ),
    pytest.param(
        ("192.168.0.2/32", "127.0.0.1/32"),
        UVICORN_PEER,
        ["1.2.3.4:1234, [2001:db8::1]:8080, 192.168.0.2:9000"],
        ip("2001:db8::1"),
        id="uvicorn-ports-first-untrusted-is-ipv6",
    ),
    pytest.param(
        ("127.0.0.1/32", "2001:db8::/32", "192.168.0.2/32"),
        UVICORN_PEER,
        ["1.2.3.4:1234, [2001:db8::1]:8080, 192.168.0.2:9000"],
        ip("1.2.3.4"),
        id="uvicorn-ports-mixed-networks",
    ),
    # uvicorn test_proxy_headers_trusted_hosts_malformed (trusted 127.0.0.1, 10.0.0.0/8).
    # uvicorn treats an empty entry as an untrusted "" host and falls back to the peer;
    # georouter skips empty list entries (RFC 9110 list syntax), so some answers differ.
    pytest.param(
        UVICORN, UVICORN_PEER, [" , "], ip("127.0.0.1"), id="uvicorn-malformed-space-comma"
    ),
    pytest.param(UVICORN, UVICORN_PEER, [", , "], ip("127.0.0.1"), id="uvicorn-malformed-commas"),
    pytest.param(
        UVICORN,
        UVICORN_PEER,
        [" , 10.0.0.1"],
        ip("10.0.0.1"),
        id="uvicorn-malformed-empty-then-trusted",  # uvicorn: peer
    ),
    pytest.param(
        UVICORN,
        UVICORN_PEER,
        ["9.9.9.9 , , , 10.0.0.1"],
        ip("9.9.9.9"),
        id="uvicorn-malformed-empties-between",  # uvicorn: peer
    ),
    pytest.param(
        UVICORN,
        UVICORN_PEER,
        [", , 9.9.9.9"],
        ip("9.9.9.9"),
        id="uvicorn-malformed-leading-empties",
    ),
    pytest.param(
        UVICORN,
        UVICORN_PEER,
        [", , 9.9.9.9, , "],
        ip("9.9.9.9"),
        id="uvicorn-malformed-trailing-empties",  # uvicorn: peer
    ),
    pytest.param(
        EVERYTHING, UVICORN_PEER, [""], ip("127.0.0.1"), id="uvicorn-empty-x-forwarded-for"
    ),
    # uvicorn test_proxy_headers_duplicate_x_forwarded_for_is_combined.
    pytest.param(
        ("127.0.0.1/32",),
        UVICORN_PEER,
        ["203.0.113.66, 198.51.100.23", "127.0.0.1"],
        ip("198.51.100.23"),
        id="uvicorn-duplicate-x-forwarded-for-is-combined",
    ),
    # uvicorn test_proxy_headers_haproxy_behind_alb.
    pytest.param(
        ("127.0.0.1/32", "10.0.0.1/32"),
        UVICORN_PEER,
        ["1.2.3.4", "10.0.0.1"],
        ip("1.2.3.4"),
        id="uvicorn-haproxy-behind-alb",
    ),
    # uvicorn test_proxy_headers_x_forwarded_for_port_shapes (trusted "*").
    pytest.param(EVERYTHING, UVICORN_PEER, ["1.2.3.4"], ip("1.2.3.4"), id="uvicorn-shape-ipv4"),
    pytest.param(
        EVERYTHING, UVICORN_PEER, ["1.2.3.4:1234"], ip("1.2.3.4"), id="uvicorn-shape-ipv4-port"
    ),
    pytest.param(
        EVERYTHING,
        UVICORN_PEER,
        ["[2001:db8::1]:443"],
        ip("2001:db8::1"),
        id="uvicorn-shape-bracketed-ipv6-port",
    ),
    pytest.param(
        EVERYTHING,
        UVICORN_PEER,
        ["[2001:db8::1]"],
        ip("2001:db8::1"),
        id="uvicorn-shape-bracketed-ipv6",
    ),
    pytest.param(
        EVERYTHING, UVICORN_PEER, ["2001:db8::1"], ip("2001:db8::1"), id="uvicorn-shape-bare-ipv6"
    ),
    # RFC 7239 section 7.4: the X-Forwarded-For side of the transition examples.
    pytest.param(
        NGINX, "127.0.0.1", ["192.0.2.172"], ip("192.0.2.172"), id="rfc7239-s7.4-xff-single"
    ),
    pytest.param(
        NGINX,
        "127.0.0.1",
        ["192.0.2.43, 2001:db8:cafe::17"],
        ip("2001:db8:cafe::17"),
        id="rfc7239-s7.4-xff-ipv6-last",
    ),
    pytest.param(
        (*NGINX, "2001:db8:cafe::/48"),
        "127.0.0.1",
        ["192.0.2.43, 2001:db8:cafe::17"],
        ip("192.0.2.43"),
        id="rfc7239-s7.4-xff-ipv6-hop-trusted",
    ),
    # spec: IPv6 peers and networks, mixed families, tabs.
    pytest.param(
        LB,
        "fd00::1",
        ["2001:db8::7, fd00::2, fd00::3"],
        ip("2001:db8::7"),
        id="spec-ipv6-peer-ipv6-hops",
    ),
    pytest.param(
        LB,
        "fd00::1",
        ["198.51.100.9, 10.1.2.3, fd00::2"],
        ip("198.51.100.9"),
        id="spec-ipv6-peer-mixed-family-hops",
    ),
    pytest.param(
        LB,
        LB_PEER,
        ["\t198.51.100.9\t,\t10.0.0.2 "],
        ip("198.51.100.9"),
        id="spec-tab-and-space-around-entries",
    ),
    pytest.param(
        LB,
        LB_PEER,
        ["198.51.100.9", "", "10.0.0.2"],
        ip("198.51.100.9"),
        id="spec-empty-header-line-between",
    ),
]


@pytest.mark.parametrize(("trusted", "peer", "lines", "expected"), XFF_WALK)
def test_xff_walk(
    trusted: tuple[str, ...], peer: str, lines: list[str], expected: IPAddress | None
) -> None:
    _assert_same(_rule(trusted).client_ip(peer, lines), expected)


# --------------------------------------------------------------------------------------
# Forwarded (RFC 7239): the walk
# --------------------------------------------------------------------------------------

FORWARDED_WALK = [
    # RFC 7239 section 4 examples (trusted LB, peer 10.0.0.1).
    pytest.param(
        LB,
        LB_PEER,
        ['For="[2001:db8:cafe::17]:4711"'],
        ip("2001:db8:cafe::17"),
        id="rfc7239-s4-quoted-ipv6-port-name-case-insensitive",
    ),
    pytest.param(
        LB,
        LB_PEER,
        ["for=192.0.2.60;proto=http;by=203.0.113.43"],
        ip("192.0.2.60"),
        id="rfc7239-s4-for-proto-by",
    ),
    pytest.param(
        LB,
        LB_PEER,
        ["for=192.0.2.43, for=198.51.100.17"],
        ip("198.51.100.17"),
        id="rfc7239-s4-two-elements",
    ),
    pytest.param(
        (*LB, "198.51.100.0/24"),
        LB_PEER,
        ["for=192.0.2.43, for=198.51.100.17"],
        ip("192.0.2.43"),
        id="rfc7239-s4-two-elements-second-trusted",
    ),
    # RFC 7239 section 6.1 node examples.
    pytest.param(
        LB, LB_PEER, ['for="192.0.2.43:47011"'], ip("192.0.2.43"), id="rfc7239-s6.1-ipv4-port"
    ),
    pytest.param(
        LB,
        LB_PEER,
        ['for="[2001:db8:cafe::17]:47011"'],
        ip("2001:db8:cafe::17"),
        id="rfc7239-s6.1-ipv6-port",
    ),
    # RFC 7239 section 7.1: a header field split over several lines, in order.
    pytest.param(
        (*LB, "2001:db8:cafe::/48"),
        LB_PEER,
        ["for=192.0.2.43", 'for="[2001:db8:cafe::17]"'],
        ip("192.0.2.43"),
        id="rfc7239-s7.1-two-lines-ipv6-hop-trusted",  # for=unknown dropped, see malformed
    ),
    # RFC 7239 section 7.4 transition examples.
    pytest.param(LB, LB_PEER, ["for=192.0.2.172"], ip("192.0.2.172"), id="rfc7239-s7.4-single"),
    pytest.param(
        LB,
        LB_PEER,
        ['for=192.0.2.43, for="[2001:db8:cafe::17]"'],
        ip("2001:db8:cafe::17"),
        id="rfc7239-s7.4-ipv6-last",
    ),
    pytest.param(
        (*LB, "2001:db8:cafe::/48"),
        LB_PEER,
        ['for=192.0.2.43, for="[2001:db8:cafe::17]"'],
        ip("192.0.2.43"),
        id="rfc7239-s7.4-ipv6-hop-trusted",
    ),
    # RFC 7239 section 7.5.
    pytest.param(
        LB,
        LB_PEER,
        ["for=192.0.2.43,for=198.51.100.17;by=203.0.113.60;proto=http;host=example.com"],
        ip("198.51.100.17"),
        id="rfc7239-s7.5-parameters-on-last-element",
    ),
    # HAProxy forwarded-header-7239.vtc (HAProxy validates/extracts; we walk).
    pytest.param(
        LB,
        LB_PEER,
        ["proto=http;for=127.0.0.1"],
        ip("127.0.0.1"),
        id="haproxy-7239-option-forwarded-output",
    ),
    pytest.param(
        LB,
        LB_PEER,
        ['by="127.0.0.3:10";for="127.0.0.2:_id"'],
        ip("127.0.0.2"),
        id="haproxy-7239-obfuscated-port",
    ),
    pytest.param(
        LB,
        LB_PEER,
        ['for="127.0.0.1";host=v.test'],
        ip("127.0.0.1"),
        id="haproxy-7239-quoted-ipv4-with-host",
    ),
    pytest.param(
        LB,
        LB_PEER,
        ['for="[::1]"'],
        ip("::1"),
        id="haproxy-7239-quoted-bracketed-ipv6",  # the valid by="[::1]" vector, as for=
    ),
    pytest.param(
        LB,
        LB_PEER,
        ['for="[::1]:3"'],
        ip("::1"),
        id="haproxy-7239-quoted-bracketed-ipv6-port",  # by="[::1]:3"
    ),
    pytest.param(
        LB,
        LB_PEER,
        ['proto=http;for="[::1]:_id"'],
        ip("::1"),
        id="haproxy-7239-rfc7239-n2nn-ipv6-obfuscated-port",
    ),
    pytest.param(
        LB, LB_PEER, ["for=127.9.0.1"], ip("127.9.0.1"), id="haproxy-7239-rfc7239-n2nn-ipv4"
    ),
    # spec: syntax details.
    pytest.param(LB, LB_PEER, ["FOR=192.0.2.5"], ip("192.0.2.5"), id="spec-name-upper-case"),
    pytest.param(LB, LB_PEER, ['fOr="192.0.2.5"'], ip("192.0.2.5"), id="spec-name-mixed-case"),
    pytest.param(
        LB,
        LB_PEER,
        [r'for="[2001:db8::1\]:80"'],
        ip("2001:db8::1"),
        id="spec-quoted-pair-unescaped",
    ),
    pytest.param(
        LB,
        LB_PEER,
        [r'for="\1\9\2.0.2.5"'],
        ip("192.0.2.5"),
        id="spec-quoted-pairs-everywhere",
    ),
    pytest.param(
        LB,
        LB_PEER,
        ['for=198.51.100.7;host="a,for=6.6.6.6"'],
        ip("198.51.100.7"),
        id="spec-comma-inside-quoted-string-does-not-split",
    ),
    pytest.param(
        LB,
        LB_PEER,
        ['for=198.51.100.7;host="x;for=6.6.6.6"'],
        ip("198.51.100.7"),
        id="spec-semicolon-inside-quoted-string-does-not-split",
    ),
    pytest.param(
        LB,
        LB_PEER,
        ['for=198.51.100.7, for=10.0.0.2, for="[fd00::3]:8080"'],
        ip("198.51.100.7"),
        id="spec-trusted-ipv4-and-ipv6-hops-skipped",
    ),
    pytest.param(
        LB, LB_PEER, ["for=10.0.0.3, for=10.0.0.2"], ip("10.0.0.3"), id="spec-all-trusted-leftmost"
    ),
    pytest.param(
        LB,
        LB_PEER,
        ["for=198.51.100.7", "for=10.0.0.2"],
        ip("198.51.100.7"),
        id="spec-several-lines-joined-in-order",
    ),
    # If an open quote leaked into the next line, the rightmost element would be
    # malformed and the answer would be the peer.
    pytest.param(
        LB,
        LB_PEER,
        ['for=198.51.100.7;host="a', "for=203.0.113.9"],
        ip("203.0.113.9"),
        id="spec-open-quote-does-not-leak-across-lines",
    ),
    pytest.param(
        LB,
        LB_PEER,
        ["for=198.51.100.7,,for=10.0.0.2,"],
        ip("198.51.100.7"),
        id="spec-empty-elements-skipped",
    ),
    pytest.param(
        LB,
        LB_PEER,
        ["for=198.51.100.7;"],
        ip("198.51.100.7"),
        id="spec-empty-pair-allowed",  # RFC 7239 s4: forwarded-element = [pair] *(";" [pair])
    ),
    pytest.param(
        LB, "fd00::1", ['for="[2001:db8::9]"'], ip("2001:db8::9"), id="spec-ipv6-peer-trusted"
    ),
    pytest.param(LB, LB_PEER, [], ip("10.0.0.1"), id="spec-no-header-is-peer"),
    # The walk stops at the first untrusted address, before the garbage on its left.
    pytest.param(
        LB,
        LB_PEER,
        ["for=unknown, for=192.0.2.43"],
        ip("192.0.2.43"),
        id="spec-garbage-left-of-client-never-reached",
    ),
]


@pytest.mark.parametrize(("trusted", "peer", "lines", "expected"), FORWARDED_WALK)
def test_forwarded_walk(
    trusted: tuple[str, ...], peer: str, lines: list[str], expected: IPAddress | None
) -> None:
    _assert_same(_rule(trusted, FWD).client_ip(peer, lines), expected)


# --------------------------------------------------------------------------------------
# Spoofing protection: an untrusted peer's headers are ignored
# --------------------------------------------------------------------------------------

UNTRUSTED_PEER = [
    # Envoy returns "no detected address"; the connection address is then used.
    pytest.param(
        XFF,
        ENVOY,
        "10.10.11.11",
        ["1.2.3.4,2.2.2.2"],
        ip("10.10.11.11"),
        id="envoy-xff-remote-not-trusted",
    ),
    pytest.param(
        XFF,
        ("192.168.0.1/32",),
        UVICORN_PEER,
        ["1.2.3.4"],
        ip("127.0.0.1"),
        id="uvicorn-request-from-untrusted-proxy",
    ),
    pytest.param(
        XFF,
        ("192.168.0.0/16",),
        UVICORN_PEER,
        ["1.2.3.4"],
        ip("127.0.0.1"),
        id="uvicorn-request-from-untrusted-proxy-network",
    ),
    pytest.param(XFF, (), UVICORN_PEER, ["1.2.3.4"], ip("127.0.0.1"), id="uvicorn-trusted-nothing"),
    pytest.param(
        XFF,
        NGINX,
        "10.0.2.1",
        ["192.0.2.1"],
        ip("10.0.2.1"),
        id="nginx-realip-peer-just-outside-set-real-ip-from",
    ),
    pytest.param(
        XFF,
        LB,
        "203.0.113.5",
        ["10.0.0.2, 10.0.0.3"],
        ip("203.0.113.5"),
        id="spec-xff-claims-a-trusted-chain",
    ),
    pytest.param(
        XFF, LB, "2001:db8::5", ["198.51.100.7"], ip("2001:db8::5"), id="spec-ipv6-peer-untrusted"
    ),
    pytest.param(
        XFF,
        LB,
        "::ffff:192.0.2.1",
        ["198.51.100.7"],
        ip("192.0.2.1"),
        id="spec-mapped-peer-untrusted-still-normalised",
    ),
    pytest.param(
        XFF,
        ("::/0",),
        "192.0.2.1",
        ["198.51.100.7"],
        ip("192.0.2.1"),
        id="spec-ipv6-any-does-not-cover-ipv4",
    ),
    # Normalised before the trust check: ::ffff:10.0.0.9 is 10.0.0.9, which ::/0 lacks.
    pytest.param(
        XFF,
        ("::/0",),
        "::ffff:10.0.0.9",
        ["198.51.100.7"],
        ip("10.0.0.9"),
        id="spec-mapped-peer-checked-as-ipv4",
    ),
    pytest.param(
        FWD,
        LB,
        "192.0.2.1",
        ["for=198.51.100.7"],
        ip("192.0.2.1"),
        id="spec-forwarded-untrusted-peer",
    ),
    pytest.param(
        FWD,
        LB,
        "203.0.113.5",
        ["for=10.0.0.2"],
        ip("203.0.113.5"),
        id="spec-forwarded-claims-trusted-address",
    ),
]


@pytest.mark.parametrize(("header", "trusted", "peer", "lines", "expected"), UNTRUSTED_PEER)
def test_untrusted_peer_headers_are_ignored(
    header: ClientIpHeader,
    trusted: tuple[str, ...],
    peer: str,
    lines: list[str],
    expected: IPAddress | None,
) -> None:
    _assert_same(_rule(trusted, header).client_ip(peer, lines), expected)


# --------------------------------------------------------------------------------------
# Malformed entries stop the walk
# --------------------------------------------------------------------------------------

MALFORMED = [
    # X-Forwarded-For (trusted LB, peer 10.0.0.1 unless noted).
    pytest.param(XFF, LB, ["<script>"], ip("10.0.0.1"), id="spec-xff-script-tag"),
    pytest.param(
        XFF,
        LB,
        ["198.51.100.7, <script>, 10.0.0.2"],
        ip("10.0.0.2"),
        id="spec-xff-garbage-behind-trusted-hop",
    ),
    # uvicorn keeps "1.2.3.4:notaport" as the host; we refuse it.
    pytest.param(XFF, LB, ["1.2.3.4:notaport"], ip("10.0.0.1"), id="uvicorn-shape-ipv4-bad-port"),
    # uvicorn keeps the IPv6 host and drops the bad port; we refuse the entry.
    pytest.param(
        XFF, LB, ["[2001:db8::1]:notaport"], ip("10.0.0.1"), id="uvicorn-shape-ipv6-bad-port"
    ),
    pytest.param(XFF, LB, ["[2001:db8::1]extra"], ip("10.0.0.1"), id="uvicorn-shape-trailing-data"),
    pytest.param(XFF, LB, ["[2001:db8::1"], ip("10.0.0.1"), id="uvicorn-shape-unclosed-bracket"),
    # uvicorn ("*") walks to 1.2.3.4; we stop at "unix:" with ::1 as the last trusted hop.
    pytest.param(
        XFF,
        EVERYTHING,
        ["1.2.3.4, \xf0\xfd\xfd\xfd, unix:, ::1"],
        ip("::1"),
        id="uvicorn-invalid-x-forwarded-for",
    ),
    # Envoy: ", bad" yields no address.
    pytest.param(XFF, LB, [", bad"], ip("10.0.0.1"), id="envoy-util-comma-bad"),
    pytest.param(XFF, LB, ["fe80::1%eth0"], ip("10.0.0.1"), id="spec-xff-zone-id"),
    pytest.param(XFF, LB, ["[fe80::1%eth0]:80"], ip("10.0.0.1"), id="spec-xff-bracketed-zone-id"),
    pytest.param(XFF, LB, ["unknown"], ip("10.0.0.1"), id="spec-xff-unknown"),
    pytest.param(XFF, LB, ["01.2.3.4"], ip("10.0.0.1"), id="spec-xff-leading-zero"),
    pytest.param(XFF, LB, ["999.1.1.1"], ip("10.0.0.1"), id="spec-xff-octet-out-of-range"),
    pytest.param(XFF, LB, ["1.2.3.4:70000"], ip("10.0.0.1"), id="spec-xff-port-out-of-range"),
    pytest.param(XFF, LB, ["1.2.3.4:"], ip("10.0.0.1"), id="spec-xff-empty-port"),
    # HAProxy rejects by="[::1]:" (empty port).
    pytest.param(XFF, LB, ["[2001:db8::1]:"], ip("10.0.0.1"), id="haproxy-7239-xff-empty-port"),
    pytest.param(XFF, LB, ["[10.0.0.2]"], ip("10.0.0.1"), id="spec-xff-bracketed-ipv4"),
    pytest.param(
        XFF,
        LB,
        ["198.51.100.7, 10.0.0.2 10.0.0.3"],
        ip("10.0.0.1"),
        id="spec-xff-missing-comma",
    ),
    pytest.param(XFF, LB, ["proxy.example.com"], ip("10.0.0.1"), id="spec-xff-hostname"),
    pytest.param(
        XFF, LB, ["for=198.51.100.7"], ip("10.0.0.1"), id="spec-xff-forwarded-syntax-refused"
    ),
    pytest.param(
        XFF,
        LB,
        ["198.51.100.7, unknown, 10.0.0.2"],
        ip("10.0.0.2"),
        id="spec-xff-unknown-behind-trusted-hop",
    ),
    # Forwarded. RFC 7239 section 7.1: for=unknown is the rightmost element.
    pytest.param(
        FWD,
        LB,
        ['for=192.0.2.43,for="[2001:db8:cafe::17]",for=unknown'],
        ip("10.0.0.1"),
        id="rfc7239-s7.1-unknown-last",
    ),
    pytest.param(
        FWD,
        LB,
        ['for=192.0.2.43, for="[2001:db8:cafe::17]", for=unknown'],
        ip("10.0.0.1"),
        id="rfc7239-s7.1-unknown-last-with-spaces",
    ),
    pytest.param(
        FWD,
        LB,
        ["for=192.0.2.43", 'for="[2001:db8:cafe::17]", for=unknown'],
        ip("10.0.0.1"),
        id="rfc7239-s7.1-unknown-last-two-lines",
    ),
    pytest.param(FWD, LB, ['for="_gazonk"'], ip("10.0.0.1"), id="rfc7239-s4-obfuscated-gazonk"),
    pytest.param(
        FWD, LB, ["for=_hidden, for=_SEVKISEK"], ip("10.0.0.1"), id="rfc7239-s6.3-obfuscated"
    ),
    pytest.param(
        FWD,
        LB,
        ["for=_hidden, for=10.0.0.2"],
        ip("10.0.0.2"),
        id="rfc7239-s6.3-obfuscated-behind-trusted-hop",
    ),
    pytest.param(FWD, LB, ["for=2001:db8::1"], ip("10.0.0.1"), id="rfc7239-s6-unquoted-ipv6"),
    pytest.param(
        FWD, LB, ["for=[2001:db8::1]:443"], ip("10.0.0.1"), id="rfc7239-s6-unquoted-ipv6-port"
    ),
    pytest.param(
        FWD,
        LB,
        ["for=[::1]"],
        ip("10.0.0.1"),
        id="haproxy-7239-unquoted-bracketed-ipv6",  # by=[::1] is rejected
    ),
    pytest.param(
        FWD, LB, ["for=192.0.2.43:80"], ip("10.0.0.1"), id="rfc7239-s6-unquoted-ipv4-port"
    ),
    pytest.param(
        FWD, LB, ['for="2001:db8::1"'], ip("10.0.0.1"), id="rfc7239-s6-ipv6-without-brackets"
    ),
    pytest.param(
        FWD,
        LB,
        ['for="unknown:132";host="[::1]:65535";by="_obfs:_port";proto=https'],
        ip("10.0.0.1"),
        id="haproxy-7239-valid-but-for-is-unknown",
    ),
    pytest.param(
        FWD, LB, ['fore="unknown:132"'], ip("10.0.0.1"), id="haproxy-7239-no-for-parameter"
    ),
    pytest.param(
        FWD,
        LB,
        ["for=192.0.2.43;proto=http;proto=http"],
        ip("10.0.0.1"),
        id="haproxy-7239-duplicate-parameter",
    ),
    pytest.param(FWD, LB, ['"'], ip("10.0.0.1"), id="haproxy-7239-lone-quote"),
    pytest.param(FWD, LB, ['for="[::1]:"'], ip("10.0.0.1"), id="haproxy-7239-empty-port"),
    pytest.param(
        FWD, LB, ["for=192.0.2.43;for=198.51.100.7"], ip("10.0.0.1"), id="spec-duplicate-for"
    ),
    pytest.param(
        FWD,
        LB,
        ["for=192.0.2.43;FOR=198.51.100.7"],
        ip("10.0.0.1"),
        id="spec-duplicate-for-case-insensitive",
    ),
    pytest.param(FWD, LB, ['for="192.0.2.43'], ip("10.0.0.1"), id="spec-unterminated-quote"),
    pytest.param(
        FWD,
        LB,
        ['for=198.51.100.7, for="10.0.0.2, for=10.0.0.3'],
        ip("10.0.0.1"),
        id="spec-unterminated-quote-swallows-the-rest",
    ),
    pytest.param(FWD, LB, [r'for="192.0.2.43\"'], ip("10.0.0.1"), id="spec-escaped-closing-quote"),
    pytest.param(
        FWD, LB, ['for="192.0.2.43"x'], ip("10.0.0.1"), id="spec-garbage-after-quoted-string"
    ),
    pytest.param(
        FWD,
        LB,
        ["for=198.51.100.7, proto=https"],
        ip("10.0.0.1"),
        id="spec-element-without-for",
    ),
    pytest.param(FWD, LB, ["for=01.2.3.4"], ip("10.0.0.1"), id="spec-forwarded-leading-zero"),
    pytest.param(FWD, LB, ["for="], ip("10.0.0.1"), id="spec-forwarded-empty-value"),
    pytest.param(FWD, LB, ['for=""'], ip("10.0.0.1"), id="spec-forwarded-empty-quoted-value"),
    pytest.param(FWD, LB, ['for="[fe80::1%25eth0]"'], ip("10.0.0.1"), id="spec-forwarded-zone-id"),
    pytest.param(
        FWD,
        LB,
        ['for="192.0.2.43:70000"'],
        ip("10.0.0.1"),
        id="spec-forwarded-port-out-of-range",
    ),
    # RFC 7239 s4 ABNF: forwarded-pair = token "=" value, no whitespace around "=".
    pytest.param(
        FWD, LB, ["for = 192.0.2.43"], ip("10.0.0.1"), id="rfc7239-s4-whitespace-around-equals"
    ),
    pytest.param(FWD, LB, ["198.51.100.7"], ip("10.0.0.1"), id="spec-forwarded-xff-syntax-refused"),
]


@pytest.mark.parametrize(("header", "trusted", "lines", "expected"), MALFORMED)
def test_malformed_entries_stop_the_walk(
    header: ClientIpHeader, trusted: tuple[str, ...], lines: list[str], expected: IPAddress
) -> None:
    _assert_same(_rule(trusted, header).client_ip(LB_PEER, lines), expected)


# --------------------------------------------------------------------------------------
# max_hops
# --------------------------------------------------------------------------------------

_ENVOY_21 = (
    "10.1.1.1, 10.2.2.2, 10.3.3.3, 10.4.4.4, 10.5.5.5, 10.6.6.6, 10.7.7.7,10.8.8.8,"
    "10.9.9.9, 10.10.10.10, 10.11.11.11, 10.12.12.12, 10.13.13.13, 10.14.14.14, 10.15.15.15, "
    "10.16.16.16, 10.17.17.17, 10.18.18.18, 10.19.19.19, 10.20.20.20, 10.21.21.21"
)
_TWENTY_TRUSTED = ", ".join(f"10.0.0.{i}" for i in range(2, 22))
_NINETEEN_TRUSTED = ", ".join(f"10.0.0.{i}" for i in range(3, 22))

MAX_HOPS = [
    # Envoy refuses an XFF of more than 20 entries outright (no address). We examine the
    # rightmost 20; the rightmost, 10.21.21.21, is not in Envoy's trusted CIDRs.
    pytest.param(
        XFF,
        ENVOY,
        "192.0.2.11",
        20,
        [_ENVOY_21],
        ip("10.21.21.21"),
        id="envoy-xff-has-too-many-entries",
    ),
    pytest.param(
        XFF,
        LB,
        LB_PEER,
        20,
        [f"198.51.100.7, {_TWENTY_TRUSTED}"],
        ip("10.0.0.2"),
        id="spec-client-beyond-20-trusted-hops-not-reached",
    ),
    pytest.param(
        XFF,
        LB,
        LB_PEER,
        20,
        [f"198.51.100.7, {_NINETEEN_TRUSTED}"],
        ip("198.51.100.7"),
        id="spec-client-at-hop-20-reached",
    ),
    pytest.param(
        XFF,
        LB,
        LB_PEER,
        1,
        ["198.51.100.7, 10.0.0.2, 10.0.0.3"],
        ip("10.0.0.3"),
        id="spec-max-hops-1",
    ),
    pytest.param(
        XFF,
        LB,
        LB_PEER,
        2,
        ["198.51.100.7, 10.0.0.2, 10.0.0.3"],
        ip("10.0.0.2"),
        id="spec-max-hops-2",
    ),
    pytest.param(
        XFF,
        LB,
        LB_PEER,
        3,
        ["198.51.100.7, 10.0.0.2, 10.0.0.3"],
        ip("198.51.100.7"),
        id="spec-max-hops-3",
    ),
    # "At most max_hops entries are ever examined": none at all, so the client is the peer.
    pytest.param(
        XFF,
        LB,
        LB_PEER,
        0,
        ["198.51.100.7, 10.0.0.2, 10.0.0.3"],
        ip("10.0.0.1"),
        id="spec-max-hops-0-examines-nothing",
    ),
    pytest.param(
        XFF,
        LB,
        LB_PEER,
        2,
        ["198.51.100.7", "10.0.0.2", "10.0.0.3"],
        ip("10.0.0.2"),
        id="spec-max-hops-counts-across-lines",
    ),
    pytest.param(
        XFF,
        LB,
        LB_PEER,
        2,
        ["198.51.100.7,,, ,10.0.0.3"],
        ip("198.51.100.7"),
        id="spec-max-hops-does-not-count-empty-entries",
    ),
    pytest.param(
        FWD,
        LB,
        LB_PEER,
        2,
        ["for=198.51.100.7, for=10.0.0.2, for=10.0.0.3"],
        ip("10.0.0.2"),
        id="spec-max-hops-forwarded",
    ),
]


@pytest.mark.parametrize(("header", "trusted", "peer", "max_hops", "lines", "expected"), MAX_HOPS)
def test_max_hops(
    *,
    header: ClientIpHeader,
    trusted: tuple[str, ...],
    peer: str,
    max_hops: int,
    lines: list[str],
    expected: IPAddress,
) -> None:
    _assert_same(_rule(trusted, header, max_hops).client_ip(peer, lines), expected)


# --------------------------------------------------------------------------------------
# IPv4-mapped IPv6 addresses are IPv4 addresses
# --------------------------------------------------------------------------------------

MAPPED = [
    pytest.param(
        XFF,
        "::ffff:10.0.0.9",
        ["198.51.100.7"],
        ip("198.51.100.7"),
        id="spec-mapped-peer-is-trusted-by-ipv4-network",
    ),
    pytest.param(
        XFF, "::ffff:10.0.0.9", [], ip("10.0.0.9"), id="spec-mapped-peer-returned-as-ipv4"
    ),
    pytest.param(
        XFF, "::FFFF:a00:9", [], ip("10.0.0.9"), id="spec-mapped-peer-hex-form-upper-case"
    ),
    pytest.param(
        XFF,
        LB_PEER,
        ["::ffff:198.51.100.7"],
        ip("198.51.100.7"),
        id="spec-mapped-xff-entry-returned-as-ipv4",
    ),
    pytest.param(
        XFF,
        LB_PEER,
        ["198.51.100.7, ::ffff:10.0.0.2"],
        ip("198.51.100.7"),
        id="spec-mapped-xff-hop-trusted-by-ipv4-network",
    ),
    pytest.param(
        XFF,
        LB_PEER,
        ["[::ffff:198.51.100.7]:443"],
        ip("198.51.100.7"),
        id="spec-mapped-xff-bracketed-with-port",
    ),
    pytest.param(
        XFF,
        LB_PEER,
        ["198.51.100.7, [::ffff:10.0.0.2]"],
        ip("198.51.100.7"),
        id="spec-mapped-xff-bracketed-trusted-hop",
    ),
    pytest.param(
        FWD,
        LB_PEER,
        ['for="[::ffff:198.51.100.7]"'],
        ip("198.51.100.7"),
        id="spec-mapped-forwarded-node",
    ),
    pytest.param(
        FWD,
        LB_PEER,
        ['for=198.51.100.7, for="[::ffff:10.0.0.2]:8080"'],
        ip("198.51.100.7"),
        id="spec-mapped-forwarded-trusted-hop",
    ),
    # uvicorn's "dual" ::11.22.33.44 is IPv4-compatible, not IPv4-mapped: it stays IPv6.
    pytest.param(
        XFF,
        LB_PEER,
        ["::11.22.33.44"],
        ip("::b16:212c"),
        id="uvicorn-ipv4-compatible-is-not-mapped",
    ),
]


@pytest.mark.parametrize(("header", "peer", "lines", "expected"), MAPPED)
def test_ipv4_mapped_addresses_are_normalised(
    header: ClientIpHeader, peer: str, lines: list[str], expected: IPAddress
) -> None:
    _assert_same(_rule(LB, header).client_ip(peer, lines), expected)


# --------------------------------------------------------------------------------------
# The peer itself: None, garbage, unix sockets
# --------------------------------------------------------------------------------------

PEERS = [
    pytest.param(LB, None, None, id="spec-no-peer"),
    pytest.param(LB, "", None, id="spec-empty-peer"),
    pytest.param(LB, "unix:/run/georouter.sock", None, id="spec-unix-socket-peer"),
    # uvicorn test_forwarded_hosts literals: never addresses, so never trusted.
    pytest.param(LB, "/foo/bar", None, id="uvicorn-literal-path"),
    pytest.param(LB, "unix:///foo/bar", None, id="uvicorn-literal-unix-url"),
    pytest.param(LB, "some-literal", None, id="uvicorn-literal-name"),
    pytest.param(LB, "*", None, id="uvicorn-literal-star"),
    pytest.param(LB, "10.0.0.1:8080", None, id="spec-peer-with-port"),
    pytest.param(LB, "[::1]", None, id="spec-bracketed-peer"),
    pytest.param(LB, "fe80::1%eth0", None, id="spec-peer-with-zone-id"),
    pytest.param(LB, " 10.0.0.1", None, id="spec-peer-with-whitespace"),
    pytest.param(LB, "localhost", None, id="spec-peer-hostname"),
    pytest.param((), "garbage", None, id="spec-garbage-peer-no-trust"),
    pytest.param((), "192.0.2.1", ip("192.0.2.1"), id="spec-default-rule-returns-peer"),
    pytest.param((), "2001:DB8::1", ip("2001:db8::1"), id="spec-default-rule-ipv6-peer"),
    pytest.param((), None, None, id="spec-default-rule-no-peer"),
]


@pytest.mark.parametrize(("trusted", "peer", "expected"), PEERS)
def test_peer_edge_cases(
    trusted: tuple[str, ...], peer: str | None, expected: IPAddress | None
) -> None:
    for header in (XFF, FWD):
        lines = ["198.51.100.7"] if header is XFF else ["for=198.51.100.7"]
        _assert_same(_rule(trusted, header).client_ip(peer, lines), expected)


# --------------------------------------------------------------------------------------
# Trust membership: uvicorn's _TrustedHosts table, observed through client_ip
# --------------------------------------------------------------------------------------

_UV_V4_ADDRS = ("127.0.0.1/32", "10.0.0.1/32")
_UV_V6_ADDRS = (
    "2001:db8::/128",
    "2001:0db8:0001:0000:0000:0ab9:C0A8:0102/128",
    "2001:db8:3333:4444:5555:6666:1.2.3.4/128",
    "::11.22.33.44/128",
)
_UV_V4_NETS = ("127.0.0.0/8", "10.0.0.0/8")
_UV_V6_NETS = ("2001:db8:abcd:0012::0/64",)

MEMBERSHIP = [
    pytest.param(_UV_V4_ADDRS, "127.0.0.1", True, id="uvicorn-v4-addrs-127.0.0.1"),
    pytest.param(_UV_V4_ADDRS, "127.0.0.0", False, id="uvicorn-v4-addrs-127.0.0.0"),
    pytest.param(_UV_V4_ADDRS, "10.0.0.1", True, id="uvicorn-v4-addrs-10.0.0.1"),
    pytest.param(_UV_V4_ADDRS, "10.1.1.1", False, id="uvicorn-v4-addrs-10.1.1.1"),
    pytest.param(_UV_V4_ADDRS, "::1", False, id="uvicorn-v4-addrs-ipv6-loopback"),
    pytest.param(_UV_V6_ADDRS, "2001:db8::", True, id="uvicorn-v6-addrs-2001:db8::"),
    pytest.param(
        _UV_V6_ADDRS, "2001:db8:3333:4444:5555:6666:102:304", True, id="uvicorn-v6-addrs-dual"
    ),
    pytest.param(_UV_V6_ADDRS, "::b16:212c", True, id="uvicorn-v6-addrs-dual-compat"),
    pytest.param(_UV_V6_ADDRS, "::1", False, id="uvicorn-v6-addrs-::1"),
    pytest.param(_UV_V6_ADDRS, "127.0.0.1", False, id="uvicorn-v6-addrs-ipv4"),
    pytest.param(_UV_V6_ADDRS, "2001:db8:abcd:0012::0", False, id="uvicorn-v6-addrs-other-v6"),
    pytest.param(_UV_V4_NETS, "127.255.255.255", True, id="uvicorn-v4-nets-127-broadcast"),
    pytest.param(_UV_V4_NETS, "10.255.255.255", True, id="uvicorn-v4-nets-10-broadcast"),
    pytest.param(_UV_V4_NETS, "192.168.0.1", False, id="uvicorn-v4-nets-192.168.0.1"),
    pytest.param(_UV_V4_NETS, "a:b:c:d::", False, id="uvicorn-v4-nets-ipv6"),
    pytest.param(_UV_V6_NETS, "2001:db8:abcd:0012::0", True, id="uvicorn-v6-nets-network-address"),
    pytest.param(_UV_V6_NETS, "2001:db8:abcd:0012::1:1", True, id="uvicorn-v6-nets-member"),
    pytest.param(_UV_V6_NETS, "2001:db8::", False, id="uvicorn-v6-nets-outside"),
    pytest.param(_UV_V6_NETS, "10.0.0.1", False, id="uvicorn-v6-nets-ipv4"),
    pytest.param(EVERYTHING, "1.1.1.1", True, id="uvicorn-everything-ipv4"),
    pytest.param(EVERYTHING, "::a:b:c:d", True, id="uvicorn-everything-ipv6"),
    pytest.param((), "1.1.1.1", False, id="uvicorn-nothing-ipv4"),
    pytest.param((), "::", False, id="uvicorn-nothing-ipv6-any"),
]


@pytest.mark.parametrize(("trusted", "peer", "is_trusted"), MEMBERSHIP)
def test_trust_membership(trusted: tuple[str, ...], peer: str, is_trusted: bool) -> None:
    # A trusted peer hands over to the (untrusted) header entry; an untrusted one does not.
    expected = ip("203.0.113.200") if is_trusted else ip(peer)
    _assert_same(_rule(trusted).client_ip(peer, ["203.0.113.200"]), expected)
    assert _rule(trusted).is_trusted(ip(peer)) is is_trusted


# --------------------------------------------------------------------------------------
# The parsers
# --------------------------------------------------------------------------------------

PARSE_ADDRESS = [
    pytest.param("192.0.2.1", ip("192.0.2.1"), id="ipv4"),
    pytest.param("0.0.0.0", ip("0.0.0.0"), id="ipv4-unspecified"),
    pytest.param("2001:db8::1", ip("2001:db8::1"), id="ipv6"),
    pytest.param("2001:DB8:0:0:0:0:0:1", ip("2001:db8::1"), id="ipv6-long-upper-case"),
    pytest.param("::", ip("::"), id="ipv6-unspecified"),
    pytest.param("::ffff:10.0.0.9", ip("10.0.0.9"), id="ipv4-mapped-normalised"),
    pytest.param("::ffff:a00:9", ip("10.0.0.9"), id="ipv4-mapped-hex-normalised"),
    pytest.param(
        "0000:0000:0000:0000:0000:ffff:192.168.100.200",
        ip("192.168.100.200"),
        id="ipv4-mapped-longest-form-45-chars",
    ),
    pytest.param("::192.0.2.1", ip("::c000:201"), id="ipv4-compatible-not-normalised"),
    pytest.param("fe80::1%eth0", None, id="zone-id"),
    pytest.param("fe80::1%25eth0", None, id="zone-id-percent-encoded"),
    pytest.param("01.2.3.4", None, id="leading-zero"),
    pytest.param("256.0.0.1", None, id="octet-out-of-range"),
    pytest.param("1.2.3", None, id="three-octets"),
    pytest.param("", None, id="empty"),
    pytest.param(" 1.2.3.4", None, id="leading-space"),
    pytest.param("[2001:db8::1]", None, id="brackets"),
    pytest.param("1.2.3.4:80", None, id="port"),
    pytest.param("unknown", None, id="unknown"),
    pytest.param("<script>", None, id="script"),
    pytest.param("\u0661.\u0662.\u0663.\u0664", None, id="arabic-indic-digits"),
    pytest.param("1" * 46, None, id="too-long"),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_ADDRESS)
def test_parse_address(text: str, expected: IPAddress | None) -> None:
    _assert_same(parse_address(text), expected)


PARSE_XFF_ENTRY = [
    pytest.param("192.0.2.1", ip("192.0.2.1"), id="ipv4"),
    pytest.param(" 192.0.2.1\t", ip("192.0.2.1"), id="ipv4-ows"),
    pytest.param("192.0.2.1:8080", ip("192.0.2.1"), id="ipv4-port"),
    pytest.param("192.0.2.1:0", ip("192.0.2.1"), id="ipv4-port-0"),
    pytest.param("192.0.2.1:65535", ip("192.0.2.1"), id="ipv4-port-max"),
    pytest.param("192.0.2.1:65536", None, id="ipv4-port-too-big"),
    pytest.param("192.0.2.1:", None, id="ipv4-empty-port"),
    pytest.param("192.0.2.1:-1", None, id="ipv4-negative-port"),
    pytest.param("192.0.2.1:+80", None, id="ipv4-signed-port"),
    pytest.param("192.0.2.1:\u0668\u0660", None, id="ipv4-arabic-indic-port"),
    pytest.param("192.0.2.1:80:90", None, id="ipv4-two-ports"),
    pytest.param("2001:db8::1", ip("2001:db8::1"), id="bare-ipv6"),
    pytest.param("[2001:db8::1]", ip("2001:db8::1"), id="bracketed-ipv6"),
    pytest.param("[2001:db8::1]:443", ip("2001:db8::1"), id="bracketed-ipv6-port"),
    pytest.param("[2001:db8::1]:", None, id="bracketed-ipv6-empty-port"),
    pytest.param("[2001:db8::1]443", None, id="bracketed-ipv6-port-without-colon"),
    pytest.param("2001:db8::1]", None, id="ipv6-stray-close-bracket"),
    pytest.param("[]", None, id="empty-brackets"),
    pytest.param("[192.0.2.1]", None, id="bracketed-ipv4"),
    pytest.param("[192.0.2.1]:80", None, id="bracketed-ipv4-port"),
    pytest.param("::ffff:10.0.0.9", ip("10.0.0.9"), id="bare-mapped"),
    pytest.param("[::ffff:10.0.0.9]:80", ip("10.0.0.9"), id="bracketed-mapped-port"),
    pytest.param("_hidden", None, id="obfuscated"),
    pytest.param('"192.0.2.1"', None, id="quoted"),
    pytest.param("192.0.2.1%eth0", None, id="ipv4-zone"),
]


@pytest.mark.parametrize(("entry", "expected"), PARSE_XFF_ENTRY)
def test_parse_xff_entry(entry: str, expected: IPAddress | None) -> None:
    _assert_same(parse_xff_entry(entry), expected)


# Nodes as they are after unquoting (RFC 7239 section 6).
PARSE_FORWARDED_NODE = [
    pytest.param("192.0.2.43", ip("192.0.2.43"), id="rfc7239-s6-ipv4"),
    pytest.param("192.0.2.43:47011", ip("192.0.2.43"), id="rfc7239-s6.1-ipv4-port"),
    pytest.param("[2001:db8:cafe::17]", ip("2001:db8:cafe::17"), id="rfc7239-s6-ipv6"),
    pytest.param("[2001:db8:cafe::17]:4711", ip("2001:db8:cafe::17"), id="rfc7239-s4-ipv6-port"),
    pytest.param("192.0.2.43:_obf", ip("192.0.2.43"), id="rfc7239-s6.3-obfuscated-port"),
    pytest.param(
        "[2001:db8:cafe::17]:_p.x-1_",
        ip("2001:db8:cafe::17"),
        id="rfc7239-s6.3-obfuscated-port-all-chars",
    ),
    pytest.param("127.0.0.2:_id", ip("127.0.0.2"), id="haproxy-7239-ipv4-obfuscated-port"),
    pytest.param("[::1]:_id", ip("::1"), id="haproxy-7239-ipv6-obfuscated-port"),
    pytest.param("[::1]:3", ip("::1"), id="haproxy-7239-ipv6-port"),
    pytest.param("[::1]:", None, id="haproxy-7239-ipv6-empty-port"),
    pytest.param("unknown", None, id="rfc7239-s6.2-unknown"),
    pytest.param("unknown:132", None, id="haproxy-7239-unknown-with-port"),
    pytest.param("_gazonk", None, id="rfc7239-s4-obfuscated"),
    pytest.param("_hidden", None, id="rfc7239-s6.3-hidden"),
    pytest.param("_SEVKISEK", None, id="rfc7239-s6.3-sevkisek"),
    pytest.param("2001:db8::1", None, id="ipv6-without-brackets"),
    pytest.param("[192.0.2.43]", None, id="bracketed-ipv4"),
    pytest.param("192.0.2.43:", None, id="ipv4-empty-port"),
    pytest.param("192.0.2.43:_", None, id="obfuscated-port-empty"),
    pytest.param("192.0.2.43:_a b", None, id="obfuscated-port-with-space"),
    pytest.param("192.0.2.43:70000", None, id="port-out-of-range"),
    pytest.param("[fe80::1%25eth0]", None, id="zone-id"),
    pytest.param("[::ffff:192.0.2.9]", ip("192.0.2.9"), id="bracketed-mapped"),
    pytest.param("01.2.3.4", None, id="leading-zero"),
    pytest.param("", None, id="empty"),
    pytest.param("[2001:db8::1]x", None, id="trailing-garbage"),
]


@pytest.mark.parametrize(("node", "expected"), PARSE_FORWARDED_NODE)
def test_parse_forwarded_node(node: str, expected: IPAddress | None) -> None:
    _assert_same(parse_forwarded_node(node), expected)


# --------------------------------------------------------------------------------------
# Property: garbage in, the peer or an address from the header out, never an exception
# --------------------------------------------------------------------------------------

# hypothesis is not installed in the venv, so the garbage is a fixed list from a seeded
# random.Random(7): 2000 samples of one to three header lines built from well-formed
# entries, mutated entries, hostile atoms and noise from a hostile alphabet.
_ATOMS = [
    "1.2.3.4",
    "10.0.0.7",
    "192.0.2.60",
    "198.51.100.17",
    "2001:db8::1",
    "2001:db8:cafe::17",
    "::ffff:192.0.2.9",
    "::ffff:10.0.0.9",
    "fd00::5",
    "fe80::1%eth0",
    "::1",
    "01.2.3.4",
    "256.1.1.1",
    "unknown",
    "_hidden",
    "for=",
    "For=",
    "by=",
    "proto=https",
    "host=",
    ":80",
    ":70000",
    ":_obf",
    "<script>",
    "::",
    "0x7f.1",
    "1e3",
    "\\",
    '"',
    "[",
    "]",
]
_HOSTILE = ' \t,;="\\[]:._%-0123456789abcdefABCDEFxX/<>\x00\x7f\xff\u00e9\u0661\u200b\r\n'
_GOOD_V4 = ["1.2.3.4", "10.0.0.7", "192.0.2.60", "198.51.100.17", "::ffff:192.0.2.9"]
_GOOD_V6 = ["2001:db8::1", "2001:db8:cafe::17", "fd00::5", "::1", "::ffff:10.0.0.9"]


def _well_formed(rng: random.Random) -> str:
    v4, v6 = rng.choice(_GOOD_V4), rng.choice(_GOOD_V6)
    return rng.choice(
        (
            v4,
            f"{v4}:8080",
            v6,
            f"[{v6}]",
            f"[{v6}]:443",  # X-Forwarded-For shapes
            f"for={v4}" if "::" not in v4 else f'for="[{v4}]"',  # Forwarded shapes
            f'for="{v4}:80";proto=https' if "::" not in v4 else f'For="[{v4}]:_x"',
            f'for="[{v6}]"',
            f'by=_b;for="[{v6}]:_p";host="a,b"',
        )
    )


def _garbage(rng: random.Random) -> list[str]:
    """One to three header lines of list elements: some well-formed, some mutated, some noise."""

    def noise(n: int) -> str:
        return "".join(rng.choice(_HOSTILE) for _ in range(n))

    def element() -> str:
        r = rng.random()
        if r < 0.4:
            return _well_formed(rng)
        if r < 0.65:
            good = _well_formed(rng)
            i = rng.randint(0, len(good))
            return good[:i] + noise(rng.randint(1, 2)) + good[i + rng.randint(0, 2) :]
        if r < 0.85:
            return rng.choice(_ATOMS)
        return noise(rng.randint(1, 6))

    def line() -> str:
        seps = (",", ",", ",", ", ", ", ", ",,", ";", " ", '"')
        return rng.choice(seps).join(element() for _ in range(rng.randint(0, 6)))

    return [line() for _ in range(rng.choice((1, 1, 1, 2, 3)))]


_RUN = re.compile(r"[0-9A-Fa-f.:]+")


def _addresses_in(text: str) -> set[IPAddress]:
    """Every address spelled by a substring of ``text`` (normalised as the parsers do)."""
    found: set[IPAddress] = set()
    for run in _RUN.findall(text):
        for i in range(len(run)):
            for j in range(i + 2, min(len(run), i + 45) + 1):
                addr = parse_address(run[i:j])
                if addr is not None:
                    found.add(addr)
    return found


_PROPERTY_RULES = [
    (XFF, EVERYTHING, "10.0.0.1"),
    (XFF, LB, "10.0.0.1"),
    (XFF, LB, "fd00::1"),
    (XFF, LB, "203.0.113.1"),
    (FWD, EVERYTHING, "10.0.0.1"),
    (FWD, LB, "10.0.0.1"),
    (FWD, LB, "fd00::1"),
    (FWD, LB, "203.0.113.1"),
]


def test_random_garbage_yields_the_peer_or_an_address_from_the_header() -> None:
    rng = random.Random(7)
    samples = [_garbage(rng) for _ in range(2000)]
    rules = [(_rule(t, h), ip(p), p) for h, t, p in _PROPERTY_RULES]
    problems: list[str] = []
    for lines in samples:
        joined = "\n".join(lines)
        # Forwarded quoted-pairs are unescaped, so "1.2\.3.4" legitimately yields 1.2.3.4.
        spelled: set[IPAddress] | None = None
        for rule, peer_addr, peer in rules:
            got = rule.client_ip(peer, lines)  # must not raise
            if got == peer_addr and type(got) is type(peer_addr):
                continue
            if not rule.is_trusted(peer_addr):
                problems.append(f"{rule.header} {peer} {lines!r}: untrusted peer gave {got}")
                continue
            if spelled is None:
                spelled = _addresses_in(joined) | _addresses_in(joined.replace("\\", ""))
            if got is None or got not in spelled:
                problems.append(f"{rule.header} {peer} {lines!r}: {got} is not in the header")
            elif isinstance(got, ipaddress.IPv6Address) and got.ipv4_mapped is not None:
                problems.append(f"{rule.header} {peer} {lines!r}: {got} not normalised")
    assert not problems, "\n".join(problems[:20])
    # The corpus must actually exercise the walk, not only fall back to the peer.
    hits = sum(
        rule.client_ip(peer, lines) != peer_addr
        for lines in samples
        for rule, peer_addr, peer in rules
    )
    assert hits > 1000
