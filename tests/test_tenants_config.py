"""``[tenants]`` in clusters.toml: what is accepted, every way it can be wrong (named by
key path), and that all of it reloads without a restart."""

from __future__ import annotations

import tomllib

import pytest

from georouter.config import TenantHome, TenantSettings, compare, parse
from georouter.errors import ConfigError

CLUSTERS = """
[[clusters]]
name = "eu-west"
url = "https://eu.example.net"
lat = 53.35
lon = -6.26

[[clusters]]
name = "us-east"
url = "https://us.example.net"
lat = 38.94
lon = -77.45
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(tomllib.loads(text + CLUSTERS))
    return [str(p) for p in info.value.problems]


def test_without_a_tenants_table_no_request_names_a_tenant() -> None:
    assert parse(tomllib.loads(CLUSTERS)).tenants == TenantSettings()


def test_a_tenants_table_gives_where_tenants_are_named_and_their_homes() -> None:
    config = parse(
        tomllib.loads(
            CLUSTERS
            + """
[tenants]
header = "X-Tenant"
cookie = "tenant"

[[tenants.homes]]
tenant = "acme"
cluster = "eu-west"

[[tenants.homes]]
tenant = "globex.corp_2"
cluster = "us-east"
"""
        )
    )
    assert config.tenants == TenantSettings(
        # Header names are matched in lower case, as HTTP compares them.
        header="x-tenant",
        cookie="tenant",
        homes=(TenantHome("acme", "eu-west"), TenantHome("globex.corp_2", "us-east")),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "[tenants]\n",
            "tenants: needs header or cookie (or both)",
            id="neither_header_nor_cookie",
        ),
        pytest.param("tenants = 3\n", "tenants: must be a table", id="not_a_table"),
        pytest.param(
            '[tenants]\nheader = "x tenant"\n',
            "tenants.header: must be an HTTP token",
            id="header_not_a_token",
        ),
        pytest.param(
            '[tenants]\nheader = "Cookie"\n',
            "tenants.header: 'cookie' already has a meaning in HTTP",
            id="header_taken_by_http",
        ),
        pytest.param(
            '[tenants]\nheader = "X-Forwarded-For"\n',
            "tenants.header: 'x-forwarded-for' is router.client_ip_header",
            id="header_is_the_client_ip_header",
        ),
        pytest.param(
            '[tenants]\nheader = "X-Session-Id"\n',
            "tenants.header: 'x-session-id' is sessions.header",
            id="header_is_the_session_header",
        ),
        pytest.param(
            '[tenants]\ncookie = "georouter_session"\n',
            "tenants.cookie: 'georouter_session' is sessions.cookie",
            id="cookie_is_the_session_cookie",
        ),
        pytest.param(
            '[tenants]\ncookie = "a;b"\n',
            "tenants.cookie: must be an HTTP token",
            id="cookie_not_a_token",
        ),
        pytest.param(
            '[tenants]\ncookie = "t"\nhomes = "acme"\n',
            "tenants.homes: must be an array of [[tenants.homes]] tables, not a string",
            id="homes_not_an_array",
        ),
        pytest.param(
            '[tenants]\ncookie = "t"\nregion = "eu"\n',
            "tenants.region: unknown key",
            id="unknown_key",
        ),
        pytest.param(
            '[tenants]\ncookie = "t"\n[[tenants.homes]]\ncluster = "eu-west"\n',
            "tenants.homes[0].tenant: is required",
            id="home_without_tenant",
        ),
        pytest.param(
            '[tenants]\ncookie = "t"\n[[tenants.homes]]\ntenant = "acme"\n',
            "tenants.homes[0].cluster: is required",
            id="home_without_cluster",
        ),
        pytest.param(
            '[tenants]\ncookie = "t"\n[[tenants.homes]]\ntenant = "acme"\ncluster = "mars"\n',
            "tenants.homes[0].cluster: no cluster named 'mars' (clusters: eu-west, us-east)",
            id="home_names_no_cluster",
        ),
        pytest.param(
            '[tenants]\ncookie = "t"\n[[tenants.homes]]\ntenant = "ac me"\ncluster = "eu-west"\n',
            "tenants.homes[0].tenant: must be 1-64 letters, digits",
            id="tenant_id_with_a_space",
        ),
        pytest.param(
            f'[tenants]\ncookie = "t"\n[[tenants.homes]]\ntenant = "{"a" * 65}"\n'
            'cluster = "eu-west"\n',
            "tenants.homes[0].tenant: must be 1-64 letters, digits",
            id="tenant_id_too_long",
        ),
        pytest.param(
            '[tenants]\ncookie = "t"\n[[tenants.homes]]\ntenant = "-acme"\ncluster = "eu-west"\n',
            "tenants.homes[0].tenant: must be 1-64 letters, digits",
            id="tenant_id_starting_with_a_dash",
        ),
        pytest.param(
            '[tenants]\ncookie = "t"\n'
            '[[tenants.homes]]\ntenant = "acme"\ncluster = "eu-west"\n'
            '[[tenants.homes]]\ntenant = "acme"\ncluster = "us-east"\n',
            "tenants.homes[1].tenant: duplicate tenant 'acme' (first at tenants.homes[0])",
            id="duplicate_tenant",
        ),
        pytest.param(
            '[tenants]\ncookie = "t"\n[[tenants.homes]]\ntenant = "acme"\ncluster = "eu-west"\n'
            "weight = 2\n",
            "tenants.homes[0].weight: unknown key",
            id="unknown_key_in_a_home",
        ),
    ],
)
def test_bad_tenant_tables_are_refused_naming_the_key(text: str, expected: str) -> None:
    found = problems_of(text)
    assert any(p.startswith(expected) for p in found), found


def test_every_tenant_key_reloads_without_a_restart() -> None:
    old = parse(tomllib.loads(CLUSTERS))
    new = parse(
        tomllib.loads(
            CLUSTERS
            + '[tenants]\nheader = "x-tenant"\ncookie = "t"\n'
            + '[[tenants.homes]]\ntenant = "acme"\ncluster = "eu-west"\n'
        )
    )
    change = compare(old, new)
    assert set(change.changed) == {"tenants.header", "tenants.cookie", "tenants.homes"}
    assert change.needs_restart == ()
