"""The OpenAPI description of the cluster admin operations (``http.clusteradmin``)."""

from __future__ import annotations

from typing import Any

from georouter.http.clusteradmin import MAX_REASON, MAX_S
from georouter.http.openapi_parts import AUTH_FAILED, LOCKED_OUT, reply

_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "a configured cluster's name",
}
_TIME = {"type": "number"}
_DRAIN = {
    "type": "object",
    "required": ["deadline", "since", "by", "pinned_move_in_s"],
    "properties": {
        "deadline": {**_TIME, "description": "when pinned sessions move (Unix seconds)"},
        "since": _TIME,
        "by": {"type": "string", "description": "the peer address that asked"},
        "pinned_move_in_s": {"type": "number", "minimum": 0},
    },
}
_OVERRIDE = {
    "type": "object",
    "required": ["state", "until", "expires_in_s", "since", "reason", "by"],
    "properties": {
        "state": {"enum": ["down", "up"]},
        "until": _TIME,
        "expires_in_s": {"type": "number", "minimum": 0},
        "since": _TIME,
        "reason": {"type": "string"},
        "by": {"type": "string"},
    },
}


def _answer(field: str, schema: dict[str, Any], extra: str | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {"cluster": {"type": "string"}, field: schema}
    required = ["cluster", field]
    if extra is not None:
        properties[extra] = {"type": "boolean"}
        required.append(extra)
    return {"type": "object", "required": required, "properties": properties}


def _common(*, body: bool) -> dict[str, Any]:
    found = {
        "401": AUTH_FAILED,
        "403": reply("Error", "the admin API is off (no token configured)"),
        "404": reply("Error", "no cluster has that name (unknown_cluster)"),
        "429": LOCKED_OUT,
        "503": reply("Error", "Redis did not answer"),
    }
    if body:
        found["400"] = reply("Error", "a body that is not JSON or not as described")
        found["413"] = reply("Error", "a body over 4 KiB")
    return found


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": False, "content": {"application/json": {"schema": schema}}}


CLUSTER_PATHS: dict[str, Any] = {
    "/v1/clusters/{name}/drain": {
        "parameters": [_NAME],
        "post": {
            "summary": "Drain a cluster on every edge (admin): no new sessions; pinned"
            " sessions stay until the deadline, then fail over",
            "security": [{"admin": []}],
            "requestBody": _body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "deadline_s": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": MAX_S,
                            "description": "seconds pinned sessions may stay (default 600)",
                        }
                    },
                }
            ),
            "responses": {
                "200": reply(_answer("drain", _DRAIN), "drained"),
                **_common(body=True),
            },
        },
    },
    "/v1/clusters/{name}/undrain": {
        "parameters": [_NAME],
        "post": {
            "summary": "End a cluster's drain on every edge (admin)",
            "security": [{"admin": []}],
            "responses": {
                "200": reply(
                    _answer("drain", {"type": "null"}, "was_drained"), "no longer drained"
                ),
                **_common(body=False),
            },
        },
    },
    "/v1/clusters/{name}/override": {
        "parameters": [_NAME],
        "post": {
            "summary": "Force a cluster down (unroutable for everyone) or up (routable"
            " whatever its health) on every edge, for ttl_s (admin)",
            "security": [{"admin": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["state"],
                            "properties": {
                                "state": {"enum": ["down", "up"]},
                                "ttl_s": {
                                    "type": "number",
                                    "exclusiveMinimum": 0,
                                    "maximum": MAX_S,
                                    "description": "seconds until it expires (default 300)",
                                },
                                "reason": {"type": "string", "maxLength": MAX_REASON},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": reply(_answer("override", _OVERRIDE), "overridden"),
                **_common(body=True),
            },
        },
        "delete": {
            "summary": "End a cluster's override on every edge (admin)",
            "security": [{"admin": []}],
            "responses": {
                "200": reply(
                    _answer("override", {"type": "null"}, "was_overridden"), "no longer overridden"
                ),
                **_common(body=False),
            },
        },
    },
}
