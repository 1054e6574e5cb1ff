"""Downloading a GeoIP database over HTTP(S): streamed into a file, hashed on the way.

MaxMind's download service wants the account id and license key as HTTP basic
auth and redirects to a presigned storage URL; httpx drops the Authorization
header on a redirect to another origin, as that storage expects. Credentials
are sent up front only to MaxMind; any other server gets them only when it
asks (a 401 with a ``Basic`` challenge, as a private mirror behind nginx
does), and never in clear text across the network. Every failure is a
``GeoUpdateError`` with a one-line reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx

from georouter import __version__
from georouter.errors import GeoUpdateError

ACCOUNT_ENV = "MAXMIND_ACCOUNT_ID"
LICENSE_ENV = "MAXMIND_LICENSE_KEY"
# A bound against a server that never stops (or a decompression bomb later):
# the largest GeoIP2 City database is a fraction of this.
MAX_BYTES = 4 << 30
_CHUNK = 1 << 16
_MAX_CHECKSUM_BYTES = 4096
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")

# Bytes received so far, and the total when the server said it.
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True, slots=True)
class Credentials:
    """A MaxMind account id and license key (``MAXMIND_ACCOUNT_ID``, ``MAXMIND_LICENSE_KEY``)."""

    account_id: str
    license_key: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Credentials | None:
        account, key = env.get(ACCOUNT_ENV) or None, env.get(LICENSE_ENV) or None
        if account and key:
            return cls(account, key)
        if account or key:
            missing = LICENSE_ENV if account else ACCOUNT_ENV
            raise GeoUpdateError(
                f"{missing} is not set: MaxMind needs the account id and the license key"
            )
        return None

    def auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(self.account_id, self.license_key)


def parse_sha256(text: str, what: str) -> str:
    """A SHA-256 in hex, from ``HEX`` or ``HEX  name`` (a ``sha256sum`` line)."""
    words = text.split()
    if not words or not _SHA256.fullmatch(words[0]):
        raise GeoUpdateError(f"{what}: not a SHA-256 (64 hex digits): {text[:80]!r}")
    return words[0].lower()


def shown(url: httpx.URL | str) -> str:
    """A URL fit for a message: no query, which may hold a license key."""
    return str(httpx.URL(url).copy_with(query=None, fragment=None))


def _is_maxmind(url: httpx.URL) -> bool:
    return url.host == "maxmind.com" or url.host.endswith(".maxmind.com")


def _private_channel(url: httpx.URL) -> bool:
    """Whether a secret sent to ``url`` stays unread on the way: TLS, or this machine."""
    if url.scheme == "https" or url.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(url.host).is_loopback
    except ValueError:
        return False


def _challenges_basic(response: httpx.Response) -> bool:
    return any(
        v.strip().lower().startswith("basic")
        for v in response.headers.get_list("www-authenticate", split_commas=True)
    )


def client(*, timeout_s: float = 30.0) -> httpx.AsyncClient:
    """An HTTP client for downloads: redirects followed, a read deadline per chunk."""
    return httpx.AsyncClient(
        follow_redirects=True,
        timeout=httpx.Timeout(timeout_s, connect=10.0),
        headers={"user-agent": f"georouter/{__version__} (geodata update)"},
    )


def _refusal(response: httpx.Response, url: str, credentials: Credentials | None) -> str:
    status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    if response.status_code in (401, 403):
        sent = "authorization" in response.request.headers
        if sent:
            why = f"the server refused {ACCOUNT_ENV}/{LICENSE_ENV}"
        elif credentials is None:
            why = f"it needs credentials: set {ACCOUNT_ENV} and {LICENSE_ENV}"
        elif not _private_channel(response.request.url):
            why = "credentials are not sent over plain http"
        else:
            why = "access denied"
        return f"{status} from {shown(url)}: {why}"
    if response.status_code == 404:
        return f"{status}: nothing at {shown(url)}"
    return f"{status} from {shown(url)}"


@asynccontextmanager
async def _get(
    http: httpx.AsyncClient, url: str, credentials: Credentials | None
) -> AsyncIterator[httpx.Response]:
    """A streamed, successful response for ``url``; GeoUpdateError otherwise."""
    try:
        target = httpx.URL(url)
        up_front = credentials is not None and _is_maxmind(target) and _private_channel(target)
        for asked in (False, True):
            auth = credentials.auth() if credentials is not None and (up_front or asked) else None
            async with http.stream("GET", target, auth=auth) as response:
                if (
                    response.status_code == 401
                    and not asked
                    and auth is None
                    and credentials is not None
                    and _private_channel(response.url)
                    and _challenges_basic(response)
                ):
                    continue
                if not response.is_success:
                    raise GeoUpdateError(_refusal(response, url, credentials))
                yield response
                return
    except httpx.TimeoutException as exc:
        raise GeoUpdateError(f"{shown(url)}: timed out ({type(exc).__name__})") from exc
    except httpx.RemoteProtocolError as exc:
        raise GeoUpdateError(f"{shown(url)}: the download was cut short ({exc})") from exc
    except httpx.TooManyRedirects as exc:
        raise GeoUpdateError(f"{shown(url)}: too many redirects") from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise GeoUpdateError(f"{url!r} is not an http(s) URL to download ({exc})") from exc
    except httpx.TransportError as exc:
        raise GeoUpdateError(f"cannot download {shown(url)}: {exc or type(exc).__name__}") from exc


async def fetch_sha256(http: httpx.AsyncClient, url: str, credentials: Credentials | None) -> str:
    """The SHA-256 that a checksum file (MaxMind's ``?suffix=tar.gz.sha256``) names."""
    async with _get(http, url, credentials) as response:
        body = b""
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > _MAX_CHECKSUM_BYTES:
                raise GeoUpdateError(f"{shown(url)}: too long for a checksum file")
    return parse_sha256(body.decode("utf-8", "replace"), shown(url))


def _write(out: BinaryIO, digest: hashlib._Hash, chunk: bytes) -> None:
    out.write(chunk)
    digest.update(chunk)


@dataclass(frozen=True, slots=True)
class Downloaded:
    size: int
    sha256: str


async def download(
    http: httpx.AsyncClient,
    url: str,
    into: Path,
    *,
    credentials: Credentials | None = None,
    progress: Progress | None = None,
) -> Downloaded:
    """Stream ``url`` into the file ``into``, as served (no content decoding, so the
    SHA-256 is that of the published file)."""
    async with _get(http, url, credentials) as response:
        length = response.headers.get("content-length", "")
        total = int(length) if length.isdigit() else None
        if total is not None and total > MAX_BYTES:
            raise GeoUpdateError(f"{shown(url)}: {total} bytes is more than a database can be")
        digest = hashlib.sha256()
        size = 0
        try:
            # File work in a thread: a slow disk never stalls an edge's event loop.
            out = await asyncio.to_thread(into.open, "wb")
            try:
                async for chunk in response.aiter_raw(_CHUNK):
                    size += len(chunk)
                    if size > MAX_BYTES:
                        raise GeoUpdateError(f"{shown(url)}: more than {MAX_BYTES} bytes")
                    await asyncio.to_thread(_write, out, digest, chunk)
                    if progress is not None:
                        progress(size, total)
            finally:
                await asyncio.to_thread(out.close)
        except OSError as exc:
            raise GeoUpdateError(f"cannot write {into}: {exc.strerror or exc}") from exc
        # h11 already refuses a body shorter than its Content-Length; said here too,
        # since a truncated database is the one failure that must never get through.
        if total is not None and size != total:
            raise GeoUpdateError(
                f"{shown(url)}: the download was cut short ({size} of {total} bytes)"
            )
    return Downloaded(size=size, sha256=digest.hexdigest())
