"""The OpenAPI description of the tenant home operations (``http.tenantadmin``)."""

from __future__ import annotations

from typing import Any

from georouter.core.tenants import TENANT_ID_RULE
from georouter.http.openapi_parts import AUTH_FAILED, LOCKED_OUT, TENANT_ID, TENANT_VIEW, reply

_ID = {
    "name": "tenant_id",
    "in": "path",
    "required": True,
    "schema": TENANT_ID,
    "description": f"the tenant id: {TENANT_ID_RULE} (anything else is a 400)",
}
_TENANT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "home", "source", "applied", "runtime", "config"],
    "properties": {
        **TENANT_VIEW,
        "runtime": {
            "type": ["object", "null"],
            "description": "the home set through this API (it wins over the config's)",
            "required": ["cluster", "since", "by"],
            "properties": {
                "cluster": {"type": "string"},
                "since": {"type": "number", "description": "Unix seconds"},
                "by": {"type": "string", "description": "the peer address that set it"},
                "ignored": {"type": "string", "description": "when it names no cluster now"},
            },
        },
        "config": {"type": ["string", "null"], "description": "the [[tenants.homes]] cluster"},
    },
}


def _common(not_found: str) -> dict[str, Any]:
    return {
        "400": reply("Error", "a malformed tenant id (invalid_parameter) or body"),
        "401": AUTH_FAILED,
        "403": reply("Error", "the admin API is off (no token configured)"),
        "404": reply("Error", not_found),
        "429": LOCKED_OUT,
    }


_UNAVAILABLE = {"503": reply("Error", "Redis did not answer")}

TENANT_PATHS: dict[str, Any] = {
    "/v1/tenants": {
        "get": {
            "summary": "Every tenant with a home cluster, run-time or configured (admin)",
            "security": [{"admin": []}],
            "responses": {
                "200": reply(
                    {
                        "type": "object",
                        "required": ["tenants"],
                        "properties": {"tenants": {"type": "array", "items": _TENANT}},
                    },
                    "the tenants, by id",
                ),
                "401": AUTH_FAILED,
                "403": reply("Error", "the admin API is off (no token configured)"),
                "429": LOCKED_OUT,
            },
        }
    },
    "/v1/tenants/{tenant_id}": {
        "parameters": [_ID],
        "get": {
            "summary": "A tenant's home cluster and where it comes from (admin)",
            "security": [{"admin": []}],
            "responses": {
                "200": reply(_TENANT, "its home"),
                **_common("the tenant has no home (no_home), or the id holds a '/'"),
            },
        },
        "put": {
            "summary": "Set a tenant's home cluster on every edge (admin); it wins over"
            " [[tenants.homes]]",
            "security": [{"admin": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["cluster"],
                            "properties": {"cluster": {"type": "string"}},
                        }
                    }
                },
            },
            "responses": {
                "200": reply(_TENANT, "its home now"),
                **_common("no cluster has that name (unknown_cluster), or the id holds a '/'"),
                "409": reply("Error", "too many tenants have run-time homes (too_many_homes)"),
                "413": reply("Error", "a body over 4 KiB"),
                **_UNAVAILABLE,
            },
        },
        "delete": {
            "summary": "Delete a tenant's run-time home on every edge (admin); its"
            " configured home, if any, applies again",
            "security": [{"admin": []}],
            "responses": {
                "200": reply(
                    {
                        "type": "object",
                        "required": [*_TENANT["required"], "was_set"],
                        "properties": {**_TENANT["properties"], "was_set": {"type": "boolean"}},
                    },
                    "what holds now, and whether a run-time home was deleted",
                ),
                **_common("the id holds a '/'"),
                **_UNAVAILABLE,
            },
        },
    },
}
