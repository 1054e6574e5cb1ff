"""The session-signing key an edge makes for itself when the operator gave none.

The embedded default must just work in proxy and redirect modes, where the
router issues its own cookies: without ``GEOROUTER_SESSION_KEYS`` an edge
makes a key once and keeps it in its state directory, so its cookies survive
a restart. Edges that share sessions must share keys, which only the
operator can arrange: the caller says so in the log.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_FILE = "session.key"
_KEY_BYTES = 32


def load_or_create(state_dir: Path) -> bytes:
    """The key in ``state_dir/session.key``, made (mode 0600) if there is none."""
    path = state_dir / KEY_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes().strip()
        if len(key) < 16:
            raise ValueError(f"{path}: holds {len(key)} bytes; a key needs at least 16") from None
        return key
    # Written once, by whichever process made the file; hex, so it reads back as is.
    key = secrets.token_hex(_KEY_BYTES).encode("ascii")
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key
