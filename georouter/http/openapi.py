"""The OpenAPI 3.1 description served at ``/openapi.json``.

It says what the server does, and ``tests/test_openapi_conformance.py`` runs
Schemathesis against it: every parameter's accepted values, every status code
an operation answers, and nothing that is not served.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from georouter.core.tenants import TENANT_ID_RULE
from georouter.http.openapi_clusters import CLUSTER_PATHS
from georouter.http.openapi_parts import (
    ADDRESS,
    AUTH_FAILED,
    CONFIG_STATUS,
    DECISION,
    ERROR,
    EXPLAIN,
    FLAG_SCHEMA,
    LOCATION,
    LOCKED_OUT,
    RELOAD_OUTCOME,
    SESSION_ID,
    SESSION_PIN,
    SESSION_RULE,
    SIGNED_SESSION_ID_PATTERN,
    TENANT_ID,
    reply,
)
from georouter.http.openapi_tenants import TENANT_PATHS

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "georouter",
        "version": "1",
        "description": "Which cluster should serve this client? Geo-aware routing decisions.",
    },
    "paths": {
        "/v1/route": {
            "get": {
                "summary": "Route one client",
                "parameters": [
                    {
                        "name": "ip",
                        "in": "query",
                        "required": False,
                        "schema": ADDRESS,
                        "description": (
                            "client address, IPv4 or IPv6 (no zone id, no port); anything"
                            " else, the empty string included, is a 400. Default: the"
                            " request's own client"
                        ),
                    },
                    {
                        "name": "session",
                        "in": "query",
                        "required": False,
                        "schema": SESSION_ID,
                        "description": (
                            "session id (else the session header, x-session-id by default,"
                            " else the session cookie): " + SESSION_RULE
                        ),
                    },
                    {
                        "name": "tenant",
                        "in": "query",
                        "required": False,
                        "schema": TENANT_ID,
                        "description": (
                            "tenant id (else the [tenants] header, else its cookie), routed"
                            " to the tenant's home cluster: " + TENANT_ID_RULE
                        ),
                    },
                    EXPLAIN,
                ],
                "responses": {
                    "200": reply("Decision", "the decision"),
                    "400": reply(
                        "Error",
                        "a malformed parameter (`parameter` names it), session or tenant header",
                    ),
                    "503": reply(
                        {
                            "anyOf": [
                                {"$ref": "#/components/schemas/Decision"},
                                {"$ref": "#/components/schemas/Error"},
                            ]
                        },
                        "no cluster is routable (a Decision with `error`), or not ready yet",
                    ),
                },
            },
            "post": {
                "summary": "Route a batch of clients (at most 1000)",
                "parameters": [EXPLAIN],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["requests"],
                                "additionalProperties": False,
                                "properties": {
                                    "requests": {
                                        "type": "array",
                                        "maxItems": 1000,
                                        "items": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {
                                                "ip": {
                                                    **ADDRESS,
                                                    "type": ["string", "null"],
                                                    "description": "absent or null: the caller",
                                                },
                                                "session": {
                                                    **SESSION_ID,
                                                    "type": ["string", "null"],
                                                    "description": SESSION_RULE,
                                                },
                                                "tenant": {
                                                    **TENANT_ID,
                                                    "type": ["string", "null"],
                                                    "description": "the client's tenant",
                                                },
                                            },
                                        },
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": reply(
                        {
                            "type": "object",
                            "properties": {
                                "decisions": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Decision"},
                                }
                            },
                        },
                        "the decisions, in the order asked",
                    ),
                    "400": reply("Error", "a malformed body"),
                    "413": reply("Error", "body over 1 MiB"),
                    "503": reply("Error", "not ready yet"),
                },
            },
        },
        "/v1/sessions/{session_id}": {
            "parameters": [
                {
                    "name": "session_id",
                    "in": "path",
                    "required": True,
                    "schema": SESSION_ID,
                    "description": "the session id itself (never a signed cookie value): "
                    + SESSION_RULE.split(". With", 1)[0]
                    + "; it may contain `/`",
                }
            ],
            "get": {
                "summary": "A session's pin (admin: Authorization: Bearer $GEOROUTER_ADMIN_TOKEN)",
                "security": [{"admin": []}],
                "responses": {
                    "200": reply(SESSION_PIN, "the pin, when it was made and its TTL left"),
                    "400": reply("Error", "a malformed session id (invalid_parameter)"),
                    "401": AUTH_FAILED,
                    "403": reply("Error", "the admin API is off (no token configured)"),
                    "404": reply("Error", "no such session, or sessions are off on this edge"),
                    "429": LOCKED_OUT,
                    "503": reply("Error", "Redis did not answer"),
                },
            },
            "delete": {
                "summary": "Forget a session on every edge (admin)",
                "security": [{"admin": []}],
                "responses": {
                    "200": reply(
                        {
                            "type": "object",
                            "required": ["id", "forgotten"],
                            "properties": {
                                "id": {"type": "string"},
                                "forgotten": {"const": True},
                            },
                        },
                        "forgotten (whether or not it was pinned)",
                    ),
                    "400": reply("Error", "a malformed session id (invalid_parameter)"),
                    "401": AUTH_FAILED,
                    "403": reply("Error", "the admin API is off (no token configured)"),
                    "404": reply("Error", "sessions are off on this edge"),
                    "429": LOCKED_OUT,
                    "503": reply("Error", "Redis did not answer"),
                },
            },
        },
        "/v1/config": {
            "get": {
                "summary": "The running configuration file, its load time, the last reload (admin)",
                "security": [{"admin": []}],
                "responses": {
                    "200": reply(CONFIG_STATUS, "the running file"),
                    "401": AUTH_FAILED,
                    "403": reply("Error", "the admin API is off (no token configured)"),
                    "404": reply("Error", "this edge was not started from a file"),
                    "429": LOCKED_OUT,
                },
            }
        },
        "/v1/config/reload": {
            "post": {
                "summary": "Read the configuration file again and apply it whole (admin)",
                "security": [{"admin": []}],
                "parameters": [
                    {
                        "name": "dry_run",
                        "in": "query",
                        "required": False,
                        "schema": FLAG_SCHEMA,
                        "allowEmptyValue": True,
                        "description": (
                            "1: say what the file would change, apply nothing; if it would"
                            " apply, also its `impact` here: the sessions it would move and"
                            " the share of recent clients it would send to another cluster"
                        ),
                    }
                ],
                "responses": {
                    "200": reply(RELOAD_OUTCOME, "applied, unchanged, or (dry run) would apply"),
                    "400": reply("Error", "a malformed dry_run"),
                    "401": AUTH_FAILED,
                    "403": reply("Error", "the admin API is off (no token configured)"),
                    "404": reply("Error", "this edge was not started from a file"),
                    "422": reply(
                        RELOAD_OUTCOME, "invalid, or changes a key only a restart applies"
                    ),
                    "429": LOCKED_OUT,
                },
            }
        },
        "/v1/clusters": {
            "get": {
                "summary": "The clusters, their health, and the GeoIP database in use",
                "responses": {
                    "200": reply(
                        {
                            "type": "object",
                            "required": ["clusters", "geoip", "sessions", "warnings"],
                            "properties": {
                                "clusters": {
                                    "type": "array",
                                    "items": {"type": "object"},
                                    "description": "each cluster's local health, ejection,"
                                    " drain and override, whether a new session may go"
                                    " there, and `shared`: with `[health] shared`, the"
                                    " edges' verdict (up, down, down_from_here) and each"
                                    " reporting edge's view (edge, state, age_s); null when"
                                    " off",
                                },
                                "geoip": {"type": "object"},
                                "sessions": {"type": ["object", "null"]},
                                "policy": {"type": "object"},
                                "warnings": {"type": "array", "items": {"type": "string"}},
                                "shared_health": {
                                    "type": ["object", "null"],
                                    "description": "whether health is shared, this edge's"
                                    " id, the quorum, and whether Redis answers (when it"
                                    " does not, this edge's own view decides)",
                                },
                            },
                        },
                        "clusters",
                    )
                },
            }
        },
        **CLUSTER_PATHS,
        **TENANT_PATHS,
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "responses": {
                    "200": reply(
                        {"type": "object", "properties": {"status": {"const": "ok"}}}, "alive"
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: GeoIP open and the first round of health checks done",
                "responses": {
                    "200": reply({"type": "object"}, "ready"),
                    "503": reply({"type": "object"}, "not ready yet"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "text exposition format 0.0.4, or OpenMetrics 1.0"
                        " when Accept asks for application/openmetrics-text",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This description",
                "responses": {"200": reply({"type": "object"}, "OpenAPI 3.1")},
            }
        },
    },
    "components": {
        "schemas": {"Decision": DECISION, "Location": LOCATION, "Error": ERROR},
        "securitySchemes": {
            "admin": {
                "type": "http",
                "scheme": "bearer",
                "description": "the edge's GEOROUTER_ADMIN_TOKEN",
            }
        },
    },
}


@functools.lru_cache(maxsize=8)
def spec_for(*, query_signed: bool) -> dict[str, Any]:
    """``SPEC`` as one edge serves it: with ``query_signed`` (session keys set and the
    query not in ``unsigned_sources``), the ``session`` query parameter and batch
    field take only signed ids. Callers must not modify the answer."""
    if not query_signed:
        return SPEC
    spec = copy.deepcopy(SPEC)
    signed = {
        "pattern": SIGNED_SESSION_ID_PATTERN,
        "description": "`<id>.<signature>` as georouter signs it (a bad signature is a 400)",
    }
    route = spec["paths"]["/v1/route"]
    for parameter in route["get"]["parameters"]:
        if parameter["name"] == "session":
            parameter["schema"] = {**parameter["schema"], **signed}
    body = route["post"]["requestBody"]["content"]["application/json"]["schema"]
    item = body["properties"]["requests"]["items"]["properties"]
    item["session"] = {**item["session"], **signed}
    return spec
