"""Schemathesis against ``/openapi.json``: the API description agrees with the server.

The real app runs in process (Schemathesis drives its ASGI interface and its
lifespan), with real stand-in clusters, the test GeoIP database and a real
Redis, once without the admin token and once with it. Every generated request,
valid or not, must be answered as described: no server error, a documented
status code, content type, headers and body, valid input accepted and invalid
input refused, and ``405`` with an ``Allow`` header that lists the path's methods.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.engine import Status, events
from schemathesis.engine import from_schema as engine_for
from schemathesis.python import asgi

from georouter.config import load_version
from georouter.demo.standin import StandIn
from georouter.http.app import create_app
from georouter.http.reload import ConfigFile, file_stamp
from tests.harness import FAST_HEALTH, TEST_CITY_DB, cluster_entries, config_text, wait_for
from tests.redis_harness import RedisServer

TOKEN = "admin-token-0123456789"
MAX_EXAMPLES = 100

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "positive_data_acceptance",
    "negative_data_rejection",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
]


@pytest.fixture
def config_file(
    make_standins: Callable[..., dict[str, StandIn]], redis_server: RedisServer, tmp_path: Path
) -> ConfigFile:
    """A real file, so the reload endpoints are exercised too (reloading it is "unchanged")."""
    standins = make_standins("us-east", "eu-west", "eu-central", "ap-northeast")
    path = tmp_path / "clusters.toml"
    path.write_text(
        config_text(
            cluster_entries(standins),
            router={"fallback": "us-east"},
            geoip={"database": str(TEST_CITY_DB)},
            # A probe's timeout may not exceed its interval.
            health={**FAST_HEALTH, "timeout_s": FAST_HEALTH["interval_s"]},
            sessions={
                "redis_url": redis_server.url,
                "command_timeout_s": 1,
                "connect_timeout_s": 1,
            },
            # Schemathesis presents wrong and missing tokens on purpose (their 401 is
            # checked here too); the brute-force lockout would soon answer every admin
            # request with 429, so it is out of reach here (tests/test_admin_bruteforce.py).
            limits={"admin_failures": 1_000_000},
        )
    )
    stamp = file_stamp(path)
    config, version = load_version(path)
    return ConfigFile(path, version, config, stamp)


def _ready(app: object) -> bool:
    # Entering the client starts the app's lifespan in Schemathesis's event loop thread.
    with asgi.get_client(app) as client:  # type: ignore[arg-type]
        return client.get("/readyz").status_code == 200


def run_schemathesis(source: ConfigFile, *, admin_token: str | None) -> dict[str, object]:
    """One Schemathesis run (examples, coverage and fuzzing phases) against a fresh app."""
    app = create_app(source.as_loaded, admin_token=admin_token, config_file=source)
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        # Nothing is routed before the first round of health checks: wait for it.
        wait_for(lambda: _ready(app), timeout_s=10, what="readiness")
        schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
        schema.config.generation.update(
            modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
            max_examples=MAX_EXAMPLES,
            deterministic=True,
            database="none",
        )
        schema.config.checks.update(included_check_names=CHECKS)
        if admin_token is not None:
            schema.config.update(headers={"Authorization": f"Bearer {admin_token}"})
        cases: Counter[str] = Counter()
        statuses: Counter[int] = Counter()
        failures: list[str] = []
        errors: list[str] = []
        for event in engine_for(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                recorder = event.recorder
                for interaction in recorder.interactions.values():
                    cases[recorder.label] += 1
                    if interaction.response is not None:
                        statuses[interaction.response.status_code] += 1
                for case_id, checks in recorder.checks.items():
                    for check in checks:
                        if check.status is Status.FAILURE:
                            sent = recorder.interactions.get(case_id)
                            request = (
                                f"{sent.request.method} {sent.request.uri}" if sent else case_id
                            )
                            reason = check.failure_info.failure.title if check.failure_info else ""
                            failures.append(f"{check.name}: {request}: {reason}")
            elif isinstance(event, events.NonFatalError):
                errors.append(f"{event.label}: {event.value!r}")
            elif isinstance(event, events.FatalError):
                errors.append(repr(event.exception))
    finally:
        asgi.shutdown_lifespans()
    return {"cases": cases, "statuses": statuses, "failures": failures, "errors": errors}


@pytest.mark.parametrize("admin_token", [None, TOKEN], ids=["no-admin-token", "admin-token"])
def test_the_server_answers_as_its_openapi_description_says(
    config_file: ConfigFile, admin_token: str | None
) -> None:
    started = time.monotonic()
    found = run_schemathesis(config_file, admin_token=admin_token)
    cases, statuses = found["cases"], found["statuses"]
    failures, errors = found["failures"], found["errors"]
    assert isinstance(cases, Counter)
    assert isinstance(statuses, Counter)
    assert isinstance(failures, list)
    assert isinstance(errors, list)
    print(
        f"\nschemathesis ({'with' if admin_token else 'without'} the admin token):"
        f" {len(cases)} operations, {sum(cases.values())} cases,"
        f" {len(failures)} failures, {len(errors)} errors,"
        f" {time.monotonic() - started:.1f}s; statuses {dict(sorted(statuses.items()))}"
    )
    for label, n in sorted(cases.items()):
        print(f"  {label}: {n} cases")
    unique = sorted(set(failures))
    for failure in unique[:40]:
        print("  FAIL", failure)
    assert not errors, errors
    assert not unique, f"{len(unique)} distinct failures:\n" + "\n".join(unique[:40])
    assert len(cases) >= 9
