"""The ``[tenants]`` table of ``clusters.toml``: where a request names its tenant, and
the tenants' home clusters (``[[tenants.homes]]``).

Read after ``[[clusters]]`` (a home names one of the clusters the operator
wrote) and after ``[sessions]`` and ``[router]``, whose header and cookie names a
tenant's must not reuse: one value read as two things would route by whichever
reader came first.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from georouter.config.model import (
    TENANT_ID_PATTERN,
    ClientIpHeader,
    SessionSettings,
    TenantHome,
    TenantSettings,
)
from georouter.config.sections import HEADERS_TAKEN
from georouter.config.values import (
    HTTP_TOKEN,
    Invalid,
    Section,
    matching,
    quoted,
    string,
    type_name,
)
from georouter.errors import Problem

# More homes than this belong in Redis (the admin API), not in a file read at every reload.
MAX_CONFIG_HOMES = 10_000

tenant_id = matching(
    TENANT_ID_PATTERN,
    "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
)
_token = matching(HTTP_TOKEN, "must be an HTTP token (letters, digits, !#$%&'*+.^_`|~-)")


def _header(
    client_ip_header: ClientIpHeader, session_header: str
) -> Callable[[Any], str | Invalid]:
    def check(value: Any) -> str | Invalid:
        name = _token(value)
        if isinstance(name, Invalid):
            return name
        name = name.lower()
        if name == client_ip_header.value:
            return Invalid(f"{name!r} is router.client_ip_header; use a header of its own")
        if name == session_header:
            return Invalid(f"{name!r} is sessions.header; use a header of its own")
        if name in HEADERS_TAKEN:
            return Invalid(
                f"{name!r} already has a meaning in HTTP; use a header of its own,"
                " such as 'x-tenant'"
            )
        return name

    return check


def _cookie(session_cookie: str) -> Callable[[Any], str | Invalid]:
    def check(value: Any) -> str | Invalid:
        name = _token(value)
        if isinstance(name, Invalid) or name != session_cookie:
            return name
        return Invalid(f"{name!r} is sessions.cookie; use a cookie of its own")

    return check


def parse_tenants(
    table: Any,
    names: Collection[str],
    problems: list[Problem],
    *,
    sessions: SessionSettings,
    client_ip_header: ClientIpHeader,
) -> TenantSettings:
    if table is None:
        return TenantSettings()
    t = Section(table, "tenants", problems)
    header = t.get("header", _header(client_ip_header, sessions.header), None)
    cookie = t.get("cookie", _cookie(sessions.cookie), None)
    if "header" not in t.table and "cookie" not in t.table and isinstance(table, Mapping):
        t.problem("", "needs header or cookie (or both): where a request names its tenant")
    t.seen.add("homes")
    homes = _homes(t.table.get("homes", []), names, problems)
    t.finish()
    return TenantSettings(header=header, cookie=cookie, homes=homes)


def _homes(value: Any, names: Collection[str], problems: list[Problem]) -> tuple[TenantHome, ...]:
    if not isinstance(value, list):
        shown = type_name(value)
        problems.append(
            Problem("tenants.homes", f"must be an array of [[tenants.homes]] tables, not {shown}")
        )
        return ()
    if len(value) > MAX_CONFIG_HOMES:
        problems.append(
            Problem(
                "tenants.homes",
                f"holds {len(value)} homes; at most {MAX_CONFIG_HOMES} (set more through"
                " the admin API: PUT /v1/tenants/ID)",
            )
        )
        return ()
    homes: list[TenantHome] = []
    first_at: dict[str, int] = {}
    for i, raw in enumerate(value):
        s = Section(raw, f"tenants.homes[{i}]", problems)
        before = len(problems)
        tenant = s.get("tenant", tenant_id, "", required=True)
        if tenant in first_at:
            s.problem(
                "tenant",
                f"duplicate tenant {quoted(tenant)} (first at tenants.homes[{first_at[tenant]}])",
            )
        elif tenant:
            first_at[tenant] = i
        cluster = s.get("cluster", string, "", required=True)
        if s.valid("cluster") and "cluster" in s.table and cluster not in names:
            known = ", ".join(names) or "none"
            s.problem("cluster", f"no cluster named {quoted(cluster)} (clusters: {known})")
        s.finish()
        if len(problems) == before:
            homes.append(TenantHome(tenant, cluster))
    return tuple(homes)
