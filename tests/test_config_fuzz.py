"""Fuzzing the configuration: whatever a file holds, `load` gives a Config or a ConfigError.

Mutants of the repo's ``clusters.toml`` go through ``georouter.config.load`` on a
real file: byte flips, deletions, insertions of random bytes and NULs, invalid
UTF-8, huge integers, deep nesting, duplicated tables (most are not TOML any
more), and structured mutants (valid TOML with odd values in known keys, so
validation is reached). Every outcome must be a ``Config`` or a ``ConfigError``
with at least one problem; any other exception fails with the mutant's bytes.
A few go through the real ``georouter check`` process: exit 0 or 1, never a
traceback. The run is seeded (``GEOROUTER_FUZZ_SEED``); ``pytest -s`` prints
the figures.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import subprocess
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from georouter.config import (
    Config,
    GeoipSettings,
    HealthSettings,
    LimitsSettings,
    RouterSettings,
    SessionSettings,
    load,
)
from georouter.errors import ConfigError
from tests.harness import REPO, georouter_command

SEED = int(os.environ.get("GEOROUTER_FUZZ_SEED", "12"))
BYTE_MUTANTS = 400
STRUCTURED_MUTANTS = 300
CLI_MUTANTS = 16
CLI_BUDGET_S = 12.0

EXAMPLE = (REPO / "clusters.toml").read_bytes()
EXAMPLE_DOCUMENT = tomllib.loads(EXAMPLE.decode())


# --- Byte-level mutations of the example file. ---

TOKENS = [
    b"inf",
    b"-inf",
    b"nan",
    b"1e999",
    b"-0",
    b"0x7fffffffffffffff",
    b"99999999999999999999999999",
    b"true",
    b"[]",
    b"{}",
    b'"\\u0000"',
    b"'''",
    b'"""',
    b"\\",
    b"\x00",
    b"\r",
    b"\x1b[2J",
    b"\xef\xbb\xbf",  # a BOM, anywhere
    b"1979-05-27T07:32:00Z",
    b"a.b.c = 1\n",
    b"[[clusters]]\n",
    b"[limits]\n",
    b'"~nobody-at-all/x"',
    b'"/proc/self"',
    b'["0.0.0.0/0"]',
    b'"https://u:p@x.example"',
    b'"redis://h/99999999999"',
]
BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe9"]
TABLE_HEADERS = [b"[router]\n", b"[geoip]\n", b"[health]\n", b"[sessions]\n"]


def _at(rng: random.Random, data: bytes) -> int:
    return rng.randrange(len(data) + 1)


def _line_start(rng: random.Random, data: bytes) -> int:
    starts = [0] + [i + 1 for i, b in enumerate(data) if b == 0x0A]
    return rng.choice(starts)


def _flip_bit(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]


def _random_byte(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + bytes([rng.randrange(256)]) + data[i + 1 :]


def _delete(rng: random.Random, data: bytes) -> bytes:
    i = _at(rng, data)
    return data[:i] + data[i + rng.randint(1, 16) :]


def _insert_random(rng: random.Random, data: bytes) -> bytes:
    i = _at(rng, data)
    return data[:i] + rng.randbytes(rng.randint(1, 8)) + data[i:]


def _insert_nul(rng: random.Random, data: bytes) -> bytes:
    i = _at(rng, data)
    return data[:i] + b"\x00" + data[i:]


def _insert_bad_utf8(rng: random.Random, data: bytes) -> bytes:
    i = _at(rng, data)
    return data[:i] + rng.choice(BAD_UTF8) + data[i:]


def _huge_integer(rng: random.Random, data: bytes) -> bytes:
    # Written as the value of a `key = value` line (or a new key if none is left).
    digits = b"9" * rng.randint(4301, 6000)
    positions = [i + 3 for i in range(len(data) - 3) if data[i : i + 3] == b" = "]
    if not positions:
        return data + b"\nhuge = " + digits + b"\n"
    i = rng.choice(positions)
    end = data.find(b"\n", i)
    return data[:i] + digits + (data[end:] if end >= 0 else b"")


def _deep_nesting(rng: random.Random, data: bytes) -> bytes:
    depth = rng.choice([50, 300, 3000])
    opener, closer = rng.choice([(b"[", b"]"), (b"{a=", b"}")])
    i = _line_start(rng, data)
    return data[:i] + b"deep = " + opener * depth + closer * depth + b"\n" + data[i:]


def _duplicate_table(rng: random.Random, data: bytes) -> bytes:
    return data + b"\n" + rng.choice(TABLE_HEADERS) + b"fallback = 'us-east'\n"


def _duplicate_line(rng: random.Random, data: bytes) -> bytes:
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    return b"\n".join([*lines[: i + 1], lines[i], *lines[i + 1 :]])


def _insert_token(rng: random.Random, data: bytes) -> bytes:
    i = _at(rng, data)
    return data[:i] + rng.choice(TOKENS) + data[i:]


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: _at(rng, data)]


BYTE_OPERATORS: list[Callable[[random.Random, bytes], bytes]] = [
    _flip_bit,
    _random_byte,
    _delete,
    _insert_random,
    _insert_nul,
    _insert_bad_utf8,
    _huge_integer,
    _deep_nesting,
    _duplicate_table,
    _duplicate_line,
    _insert_token,
    _truncate,
]


def byte_mutant(rng: random.Random) -> bytes:
    data = EXAMPLE
    for _ in range(rng.randint(1, 3)):
        data = rng.choice(BYTE_OPERATORS)(rng, data)
    return data


# --- Structured mutations: valid TOML, odd values in the keys georouter reads. ---


def _toml_type(default: object) -> type:
    """The TOML type a key takes, judged by its default: bool, int, float, str or list."""
    for kind in (bool, int, float, tuple):
        if isinstance(default, kind):
            return list if kind is tuple else kind
    return str  # str, Path, an enum, None (a URL) or no default (a name)


def _keys(cls: type, renamed: dict[str, str] | None = None) -> dict[str, type]:
    return {
        (renamed or {}).get(f.name, f.name): _toml_type(f.default) for f in dataclasses.fields(cls)
    }


SECTION_KEYS: dict[str, dict[str, type]] = {
    "router": {**_keys(RouterSettings), "trust_all_proxies": bool},
    "geoip": _keys(GeoipSettings),
    "health": _keys(HealthSettings),
    "sessions": _keys(SessionSettings, {"redis": "redis_url"}),
    "limits": _keys(LimitsSettings),
}
CLUSTER_KEYS = {"name": str, "url": str, "lat": float, "lon": float, "health_url": str}

ODD_VALUES: list[object] = [
    0,
    1,
    -1,
    7,
    1000,
    2**31 - 1,
    2**31,
    2**63 - 1,
    10**400,
    0.0,
    1e-9,
    0.05,
    0.1,
    2.5,
    1e308,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    "",
    "x",
    "us-east",
    "\x00",
    "\x1b[2J",
    "\u202e",
    "x" * 5000,
    "~nobody-at-all/state",
    "/proc/self",
    "/proc/../proc/self",
    "/dev/shm/x",
    "cookie",
    "Authorization",
    "x-forwarded-for",
    "forwarded",
    "query",
    "0.0.0.0/0",
    "10.0.0.1/8",
    "/healthz",
    "https://u:p@x.example",
    "https://x.example:0",
    "http://[::1]:8080",
    "redis://h/99999999999",
    "redis://h/2147483647",
    "redis://h/?db=-1",
    "redis+sentinel://a,b/main/3",
    "redis+cluster://a:7000,b:7001",
    "unix:///run/redis.sock?db=99999999999",
    [],
    ["query", "query"],
    ["query", "header", "cookie"],
    [200, 99],
    [200, 204],
    ["0.0.0.0/0"],
    ["::/0", "10.0.0.0/8"],
    ["10.0.0.1/8"],
    [[1]],
    [1.5],
    {"a": 1},
]


def odd_value(rng: random.Random, kind: type) -> object:
    """Half the time a value of the key's own type (so validation proper is reached)."""
    if rng.random() < 0.5:
        return rng.choice(ODD_VALUES)
    fits = [v for v in ODD_VALUES if type(v) is kind or (kind is float and type(v) is int)]
    return rng.choice(fits)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)  # repr: inf, -inf, 1e-09
    if isinstance(value, str):
        escaped = "".join(
            "\\\\"
            if ch == "\\"
            else '\\"'
            if ch == '"'
            else f"\\u{ord(ch):04x}"
            if ord(ch) < 0x20 or ord(ch) == 0x7F
            else ch
            for ch in value
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_document(document: dict[str, Any]) -> str:
    lines = [f"{k} = {toml_value(v)}" for k, v in document.items() if not _is_tables(v)]
    for name, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{name}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
    for name, tables in document.items():
        if _is_tables(tables) and not isinstance(tables, dict):
            for table in tables:
                lines.append(f"[[{name}]]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def _is_tables(value: object) -> bool:
    if isinstance(value, dict):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def structured_mutant(rng: random.Random) -> bytes:
    document: dict[str, Any] = {
        k: (dict(v) if isinstance(v, dict) else [dict(c) for c in v])
        for k, v in EXAMPLE_DOCUMENT.items()
    }
    for _ in range(rng.randint(1, 2)):
        choice = rng.random()
        if choice < 0.6:
            section = rng.choice(list(SECTION_KEYS))
            table = document.setdefault(section, {})
            if isinstance(table, dict):
                key, kind = rng.choice(list(SECTION_KEYS[section].items()))
                table[key] = odd_value(rng, kind)
        elif choice < 0.85:
            entry = rng.choice(document["clusters"])
            key, kind = rng.choice(list(CLUSTER_KEYS.items()))
            entry[key] = odd_value(rng, kind)
        elif choice < 0.9:
            entry = rng.choice(document["clusters"])
            entry.pop(rng.choice(list(CLUSTER_KEYS)), None)
        elif choice < 0.95:
            document["clusters"].append(dict(rng.choice(document["clusters"])))
        else:
            # A section that is not a table, or an unknown one.
            document[rng.choice([*SECTION_KEYS, "server"])] = rng.choice(ODD_VALUES)
    return toml_document(document).encode()


# --- The contract. ---


def outcome(path: Path) -> Config | ConfigError:
    """What ``load`` makes of ``path``; any other exception propagates."""
    try:
        return load(path)
    except ConfigError as exc:
        return exc


def check_contract(result: Config | ConfigError, document: bytes) -> None:
    if isinstance(result, ConfigError):
        assert result.problems, "a ConfigError names at least one problem"
        for problem in result.problems:
            assert isinstance(problem.message, str)
            assert problem.message
            # A message is one line: nothing a file holds can forge another problem.
            assert "\n" not in str(problem), problem
        return
    assert isinstance(result, Config)
    # What the fixed defects promise of every accepted configuration.
    assert result.health.timeout_s <= result.health.interval_s
    assert result.health.interval_s >= 0.05
    assert result.sessions.local_cache_size >= 1000
    assert result.sessions.header not in ("cookie", "authorization")
    for c in result.clusters:
        assert "@" not in c.url.split("/")[2]
    if b"trust_all_proxies" not in document:
        assert all(net.prefixlen > 0 for net in result.router.trusted_proxies)


def run_mutants(
    make: Callable[[random.Random], bytes], count: int, seed: int, tmp_path: Path
) -> Counter[str]:
    rng = random.Random(seed)
    tally: Counter[str] = Counter()
    path = tmp_path / "clusters.toml"
    for i in range(count):
        document = make(rng)
        path.write_bytes(document)
        try:
            result = outcome(path)
            check_contract(result, document)
        except BaseException as exc:
            kept = tmp_path / f"failing-mutant-{seed}-{i}.toml"
            kept.write_bytes(document)
            raise AssertionError(
                f"mutant {i} of seed {seed} ({kept}) raised {type(exc).__name__}: {exc}\n"
                f"first bytes: {document[:300]!r}"
            ) from exc
        tally["ok" if isinstance(result, Config) else _outcome_kind(result)] += 1
    return tally


def _outcome_kind(exc: ConfigError) -> str:
    message = exc.problems[0].message
    for kind in ("not UTF-8", "invalid TOML"):
        if kind in message:
            return f"rejected: {kind}"
    return "rejected: invalid values"


def report(what: str, count: int, tally: Counter[str], seed: int = SEED) -> None:
    rejected = count - tally["ok"]
    kinds = ", ".join(f"{n} {k.removeprefix('rejected: ')}" for k, n in sorted(tally.items()))
    print(f"\nconfig fuzz (seed {seed}): {count} {what}: {tally['ok']} ok, {rejected} rejected")
    print(f"  {kinds}")


def test_every_byte_mutant_of_the_example_is_a_config_or_a_config_error(
    tmp_path: Path,
) -> None:
    tally = run_mutants(byte_mutant, BYTE_MUTANTS, SEED, tmp_path)
    report("byte mutants", BYTE_MUTANTS, tally)
    assert sum(tally.values()) == BYTE_MUTANTS
    # The mutants reach both sides: some still parse, and the broken ones are refused.
    assert tally["ok"] > 0
    assert tally["rejected: not UTF-8"] > 0
    assert tally["rejected: invalid TOML"] > 0


def test_every_structured_mutant_is_a_config_or_a_config_error(tmp_path: Path) -> None:
    tally = run_mutants(structured_mutant, STRUCTURED_MUTANTS, SEED, tmp_path)
    report("structured mutants", STRUCTURED_MUTANTS, tally)
    assert tally["ok"] > 0
    assert tally["rejected: invalid values"] > 0


def cli_mutants(seed: int) -> Iterator[tuple[str, bytes]]:
    """The example itself, one of each crash found before, then random mutants."""
    yield "example", EXAMPLE
    yield "invalid UTF-8", b"# caf\xe9\n" + EXAMPLE
    yield "4400 digits", EXAMPLE + b"\n[limits]\nbody_bytes = " + b"9" * 4400 + b"\n"
    yield "nested 3000 deep", b"x = " + b"[" * 3000 + b"]" * 3000 + b"\n" + EXAMPLE
    yield "NUL", EXAMPLE.replace(b"us-west", b"us\x00west")
    yield "duplicate table", EXAMPLE + b"\n[health]\n"
    rng = random.Random(seed)
    while True:
        yield "byte mutant", byte_mutant(rng)
        yield "structured mutant", structured_mutant(rng)


def test_georouter_check_exits_0_or_1_on_mutants_and_never_prints_a_traceback(
    tmp_path: Path,
) -> None:
    cases: list[tuple[str, Path]] = []
    for i, (what, document) in enumerate(cli_mutants(SEED)):
        if i == CLI_MUTANTS:
            break
        path = tmp_path / f"mutant-{i}.toml"
        path.write_bytes(document)
        cases.append((what, path))

    deadline = time.monotonic() + CLI_BUDGET_S

    def check(case: tuple[str, Path]) -> tuple[str, Path, subprocess.CompletedProcess[str] | None]:
        what, path = case
        if time.monotonic() > deadline:  # time-bounded: the rest are skipped, and counted
            return what, path, None
        result = subprocess.run(
            georouter_command("check", "--config", str(path)),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=30,
            check=False,
        )
        return what, path, result

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(check, cases))

    codes: Counter[int] = Counter()
    for what, path, result in results:
        if result is None:
            continue
        assert result.returncode in (0, 1), (what, path, result.stderr)
        assert "Traceback" not in result.stderr, (what, path, result.stderr)
        if result.returncode == 1:
            lines = result.stderr.splitlines()
            assert lines[0] == f"georouter: {path}: invalid configuration", result.stderr
            assert len(lines) >= 2, result.stderr
            assert all(line.startswith("  ") for line in lines[1:]), result.stderr
        codes[result.returncode] += 1
    ran = sum(codes.values())
    print(
        f"\nconfig fuzz (seed {SEED}): georouter check on {ran} of {len(cases)} mutants:"
        f" {codes[0]} exit 0, {codes[1]} exit 1, no traceback"
    )
    assert ran >= 6, "the six named cases must run within the budget"
    example = results[0][2]
    assert example is not None
    assert example.returncode == 0, f"the example is valid: {example.stderr}"


@pytest.mark.parametrize("seed", [SEED + 1, SEED + 2])
def test_other_seeds_keep_the_contract_too(seed: int, tmp_path: Path) -> None:
    tally = run_mutants(byte_mutant, 100, seed, tmp_path)
    tally += run_mutants(structured_mutant, 100, seed, tmp_path)
    report("mutants", 200, tally, seed)
