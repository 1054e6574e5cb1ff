"""The OpenAPI 3.1 description served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from georouter.core.location import LocationSource
from georouter.core.policy import Reason

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


def _json(schema: dict[str, Any] | str, description: str) -> dict[str, Any]:
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_EXPLAIN = {
    "name": "explain",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["0", "1", "true", "false"]},
    "description": "add every cluster with its distance and why it was or was not chosen",
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
                        "schema": {"type": "string"},
                        "description": "client address; default: the request's own client",
                    },
                    {
                        "name": "session",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._~+/=:-]{1,128}$"},
                        "description": "session id (else the session header, else the cookie)",
                    },
                    _EXPLAIN,
                ],
                "responses": {
                    "200": _json("Decision", "the decision"),
                    "400": _json("Error", "a malformed parameter"),
                    "503": _json("Decision", "no cluster is routable, or not ready yet"),
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
                                                "ip": {"type": "string"},
                                                "session": {"type": "string"},
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
                {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "A session's pin (admin: Authorization: Bearer $GEOROUTER_ADMIN_TOKEN)",
                "security": [{"admin": []}],
                "responses": {
                    "200": {"description": "the pin, its age and its TTL left"},
                    "401": _json("Error", "missing or wrong token"),
                    "403": _json("Error", "the admin API is off (no token configured)"),
                    "404": _json("Error", "no such session"),
                    "503": _json("Error", "Redis did not answer"),
                },
            },
            "delete": {
                "summary": "Forget a session on every edge (admin)",
                "security": [{"admin": []}],
                "responses": {
                    "200": {"description": "forgotten"},
                    "401": _json("Error", "missing or wrong token"),
                    "403": _json("Error", "the admin API is off (no token configured)"),
                    "503": _json("Error", "Redis did not answer"),
                },
            },
        },
        "/v1/clusters": {
            "get": {
                "summary": "The clusters, their health, and the GeoIP database in use",
                "responses": {"200": {"description": "clusters"}},
            }
        },
        "/healthz": {
            "get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: GeoIP open and the first round of health checks done",
                "responses": {
                    "200": {"description": "ready"},
                    "503": {"description": "not ready yet"},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition format"}},
            }
        },
    },
    "components": {"schemas": {"Decision": _DECISION, "Location": _LOCATION, "Error": _ERROR}},
}
