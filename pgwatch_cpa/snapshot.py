"""Immutable samples of one collection, and the store that holds the latest of each target's collectors.

Collectors fill a MetricSet; the poller stores its families in the SnapshotStore; the exposition layer and the
alert engine only ever read from the store, so /metrics never waits on a database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

Labels = Mapping[str, str]


class MetricSet:
    """Builder for the metric families of one collection; every sample gets the constant labels."""

    def __init__(self, const_labels: Labels | None = None) -> None:
        self._const = dict(const_labels or {})
        self._families: dict[str, Metric] = {}

    def _family(self, name: str, doc: str, typ: str, unit: str = "") -> Metric:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = Metric(name, doc, typ, unit)
        return family

    def gauge(self, name: str, doc: str, value: float, labels: Labels | None = None) -> None:
        self._family(name, doc, "gauge").add_sample(name, {**self._const, **(labels or {})}, float(value))

    def counter(self, name: str, doc: str, value: float, labels: Labels | None = None) -> None:
        """``name`` must end in ``_total``; the family is named without it, as the OpenMetrics spec wants."""
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        family = self._family(name[: -len("_total")], doc, "counter")
        family.add_sample(name, {**self._const, **(labels or {})}, float(value))

    def histogram(self, name: str, doc: str, bounds: Sequence[float], cumulative: Sequence[float], total: float,
                  labels: Labels | None = None) -> None:
        """A histogram from cumulative bucket counts (len(bounds) + 1, the last being +Inf = count)."""
        if len(cumulative) != len(bounds) + 1:
            raise ValueError(f"histogram {name}: {len(cumulative)} counts for {len(bounds)} bounds")
        family = self._family(name, doc, "histogram")
        base = {**self._const, **(labels or {})}
        for bound, count in zip([*bounds, float("inf")], cumulative, strict=True):
            family.add_sample(f"{name}_bucket", {**base, "le": floatToGoString(bound)}, float(count))
        family.add_sample(f"{name}_count", base, float(cumulative[-1]))
        family.add_sample(f"{name}_sum", base, float(total))

    def info(self, name: str, doc: str, labels: Labels) -> None:
        """An ``*_info`` gauge with value 1 (the form promtool and Prometheus expect in text format)."""
        if not name.endswith("_info"):
            raise ValueError(f"info metric {name} must end in _info")
        self.gauge(name, doc, 1.0, labels)

    def families(self) -> tuple[Metric, ...]:
        return tuple(self._families.values())


@dataclass(frozen=True)
class CollectorResult:
    """What one run of one collector produced."""

    families: tuple[Metric, ...]
    success: bool
    duration: float
    finished_at: float = field(default_factory=time.time)


class SnapshotStore:
    """Latest families per (target, collector). Readers get a consistent, immutable view."""

    def __init__(self) -> None:
        self._results: dict[tuple[str, str], tuple[Metric, ...]] = {}
        self.version = 0
        self._changed = asyncio.Event()

    def put(self, target: str, collector: str, families: tuple[Metric, ...]) -> None:
        self._results[(target, collector)] = families
        self._bump()

    def drop_target(self, target: str) -> None:
        for key in [k for k in self._results if k[0] == target]:
            del self._results[key]
        self._bump()

    def _bump(self) -> None:
        # Wake every waiter of this version, then start a new event: each reader tracks its own version, so
        # several readers (exposition, alerting) never steal each other's wake-ups.
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_changed(self, since: int) -> int:
        """Wait until the store holds a version newer than ``since``; return that version."""
        while self.version <= since:
            await self._changed.wait()
        return self.version

    def families(self) -> list[Metric]:
        """All families merged by name across targets and collectors (each name appears once)."""
        merged: dict[str, Metric] = {}
        for families in list(self._results.values()):
            for family in families:
                _merge_into(merged, family)
        return list(merged.values())

    def samples(self) -> Iterable[tuple[str, dict[str, str], float]]:
        for families in list(self._results.values()):
            for family in families:
                for sample in family.samples:
                    yield sample.name, sample.labels, sample.value


def _merge_into(merged: dict[str, Metric], family: Metric) -> None:
    existing = merged.get(family.name)
    if existing is None:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        copy.samples = list(family.samples)
        merged[family.name] = copy
    else:
        existing.samples.extend(family.samples)
