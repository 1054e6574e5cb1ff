"""Reading ``clusters.toml``: bounded, decoded with every failure named, then ``parse``d."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

from georouter.config.model import Config
from georouter.config.parse import parse
from georouter.errors import ConfigError, Problem


def load(path: Path) -> Config:
    """Read and validate a ``clusters.toml`` file.

    Whatever the file holds, the outcome is a ``Config`` or a ``ConfigError``.
    """
    return load_version(path)[0]


def load_version(path: Path) -> tuple[Config, str]:
    """``load``, and the version of the file it read: the first 12 hex digits of
    the SHA-256 of exactly the bytes parsed (a file replaced meanwhile cannot
    give one file's config under another's version)."""
    try:
        with path.open("rb") as f:
            # Bounded: `--config /dev/zero` is an error, not all of memory.
            data = f.read(MAX_FILE_BYTES + 1)
        # The folder the operator named, links not followed: a Kubernetes ConfigMap's
        # file is a link into a directory that is replaced on every update.
        base_dir = path.absolute().parent
    except OSError as exc:
        raise ConfigError([Problem(str(path), f"cannot read: {exc.strerror or exc}")]) from exc
    except RuntimeError as exc:  # Path.resolve() in a symlink loop
        raise ConfigError([Problem(str(path), f"cannot read: {exc}")]) from exc
    if len(data) > MAX_FILE_BYTES:
        too_large = f"is larger than {MAX_FILE_BYTES >> 20} MiB; is it the right file?"
        raise ConfigError([Problem(str(path), too_large)])
    version = hashlib.sha256(data).hexdigest()[:12]
    return parse(_decode(data, str(path)), base_dir=base_dir), version


MAX_FILE_BYTES = 16 << 20
# CPython refuses to convert longer decimal strings to int (sys.get_int_max_str_digits).
_LONG_INTEGER = re.compile(r"[0-9][0-9_]{4299,}")


def _decode(data: bytes, where: str) -> dict[str, Any]:
    """The TOML document in ``data``; a ConfigError saying where it is broken."""

    def fail(message: str) -> ConfigError:
        return ConfigError([Problem(where, message)])

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise fail(
            f"is not UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start}"
            f" (line {line}, byte {column} of the line): {exc.reason}"
        ) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"invalid TOML: {exc}") from exc
    except RecursionError as exc:
        raise fail("invalid TOML: arrays or inline tables nested too deeply") from exc
    except ValueError as exc:
        # tomllib lets int()'s own errors through: an integer of over 4300 digits.
        for match in _LONG_INTEGER.finditer(text):
            digits = len(match.group().replace("_", ""))
            if digits > 4300:
                line = text.count("\n", 0, match.start()) + 1
                raise fail(
                    f"invalid TOML: an integer of {digits} digits (line {line});"
                    " no setting takes one of more than 4300"
                ) from exc
        raise fail(f"invalid TOML: {exc}") from exc
