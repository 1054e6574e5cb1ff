"""The pieces the OpenAPI description is built of: schemas, parameters, answers."""

from __future__ import annotations

from typing import Any

from georouter.config.model import TENANT_ID_PATTERN
from georouter.core.location import LocationSource, Precision
from georouter.core.policy import Reason

# What georouter.http.common.flag accepts: empty (a bare `?explain`) is true.
FLAG_VALUES = ["", "1", "true", "yes", "on", "0", "false", "no", "off"]


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


# What ``common.flag`` takes: those values in any case, with spaces or tabs around.
FLAG_SCHEMA = {
    "type": "string",
    "pattern": "^[ \t]*(" + "|".join(_any_case(v) for v in FLAG_VALUES) + ")[ \t]*$",
}

_COUNT = {"type": "integer", "minimum": 0}
# georouter.http.dryrun: what a file that would apply does on this edge. Counts only.
RELOAD_IMPACT = {
    "type": ["object", "null"],
    "description": (
        "a dry run that would apply: what it would do on this edge (null: the file"
        " changed to an invalid one meanwhile)"
    ),
    "required": ["version", "sessions", "decisions"],
    "properties": {
        "version": {"type": "string", "description": "the version of the file measured"},
        "sessions": {
            "type": ["object", "null"],
            "description": (
                "the edge's session map, counted in its Redis with SCAN (at most 100000"
                " keys and 2 s; null: sessions are off). Pins on removed clusters fail"
                " over on their next request; all others stay, on moved clusters too"
            ),
            "required": ["census"],
            "properties": {
                "census": {"enum": ["complete", "sample", "unavailable"]},
                "stopped_by": {"enum": ["key_limit", "time_budget", None]},
                "keys_seen": _COUNT,
                "ignored": {
                    **_COUNT,
                    "description": "tombstones, pins past their age cap, values not pins",
                },
                "pinned": {"type": "object", "additionalProperties": _COUNT},
                "moving": {**_COUNT, "description": "pinned to clusters the file removes"},
                "staying": {**_COUNT, "description": "pinned to clusters the file keeps"},
                "orphaned": {**_COUNT, "description": "pinned to clusters neither file has"},
                "message": {"type": "string", "description": "why there is no census"},
            },
        },
        "decisions": {
            "type": "object",
            "description": (
                "the edge's latest routing decisions (up to 1024 client addresses, of this"
                " process), ranked again under the file with health as the edge sees it"
                " (added clusters counted as up): how many would start a new session on"
                " another cluster"
            ),
            "required": ["sampled", "changed", "share", "moves"],
            "properties": {
                "sampled": _COUNT,
                "changed": _COUNT,
                "share": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "moves": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["from", "to", "count"],
                        "properties": {
                            "from": {"type": ["string", "null"]},
                            "to": {"type": ["string", "null"]},
                            "count": _COUNT,
                        },
                    },
                },
            },
        },
    },
}

RELOAD_OUTCOME = {
    "type": "object",
    "required": ["result", "version"],
    "properties": {
        "result": {"enum": ["ok", "unchanged", "invalid", "refused"]},
        "version": {"type": "string", "description": "the file's version after this"},
        "dry_run": {"type": "boolean"},
        "change": {"type": "object"},
        "problems": {"type": "array", "items": {"type": "string"}},
        "impact": RELOAD_IMPACT,
    },
}

CONFIG_STATUS = {
    "type": "object",
    "required": ["path", "version", "loaded_at", "last_reload"],
    "properties": {
        "path": {"type": "string"},
        "version": {"type": "string"},
        "loaded_at": {"type": "number"},
        "last_reload": {"oneOf": [{"type": "null"}, RELOAD_OUTCOME]},
    },
}

ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable code"},
        "message": {"type": "string"},
        "parameter": {"type": "string", "description": "the query parameter at fault"},
        "field": {"type": "string", "description": "the body field at fault"},
    },
}

LOCATION = {
    "type": ["object", "null"],
    "properties": {
        "lat": {"type": ["number", "null"]},
        "lon": {"type": ["number", "null"]},
        "country": {"type": ["string", "null"], "description": "ISO 3166-1 alpha-2"},
        "continent": {"type": ["string", "null"], "description": "AF AN AS EU NA OC SA"},
        "accuracy_km": {"type": ["number", "null"]},
        "precision": {
            "type": "string",
            "enum": [p.value for p in Precision],
            "description": "country: the point is the country's default, not the client's",
        },
        "source": {"type": "string", "enum": [s.value for s in LocationSource]},
    },
}

# core.tenants.valid_tenant: what a tenant id may be wherever it is given.
TENANT_ID = {"type": "string", "pattern": f"^{TENANT_ID_PATTERN}$"}
# core.tenants.TenantView.as_json: a request's tenant, or one the admin API shows.
TENANT_VIEW: dict[str, Any] = {
    "id": {"type": "string"},
    "home": {"type": ["string", "null"], "description": "its home cluster, if it has one"},
    "source": {"enum": ["config", "runtime", None]},
    "applied": {"type": "boolean", "description": "whether the home leads the ranking"},
    "ignored": {"type": "string", "description": "why the home does not, if it does not"},
}

DECISION = {
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
        "rule": {
            "type": "string",
            "description": "the residency rule ([[rules]] name) the client falls under",
        },
        "tenant": {
            "type": "object",
            "description": "with explain, when the request named a tenant ([tenants])",
            "required": ["id", "home", "source", "applied"],
            "properties": TENANT_VIEW,
        },
        "error": {"type": "string", "enum": ["no_routable_cluster", "pinned_cluster_down"]},
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
                    "bias_km": {"type": "number", "description": "when the cluster has one"},
                    "biased_distance_km": {"type": "number"},
                    "weight": {"type": "number", "description": "in a tie_km split"},
                    "share": {"type": "number", "description": "of new sessions, in the split"},
                    "rule": {
                        "type": "string",
                        "enum": ["allowed", "forbidden", "preferred", "not preferred"],
                        "description": "the residency rule's verdict on the cluster",
                    },
                },
            },
        },
    },
}


def reply(
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
SESSION_ID = {"type": "string", "pattern": SESSION_ID_PATTERN}
# With GEOROUTER_SESSION_KEYS set, a source not in [sessions] unsigned_sources
# takes only `<id>.<signature>`: the id, a dot, an HMAC-SHA256 in unpadded base64url.
SIGNED_SESSION_ID_PATTERN = "^[A-Za-z0-9._~+/=:-]{1,128}\\.[A-Za-z0-9_-]{43}$"
SESSION_RULE = (
    "1-128 characters of A-Z a-z 0-9 . _ ~ + / = : - (anything else is a 400). With"
    " GEOROUTER_SESSION_KEYS set, the session cookie georouter issues carries"
    " `<id>.<signature>` (the id, a dot and 43 base64url characters); a cookie that"
    " fails its check is ignored, never an error."
)
# An address georouter.core.clientip.parse_address accepts: IPv4 dotted quad
# (no leading zeros) or IPv6 (IPv4-mapped ones are routed as IPv4), no zone id.
ADDRESS = {
    "type": "string",
    "minLength": 1,
    "maxLength": 45,
    "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
}

EXPLAIN = {
    "name": "explain",
    "in": "query",
    "required": False,
    "schema": FLAG_SCHEMA,
    "allowEmptyValue": True,
    "description": (
        "add every cluster with its distance and why it was or was not chosen. A bare"
        " flag (`?explain` or `explain=`) means true; case and surrounding whitespace are"
        " ignored; any other value is a 400"
    ),
}

AUTH_FAILED = reply(
    "Error",
    "missing or wrong token (each one counts towards the lockout)",
    {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
)
LOCKED_OUT = reply(
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
SESSION_PIN = {
    "type": "object",
    "required": ["id", "pinned", "pinned_at_ms", "ttl_s"],
    "properties": {
        "id": {"type": "string"},
        "pinned": {"type": "string", "description": "the cluster the session is pinned to"},
        "pinned_at_ms": {"type": ["integer", "null"]},
        "ttl_s": {"type": ["number", "null"], "description": "sliding TTL left"},
    },
}
