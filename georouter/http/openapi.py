"""The OpenAPI 3.1 description served at ``/openapi.json``.

It says what the server does, and ``tests/test_openapi_conformance.py`` runs
Schemathesis against it: every parameter's accepted values, every status code
an operation answers, and nothing that is not served.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from georouter.core.location import LocationSource
from georouter.core.policy import Reason

# What georouter.http.common.flag accepts: empty (a bare `?explain`) is true.
_FLAG_VALUES = ["", "1", "true", "yes", "on", "0", "false", "no", "off"]

_RELOAD_OUTCOME = {
    "type": "object",
    "required": ["result", "version"],
    "properties": {
        "result": {"enum": ["ok", "unchanged", "invalid", "refused"]},
        "version": {"type": "string", "description": "the file's version after this"},
        "dry_run": {"type": "boolean"},
        "change": {"type": "object"},
        "problems": {"type": "array", "items": {"type": "string"}},
    },
}

_CONFIG_STATUS = {
    "type": "object",
    "required": ["path", "version", "loaded_at", "last_reload"],
    "properties": {
        "path": {"type": "string"},
        "version": {"type": "string"},
        "loaded_at": {"type": "number"},
        "last_reload": {"oneOf": [{"type": "null"}, _RELOAD_OUTCOME]},
    },
}

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable code"},
        "message": {"type": "string"},
        "parameter": {"type": "string", "description": "the query parameter at fault"},
        "field": {"type": "string", "description": "the body field at fault"},
    },
}

_LOCATION = {
    "type": ["object", "null"],
    "properties": {
        "lat": {"type": ["number", "null"]},
        "lon": {"type": ["number", "null"]},
        "country": {"type": ["string", "null"], "description": "ISO 3166-1 alpha-2"},
        "accuracy_km": {"type": ["number", "null"]},
        "source": {"type": "string", "enum": [s.value for s in LocationSource]},
    },
}

_DECISION = {
    "type": "object",
    "required": ["cluster", "url", "reason", "client_ip", "location", "distance_km"],
    "properties": {
        "cluster": {"type": ["string", "null"]},
        "url": {"type": ["string", "null"]},
        "reason": {"type": "string", "enum": [r.value for r in Reason]},
        "client_ip": {"type": ["string", "null"]},
        "location": {"$ref": "#/components/schemas/Location"},
        "distance_km": {"type": ["number", "null"]},
        "session": {
            "type": "object",
            "description": "present when the request named a session",
            "properties": {
                "id": {"type": "string"},
                "pinned": {"type": ["string", "null"], "description": "the cluster pinned now"},
                "ttl_s": {"type": ["number", "null"], "description": "sliding TTL left"},
                "degraded": {
                    "type": "boolean",
                    "description": "decided from this edge's memory: Redis did not answer",
                },
            },
        },
        "error": {"type": "string", "enum": ["no_routable_cluster"]},
        "message": {"type": "string"},
        "explain": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "cluster": {"type": "string"},
                    "distance_km": {"type": ["number", "null"]},
                    "chosen": {"type": "boolean"},
                    "why": {"type": "string"},
                },
            },
        },
    },
}


def _json(
    schema: dict[str, Any] | str, description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    answer = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


# georouter.sessions.ids.valid_id: what a session id may be wherever it is given.
SESSION_ID_PATTERN = "^[A-Za-z0-9._~+/=:-]{1,128}$"
_SESSION_ID = {"type": "string", "pattern": SESSION_ID_PATTERN}
# With GEOROUTER_SESSION_KEYS set, a source not in [sessions] unsigned_sources
# takes only `<id>.<signature>`: the id, a dot, an HMAC-SHA256 in unpadded base64url.
SIGNED_SESSION_ID_PATTERN = "^[A-Za-z0-9._~+/=:-]{1,128}\\.[A-Za-z0-9_-]{43}$"
_SESSION_RULE = (
    "1-128 characters of A-Z a-z 0-9 . _ ~ + / = : - (anything else is a 400). With"
    " GEOROUTER_SESSION_KEYS set, the session cookie georouter issues carries"
    " `<id>.<signature>` (the id, a dot and 43 base64url characters); a cookie that"
    " fails its check is ignored, never an error."
)
# An address georouter.core.clientip.parse_address accepts: IPv4 dotted quad
# (no leading zeros) or IPv6 (IPv4-mapped ones are routed as IPv4), no zone id.
_ADDRESS = {
    "type": "string",
    "minLength": 1,
    "maxLength": 45,
    "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
}

_EXPLAIN = {
    "name": "explain",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": _FLAG_VALUES},
    "allowEmptyValue": True,
    "description": (
        "add every cluster with its distance and why it was or was not chosen. A bare"
        " flag (`?explain` or `explain=`) means true; case and surrounding whitespace are"
        " ignored; any other value is a 400"
    ),
}

_AUTH_FAILED = _json(
    "Error",
    "missing or wrong token (each one counts towards the lockout)",
    {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
)
_LOCKED_OUT = _json(
    "Error",
    "too_many_failures: this address presented too many wrong tokens within"
    " [limits] admin_lockout_s, and is refused (right token or not) until then",
    {
        "Retry-After": {
            "description": "seconds until the address may try again",
            "schema": {"type": "integer", "minimum": 1},
            "required": True,
        }
    },
)
_SESSION_PIN = {
    "type": "object",
    "required": ["id", "pinned", "pinned_at_ms", "ttl_s"],
    "properties": {
        "id": {"type": "string"},
        "pinned": {"type": "string", "description": "the cluster the session is pinned to"},
        "pinned_at_ms": {"type": ["integer", "null"]},
        "ttl_s": {"type": ["number", "null"], "description": "sliding TTL left"},
    },
}

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
                        "schema": _ADDRESS,
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
                        "schema": _SESSION_ID,
                        "description": (
                            "session id (else the session header, x-session-id by default,"
                            " else the session cookie): " + _SESSION_RULE
                        ),
                    },
                    _EXPLAIN,
                ],
                "responses": {
                    "200": _json("Decision", "the decision"),
                    "400": _json(
                        "Error", "a malformed parameter (`parameter` names it) or session header"
                    ),
                    "503": _json(
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
                "parameters": [_EXPLAIN],
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
                                                    **_ADDRESS,
                                                    "type": ["string", "null"],
                                                    "description": "absent or null: the caller",
                                                },
                                                "session": {
                                                    **_SESSION_ID,
                                                    "type": ["string", "null"],
                                                    "description": _SESSION_RULE,
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
                    "200": _json(
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
                    "400": _json("Error", "a malformed body"),
                    "413": _json("Error", "body over 1 MiB"),
                    "503": _json("Error", "not ready yet"),
                },
            },
        },
        "/v1/sessions/{session_id}": {
            "parameters": [
                {
                    "name": "session_id",
                    "in": "path",
                    "required": True,
                    "schema": _SESSION_ID,
                    "description": "the session id itself (never a signed cookie value): "
                    + _SESSION_RULE.split(". With", 1)[0]
                    + "; it may contain `/`",
                }
            ],
            "get": {
                "summary": "A session's pin (admin: Authorization: Bearer $GEOROUTER_ADMIN_TOKEN)",
                "security": [{"admin": []}],
                "responses": {
                    "200": _json(_SESSION_PIN, "the pin, when it was made and its TTL left"),
                    "400": _json("Error", "a malformed session id (invalid_parameter)"),
                    "401": _AUTH_FAILED,
                    "403": _json("Error", "the admin API is off (no token configured)"),
                    "404": _json("Error", "no such session, or sessions are off on this edge"),
                    "429": _LOCKED_OUT,
                    "503": _json("Error", "Redis did not answer"),
                },
            },
            "delete": {
                "summary": "Forget a session on every edge (admin)",
                "security": [{"admin": []}],
                "responses": {
                    "200": _json(
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
                    "400": _json("Error", "a malformed session id (invalid_parameter)"),
                    "401": _AUTH_FAILED,
                    "403": _json("Error", "the admin API is off (no token configured)"),
                    "404": _json("Error", "sessions are off on this edge"),
                    "429": _LOCKED_OUT,
                    "503": _json("Error", "Redis did not answer"),
                },
            },
        },
        "/v1/config": {
            "get": {
                "summary": "The running configuration file, its load time, the last reload (admin)",
                "security": [{"admin": []}],
                "responses": {
                    "200": _json(_CONFIG_STATUS, "the running file"),
                    "401": _AUTH_FAILED,
                    "403": _json("Error", "the admin API is off (no token configured)"),
                    "404": _json("Error", "this edge was not started from a file"),
                    "429": _LOCKED_OUT,
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
                        "schema": {"type": "string", "enum": _FLAG_VALUES},
                        "allowEmptyValue": True,
                        "description": "1: say what the file would change, apply nothing",
                    }
                ],
                "responses": {
                    "200": _json(_RELOAD_OUTCOME, "applied, unchanged, or (dry run) would apply"),
                    "400": _json("Error", "a malformed dry_run"),
                    "401": _AUTH_FAILED,
                    "403": _json("Error", "the admin API is off (no token configured)"),
                    "404": _json("Error", "this edge was not started from a file"),
                    "422": _json(
                        _RELOAD_OUTCOME, "invalid, or changes a key only a restart applies"
                    ),
                    "429": _LOCKED_OUT,
                },
            }
        },
        "/v1/clusters": {
            "get": {
                "summary": "The clusters, their health, and the GeoIP database in use",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["clusters", "geoip", "sessions", "warnings"],
                            "properties": {
                                "clusters": {"type": "array", "items": {"type": "object"}},
                                "geoip": {"type": "object"},
                                "sessions": {"type": ["object", "null"]},
                                "warnings": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                        "clusters",
                    )
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"status": {"const": "ok"}}}, "alive"
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: GeoIP open and the first round of health checks done",
                "responses": {
                    "200": _json({"type": "object"}, "ready"),
                    "503": _json({"type": "object"}, "not ready yet"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This description",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
    },
    "components": {
        "schemas": {"Decision": _DECISION, "Location": _LOCATION, "Error": _ERROR},
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
