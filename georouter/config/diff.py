"""What a new configuration changes, compared with the running one. Pure.

A reload applies a new file only as a whole; this says what it would do
(clusters added, removed, moved, re-addressed) and which of its changes a
running edge cannot take without a restart, so a reload refuses those instead
of applying half of the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from georouter.config.model import Config

# Read per request from the runtime snapshot, so a reload takes them. Every
# other [sessions] key shapes the Redis client or the session map, built once.
RELOADABLE_SESSION_KEYS = frozenset(
    {"cookie", "header", "unsigned_sources", "query", "cookie_secure", "learn"}
)
# Built once at start: the GeoIP reader and its cache, the request limits and
# the per-address budgets.
RESTART_SECTIONS = ("geoip", "limits")
# Read again at each turn by the GeoIP watcher and updater, so a reload takes them.
RELOADABLE_GEOIP_KEYS = frozenset(
    {
        "geoip.watch_s",
        "geoip.update_url",
        "geoip.update_sha256_url",
        "geoip.update_interval_h",
        # Read per request from the runtime snapshot.
        "geoip.max_accuracy_km",
    }
)
# What the app, its listeners, its body limits and its connection pools are built
# around: the rest of [router] and [proxy] is read per request. No [health] key is
# here: the monitor is reconfigured in place, and the shared health loop reads
# `shared`, `quorum` and `shared_window` again at each turn, so a reload takes them.
RESTART_KEYS = frozenset(
    {
        "router.mode",
        "router.api_prefix",
        "router.admin_listen",
        "proxy.max_connections",
        "proxy.max_keepalive",
        "proxy.max_body_bytes",
        "proxy.body_idle_s",
    }
)


@dataclass(frozen=True, slots=True)
class ConfigChange:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    # Same name, new coordinates: clients may now be nearer another cluster.
    moved: tuple[str, ...] = ()
    # Same name, new url or health_url.
    readdressed: tuple[str, ...] = ()
    # Other keys whose value changed ("router.fallback", "health.interval_s", ...).
    changed: tuple[str, ...] = ()
    # Changed keys that only a restart applies.
    needs_restart: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.moved or self.readdressed or self.changed)

    def as_json(self) -> dict[str, object]:
        return {
            "clusters_added": list(self.added),
            "clusters_removed": list(self.removed),
            "clusters_moved": list(self.moved),
            "clusters_readdressed": list(self.readdressed),
            "changed": list(self.changed),
            "needs_restart": list(self.needs_restart),
        }


def _changed_fields(section: str, old: object, new: object) -> list[str]:
    return [
        f"{section}.{f.name}"
        for f in dataclasses.fields(old)  # type: ignore[arg-type]
        if getattr(old, f.name) != getattr(new, f.name)
    ]


def compare(old: Config, new: Config) -> ConfigChange:
    """What replacing ``old`` by ``new`` changes (both as the file says them)."""
    before = {c.name: c for c in old.clusters}
    after = {c.name: c for c in new.clusters}
    common = [n for n in after if n in before]
    changed: list[str] = []
    # [tenants] is read per request from the runtime snapshot: all of it reloads.
    for section in ("router", "health", "sessions", "proxy", "tenants", *RESTART_SECTIONS):
        changed += _changed_fields(section, getattr(old, section), getattr(new, section))
    if [c.name for c in old.clusters] != [c.name for c in new.clusters] and set(before) == set(
        after
    ):
        # Only the order moved: it breaks distance ties and names the default fallback.
        changed.append("clusters (order)")
    for name in common:
        for key in ("bias_km", "weight"):
            if getattr(before[name], key) != getattr(after[name], key):
                changed.append(f"clusters.{name}.{key}")
    for table in ("rules", "overrides"):
        if getattr(old, table) != getattr(new, table):
            changed.append(table)
    needs_restart = [
        key
        for key in changed
        if (key.split(".")[0] in RESTART_SECTIONS and key not in RELOADABLE_GEOIP_KEYS)
        or key in RESTART_KEYS
        or (key.startswith("sessions.") and key.split(".")[1] not in RELOADABLE_SESSION_KEYS)
    ]
    return ConfigChange(
        added=tuple(n for n in after if n not in before),
        removed=tuple(n for n in before if n not in after),
        moved=tuple(
            n for n in common if (before[n].lat, before[n].lon) != (after[n].lat, after[n].lon)
        ),
        readdressed=tuple(
            n
            for n in common
            if (before[n].url, before[n].health_url) != (after[n].url, after[n].health_url)
        ),
        changed=tuple(changed),
        needs_restart=tuple(needs_restart),
    )
