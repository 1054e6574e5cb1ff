"""Counters an operator scrapes (Prometheus text format); plain values, no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

# A process's counters as plain data: name -> (help, label names, {label values: value}).
Snapshot = dict[str, tuple[str, tuple[str, ...], dict[tuple[str, ...], float]]]


@dataclass
class Family:
    """A counter with labels; hot paths add to ``values[label_values]`` directly."""

    name: str
    help: str
    labels: tuple[str, ...]
    values: Counter[tuple[str, ...]] = field(default_factory=Counter)


class Metrics:
    """Every counter of one process, by name."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def family(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Family:
        """The counter family ``name``, created on first use."""
        found = self._families.get(name)
        if found is None:
            found = self._families[name] = Family(name, help_text, labels)
        return found

    def snapshot(self) -> Snapshot:
        return {
            name: (fam.help, fam.labels, dict(fam.values)) for name, fam in self._families.items()
        }

    def absorb(self, snapshot: Snapshot) -> None:
        """Add another process's counts to these (a replacement worker's start)."""
        for name, (help_text, labels, values) in snapshot.items():
            self.family(name, help_text, labels).values.update(values)

    def render(
        self, gauges: dict[str, float] | None = None, others: Sequence[Snapshot] = ()
    ) -> str:
        """The Prometheus text of these counters, plus ``others`` (other workers')."""
        families = self._families
        if others:
            merged = Metrics()
            merged.absorb(self.snapshot())
            for snapshot in others:
                merged.absorb(snapshot)
            families = merged._families
        lines: list[str] = []
        for name in sorted(families):
            fam = families[name]
            if fam.help:
                lines.append(f"# HELP {name} {fam.help}")
            lines.append(f"# TYPE {name} counter")
            if not fam.values and not fam.labels:
                lines.append(f"{name} 0")
            for label_values, v in sorted(fam.values.items()):
                lines.append(f"{name}{_labels(fam.labels, label_values)} {v}")
        for name, value in sorted((gauges or {}).items()):
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {value:g}")
        return "\n".join(lines) + "\n"


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(names, values, strict=True))
    return "{" + body + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
