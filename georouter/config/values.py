"""The checks a configuration value goes through, and the table reader that runs them.

Each check takes a decoded TOML value and returns the value it stands for or
an ``Invalid`` text saying what is wrong with it; ``Section`` reads one table,
records a problem per bad key (with its key path) and rejects unknown keys.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from georouter.config.model import Network
from georouter.errors import Problem

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)

# A key TOML lets stand unquoted; any other is shown quoted, its control
# characters escaped, so a problem's path cannot rewrite the operator's terminal.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Section:
    """Reads one table, recording a problem per bad key and rejecting unknown keys."""

    def __init__(self, table: Any, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        # Keys whose value was refused: a rule relating keys is judged only without them.
        self.refused: set[str] = set()
        if isinstance(table, Mapping):
            self.table: Mapping[str, Any] = table
        else:
            self.table = {}
            self.problem("", "must be a table")

    def key(self, name: str) -> str:
        shown = name if _BARE_KEY.fullmatch(name) else quoted(name)
        return f"{self.path}.{shown}" if self.path else shown

    def problem(self, name: str, message: str) -> None:
        self.problems.append(Problem(self.key(name) if name else self.path, message))

    def get(
        self, name: str, kind: Callable[[Any], T | str], default: T, *, required: bool = False
    ) -> T:
        """The value of ``name`` checked by ``kind``, which returns a value or an error text."""
        self.seen.add(name)
        if name not in self.table:
            if required:
                self.problem(name, "is required")
            return default
        result = kind(self.table[name])
        if isinstance(result, Invalid):
            self.problem(name, str(result))
            self.refused.add(name)
            return default
        return result  # type: ignore[return-value]

    def valid(self, *names: str) -> bool:
        """Whether none of ``names`` was refused (each is its value or its default)."""
        return not self.refused.intersection(names)

    def finish(self) -> None:
        for name in self.table:
            if name not in self.seen:
                self.problem(name, "unknown key")


class Invalid(str):
    """An error text, distinguishable from a valid string value."""


def quoted(value: str, limit: int = 80) -> str:
    """``value`` quoted for a message: control characters escaped, a long one cut short."""
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


def string(value: Any) -> str | Invalid:
    if not isinstance(value, str):
        return Invalid(f"must be a string, not {type_name(value)}")
    return value


def boolean(value: Any) -> bool | Invalid:
    if not isinstance(value, bool):
        return Invalid(f"must be true or false, not {type_name(value)}")
    return value


def path_text(value: Any) -> str | Invalid:
    """A file or folder name: a string the operating system can take."""
    if not isinstance(value, str):
        return Invalid(f"must be a string, not {type_name(value)}")
    if "\0" in value:
        return Invalid(f"must not contain a NUL character: {quoted(value)}")
    return value


def user_path(text: str, base_dir: Path | None) -> Path | Invalid:
    """``text`` with ``~`` expanded, relative to ``base_dir``."""
    try:
        path = Path(text).expanduser()
    except RuntimeError as exc:  # "~nobody/..." or no home directory
        return Invalid(f"cannot expand '~' in {quoted(text)} ({exc})")
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def matching(pattern: str, rule: str) -> Callable[[Any], str | Invalid]:
    """A string matching ``pattern`` in full; otherwise "<rule>, not '<value>'"."""
    compiled = re.compile(pattern)

    def check(value: Any) -> str | Invalid:
        if not isinstance(value, str):
            return Invalid(f"must be a string, not {type_name(value)}")
        if not compiled.fullmatch(value):
            return Invalid(f"{rule}, not {quoted(value)}")
        return value

    return check


cluster_name = matching(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", "must be 1-63 letters, digits, '.', '_' or '-'"
)
key_prefix = matching(
    r"[A-Za-z0-9._:-]{1,64}", "must be 1-64 letters, digits, '.', '_', ':' or '-'"
)
# An HTTP token (RFC 9110), as cookie and header names must be.
HTTP_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}"


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (all interfaces); ValueError says why not."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"expected HOST:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"{host!r} is not an IP address") from None
    if not (port_text.isascii() and port_text.isdigit() and int(port_text) <= 65535):
        raise ValueError(f"port must be 0..65535, not {port_text!r}")
    return host, int(port_text)


def listen_address(value: Any) -> str | Invalid:
    if not isinstance(value, str):
        return Invalid(f"must be a string HOST:PORT, not {type_name(value)}")
    try:
        host_port(value)
    except ValueError as exc:
        return Invalid(str(exc))
    return value


def real(value: Any) -> float | Invalid:
    """A TOML integer or float as a float (an integer too large for one is infinite)."""
    # bool is an int in Python; `lat = true` is a typo, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Invalid(f"must be a number, not {type_name(value)}")
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def number(low: float, high: float) -> Callable[[Any], float | Invalid]:
    def check(value: Any) -> float | Invalid:
        number = real(value)
        if isinstance(number, Invalid):
            return number
        if not math.isfinite(number) or not low <= number <= high:
            return Invalid(f"must be within {fmt(low)}..{fmt(high)}")
        return number

    return check


def positive(value: Any) -> float | Invalid:
    number = real(value)
    if isinstance(number, Invalid):
        return number
    if not math.isfinite(number) or number <= 0:
        return Invalid("must be greater than 0")
    return number


def seconds(low: float, high: float, why: str) -> Callable[[Any], float | Invalid]:
    """A positive number of seconds within ``low..high``; ``why`` explains the minimum."""

    def check(value: Any) -> float | Invalid:
        number = positive(value)
        if isinstance(number, Invalid):
            return number
        if number < low:
            return Invalid(f"must be at least {fmt(low)}: {why}")
        if number > high:
            return Invalid(f"must be at most {fmt(high)}")
        return number

    return check


def count(low: int, high: int) -> Callable[[Any], int | Invalid]:
    def check(value: Any) -> int | Invalid:
        if isinstance(value, bool) or not isinstance(value, int):
            return Invalid(f"must be an integer, not {type_name(value)}")
        if not low <= value <= high:
            return Invalid(f"must be within {low}..{high}")
        return value

    return check


def http_url(value: Any) -> str | Invalid:
    if not isinstance(value, str):
        return Invalid(f"must be a string, not {type_name(value)}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return Invalid(f"is not a valid URL ({exc})")
    if parts.scheme not in ("http", "https"):
        return Invalid(f"must be an http:// or https:// URL, not {quoted(value)}")
    if "@" in parts.netloc:
        # Not echoed: the value holds a secret. A cluster's URL is sent to clients.
        return Invalid(
            "must not contain a user or password ('user:password@'):"
            " the URL is sent to clients as their cluster's url"
        )
    if not parts.hostname:
        return Invalid(f"has no host: {quoted(value)}")
    if port == 0:
        return Invalid(f"has port 0: {quoted(value)}")
    if parts.query or parts.fragment:
        return Invalid(f"must not have a query or fragment: {quoted(value)}")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return Invalid(f"must not contain whitespace or control characters: {quoted(value)}")
    return value.rstrip("/")


def http_path(value: Any) -> str | Invalid:
    if not isinstance(value, str):
        return Invalid(f"must be a string, not {type_name(value)}")
    if not value.startswith("/") or any(ch.isspace() or not ch.isprintable() for ch in value):
        return Invalid(f"must be a path starting with '/', not {quoted(value)}")
    return value


def networks(value: Any) -> tuple[Network, ...] | Invalid:
    if not isinstance(value, list):
        return Invalid(f"must be a list of CIDR strings, not {type_name(value)}")
    nets: list[Network] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            return Invalid(f"[{i}] must be a CIDR string, not {type_name(item)}")
        try:
            net = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            return Invalid(f"[{i}] is not an IP address or CIDR: {quoted(item)}")
        if net.network_address != ipaddress.ip_interface(item.strip()).ip:
            # "10.0.0.1/8" is ambiguous: one proxy (a /32 was meant) or the whole network.
            return Invalid(f"[{i}] has host bits set: {quoted(item)} (did you mean {str(net)!r}?)")
        # A mapped IPv6 range would never match: peers are normalised to IPv4 first.
        if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped:
            v4 = net.network_address.ipv4_mapped
            net = ipaddress.IPv4Network(f"{v4}/{max(net.prefixlen - 96, 0)}", strict=False)
        nets.append(net)
    return tuple(nets)


def choice(enum: type[E]) -> Callable[[Any], E | Invalid]:
    def check(value: Any) -> E | Invalid:
        allowed = ", ".join(repr(m.value) for m in enum)
        if not isinstance(value, str):
            return Invalid(f"must be one of {allowed}, not {type_name(value)}")
        try:
            return enum(value)
        except ValueError:
            return Invalid(f"must be one of {allowed}, not {quoted(value)}")

    return check


def choices(enum: type[E]) -> Callable[[Any], tuple[E, ...] | Invalid]:
    """An array of distinct ``enum`` values."""
    one = choice(enum)

    def check(value: Any) -> tuple[E, ...] | Invalid:
        if not isinstance(value, list):
            return Invalid(f"must be an array, not {type_name(value)}")
        chosen: list[E] = []
        for i, item in enumerate(value):
            result = one(item)
            if isinstance(result, Invalid):
                return Invalid(f"[{i}] {result}")
            if result in chosen:
                return Invalid(f"[{i}] repeats {result.value!r}")
            chosen.append(result)
        return tuple(chosen)

    return check


def statuses(value: Any) -> tuple[int, ...] | Invalid:
    """HTTP status codes, 100..599."""
    if not isinstance(value, list):
        return Invalid(f"must be an array of HTTP status codes, not {type_name(value)}")
    codes: list[int] = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int):
            return Invalid(f"[{i}] must be an integer, not {type_name(item)}")
        if not 100 <= item <= 599:
            return Invalid(f"[{i}] must be an HTTP status code within 100..599")
        codes.append(item)
    return tuple(codes)


def type_name(value: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)
