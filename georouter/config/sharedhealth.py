"""The shared health keys of ``[health]``: whether the edges agree on health, and how."""

from __future__ import annotations

import math
from typing import Any

from georouter.config.model import HealthSettings
from georouter.config.values import Invalid, Section, boolean, count, real


def _quorum(value: Any) -> float | Invalid:
    share = real(value)
    if isinstance(share, Invalid):
        return share
    if not math.isfinite(share) or not 0 < share <= 1:
        # 0 would take a cluster down for everyone when no edge sees it down.
        return Invalid("must be greater than 0 and at most 1 (a share of the edges)")
    return share


def shared_keys(h: Section, defaults: HealthSettings) -> dict[str, Any]:
    return {
        "shared": h.get("shared", boolean, defaults.shared),
        "quorum": h.get("quorum", _quorum, defaults.quorum),
        # Fewer than 2 intervals would drop an edge whose report is merely late.
        "shared_window": h.get("shared_window", count(2, 1000), defaults.shared_window),
    }
