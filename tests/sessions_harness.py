"""Session settings for the tests that drive a session store or map directly."""

from __future__ import annotations

from georouter.config import SessionSettings, parse
from tests.redis_harness import RedisServer


def session_settings(redis_url: str | None = None, **extra: object) -> SessionSettings:
    """The ``[sessions]`` table of a one-cluster config, parsed as ``georouter`` would.

    Generous timeouts unless ``extra`` says otherwise: these settings are for tests
    of what the store does, not how fast, and a loaded CI machine can take more
    than the production default to connect.
    """
    sessions: dict[str, object] = {
        "ttl_s": 60,
        "command_timeout_s": 1,
        "connect_timeout_s": 1,
        **extra,
    }
    if redis_url:
        sessions["redis_url"] = redis_url
    document = {
        "clusters": [{"name": "c", "url": "http://c.example", "lat": 0, "lon": 0}],
        "sessions": sessions,
    }
    return parse(document).sessions


class Clock:
    """A clock in ms that moves only when a test moves it."""

    def __init__(self, ms: int = 1_700_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def redis_now_ms(redis_server: RedisServer) -> int:
    """Redis's own clock (TIME), in ms: the time the pin script dates pins with."""
    with redis_server.client() as c:
        seconds, micros = c.time()
    return int(seconds) * 1000 + int(micros) // 1000
