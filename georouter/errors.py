"""The one exception tree of georouter.

    GeorouterError
    ├── ConfigError            the configuration (or a file it names) is invalid;
    │                          carries every problem, each with its key path
    └── GeoDatabaseError       a GeoIP database cannot be opened or is not City/Country

Adapters translate foreign errors (``maxminddb``, ``httpx``, ``OSError``) into
these at their boundary with ``raise ... from exc``; nothing above an adapter
catches a foreign exception.
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
