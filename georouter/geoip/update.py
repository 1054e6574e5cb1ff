"""Installing a fresh GeoIP database: download, unpack, verify, then rename into place.

One code path for ``georouter geodata update`` and an edge's own updater. The
download goes to a temporary file beside the destination (the same file
system, so the final ``os.replace`` is atomic); a ``.tar.gz`` (MaxMind) or a
``.mmdb.gz`` (DB-IP) is unpacked there too, recognised by its bytes, not its
name. Only a file that passed ``verify_database`` replaces the installed one,
and only by rename: an edge that has the old file memory-mapped keeps reading
it untouched until it switches. Whatever fails, the installed file is left
as it was and every temporary file is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO

import httpx

from georouter.errors import GeoDatabaseError, GeoUpdateError
from georouter.geoip import download as dl
from georouter.geoip.verify import Verified, verify_database

_GZIP_MAGIC = b"\x1f\x8b"


class Packing(StrEnum):
    """How a downloaded database was packed, as its bytes show."""

    MMDB = "mmdb"
    GZIP = "mmdb.gz"
    TAR_GZ = "tar.gz"


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    url: str
    dest: Path
    # Of the file as downloaded (the archive, for a .tar.gz), as MaxMind publishes it.
    sha256: str | None = None
    sha256_url: str | None = None
    credentials: dl.Credentials | None = None


@dataclass(frozen=True, slots=True)
class UpdateResult:
    dest: Path
    # False: the download is byte for byte the installed database, left alone.
    installed: bool
    database: Verified
    packing: Packing
    download_bytes: int
    sha256: str


def _check_dest(dest: Path) -> None:
    if dest.is_dir():
        raise GeoUpdateError(f"{dest} is a directory; name the database file to install")
    if not dest.parent.is_dir():
        raise GeoUpdateError(f"{dest.parent} does not exist: create it first")


def _temp_in(folder: Path, name: str) -> Path:
    fd, path = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".download")
    os.close(fd)
    return Path(path)


def _copy_bounded(src: IO[bytes] | gzip.GzipFile, dest: Path, what: str) -> None:
    copied = 0
    with dest.open("wb") as out:
        while chunk := src.read(1 << 20):
            copied += len(chunk)
            if copied > dl.MAX_BYTES:
                raise GeoUpdateError(f"{what} unpacks to more than {dl.MAX_BYTES} bytes")
            out.write(chunk)


def _is_tar(archive: Path) -> bool:
    """Whether a gzip file holds a tar: its first block has the ustar magic (POSIX,
    GNU and pax tars all do; MaxMind's are GNU tars)."""
    with gzip.open(archive, "rb") as f:
        block = f.read(512)
    return len(block) == 512 and block[257:262] == b"ustar"


def _from_tar(archive: Path, into: Path) -> None:
    """Copy the one ``.mmdb`` file of a gzipped tar into ``into``."""
    found: list[str] = []
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".mmdb"):
                    found.append(member.name)
                    if len(found) == 1:
                        src = tar.extractfile(member)
                        assert src is not None  # a regular file always has content
                        _copy_bounded(src, into, "the archive")
    except tarfile.TarError as exc:
        raise GeoUpdateError(f"the archive is truncated or damaged ({exc})") from exc
    if not found:
        raise GeoUpdateError("the archive holds no .mmdb file")
    if len(found) > 1:
        raise GeoUpdateError(f"the archive holds {len(found)} .mmdb files: {', '.join(found)}")


def _unpack(download: Path, candidate: Path) -> Packing:
    """Put the database that ``download`` holds into ``candidate``."""
    with download.open("rb") as f:
        magic = f.read(2)
    if magic != _GZIP_MAGIC:
        shutil.copyfile(download, candidate)
        return Packing.MMDB
    try:
        if _is_tar(download):
            _from_tar(download, candidate)
            return Packing.TAR_GZ
        with gzip.open(download, "rb") as src:
            _copy_bounded(src, candidate, "the gzip file")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise GeoUpdateError(f"the gzip file is truncated or damaged ({exc})") from exc
    return Packing.GZIP


def _sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _install(candidate: Path, dest: Path) -> None:
    """Rename ``candidate`` over ``dest``, with the installed file's mode and owner."""
    try:
        old = dest.stat()
    except FileNotFoundError:
        mode = 0o644
    else:
        mode = stat.S_IMODE(old.st_mode)
        # Only root gives a file away; anyone else installs a file of their own.
        with contextlib.suppress(PermissionError):
            os.chown(candidate, old.st_uid, old.st_gid)
    os.chmod(candidate, mode)
    _fsync(candidate)
    os.replace(candidate, dest)
    # The rename itself reaches the disk only with its folder.
    _fsync(dest.parent)


def _finish(download: Path, request: UpdateRequest, size: int, sha256: str) -> UpdateResult:
    dest = request.dest
    candidate = _temp_in(dest.parent, dest.name)
    try:
        packing = _unpack(download, candidate)
        download.unlink()
        try:
            verified = verify_database(candidate, label=f"the download ({dl.shown(request.url)})")
        except GeoDatabaseError as exc:
            if packing is Packing.GZIP:
                raise GeoUpdateError(
                    "the gzip file holds neither a tar archive nor a MaxMind DB"
                ) from exc
            raise GeoUpdateError(str(exc)) from exc
        same = dest.exists() and _sha256_of(dest) == _sha256_of(candidate)
        if not same:
            _install(candidate, dest)
        return UpdateResult(dest, not same, verified, packing, size, sha256)
    except OSError as exc:
        raise GeoUpdateError(f"cannot install into {dest.parent}: {exc.strerror or exc}") from exc
    finally:
        candidate.unlink(missing_ok=True)


async def update_database(
    request: UpdateRequest,
    *,
    progress: dl.Progress | None = None,
    http: httpx.AsyncClient | None = None,
) -> UpdateResult:
    """Download ``request.url``, verify it, and install it at ``request.dest``; a
    GeoUpdateError (the installed file untouched) if any step fails."""
    dest = request.dest.absolute()
    request = UpdateRequest(
        request.url, dest, request.sha256, request.sha256_url, request.credentials
    )
    _check_dest(dest)
    expected = None if request.sha256 is None else dl.parse_sha256(request.sha256, "--sha256")
    async with contextlib.AsyncExitStack() as stack:
        # A client of our own unless given one, which its owner closes.
        client = http if http is not None else await stack.enter_async_context(dl.client())
        if request.sha256_url is not None:
            expected = await dl.fetch_sha256(client, request.sha256_url, request.credentials)
        try:
            temp = _temp_in(dest.parent, dest.name)
        except OSError as exc:
            raise GeoUpdateError(f"cannot write in {dest.parent}: {exc.strerror or exc}") from exc
        try:
            got = await dl.download(
                client, request.url, temp, credentials=request.credentials, progress=progress
            )
            if expected is not None and got.sha256 != expected:
                raise GeoUpdateError(
                    f"checksum mismatch: the download's SHA-256 is {got.sha256}, not {expected}"
                )
            # Unpacking, hashing and verifying are seconds of CPU and disk: in a thread.
            return await asyncio.to_thread(_finish, temp, request, got.size, got.sha256)
        finally:
            temp.unlink(missing_ok=True)
