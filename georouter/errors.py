"""The one exception tree of georouter.

    GeorouterError
    ├── ConfigError            the configuration (or a file it names) is invalid;
    │                          carries every problem, each with its key path
    ├── GeoDatabaseError       a GeoIP database cannot be opened or is not City/Country
    │   └── GeoUpdateError     a database download failed (HTTP, checksum, archive)
    ├── StoreUnavailable       the session store (Redis) did not answer in time
    ├── EmbeddedRedisError     the private redis-server could not be started
    ├── ListenError            a listen address cannot be parsed or bound
    ├── UsageError             a bad command-line argument or environment variable
    └── ApiError               an HTTP request the API refuses: a status and a JSON body

Adapters translate foreign errors into these once, at their boundary, with
``raise ... from exc``: ``maxminddb`` in ``geoip``, redis-py in
``sessions.redisstore.unavailable``, ``OSError`` of sockets in ``serve``.
Nothing above an adapter catches a foreign exception.
"""

from __future__ import annotations

from dataclasses import dataclass


class GeorouterError(Exception):
    """Base of every error georouter raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration, at one key path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(GeorouterError):
    """The configuration is invalid; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class GeoDatabaseError(GeorouterError):
    """A GeoIP database file cannot be used."""


class GeoUpdateError(GeoDatabaseError):
    """A new GeoIP database could not be downloaded or installed; the installed one stays."""


class StoreUnavailable(GeorouterError):
    """The session store could not answer in time (down, hung, failing over)."""


class EmbeddedRedisError(GeorouterError):
    """The private redis-server could not be started."""


class ListenError(GeorouterError, ValueError):
    """A ``--listen`` value that cannot be bound; the message says why."""


class NewSessionRefused(GeorouterError):
    """A session with no pin, from a client that may start no more sessions now."""


class UsageError(GeorouterError):
    """A bad argument or environment variable; the message names it."""


class ApiError(GeorouterError):
    """An error answered as ``{"error": code, "message": ..., **extra}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers
        self.body: dict[str, object] = {"error": code, "message": message, **extra}
