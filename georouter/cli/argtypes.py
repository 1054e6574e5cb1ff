"""The argparse types of ``georouter serve``'s numeric options."""

from __future__ import annotations

import argparse


def drain_seconds(text: str) -> float:
    """``--drain-s``: 0 to 3600 seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be 0..3600 seconds, not {text!r}")
    return value


def workers_count(text: str) -> int:
    """``--workers``: 1 to 64 processes."""
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"must be 1..64, not {text!r}")
    return int(text)
