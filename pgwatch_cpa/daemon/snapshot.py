"""The store that holds the latest families of each target's collectors.

Collectors fill a MetricSet; the poller stores its families in the SnapshotStore; the exposition layer and the
alert engine only ever read from the store, so /metrics never waits on a database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from prometheus_client.core import Metric

SnapshotKey = tuple[str, str]  # (target, collector)


class SnapshotStore:
    """Latest families per (target, collector). Readers get a consistent, immutable view."""

    def __init__(self) -> None:
        self._results: dict[SnapshotKey, tuple[Metric, ...]] = {}
        self.version = 0
        self._changed = asyncio.Event()

    def put(self, target: str, collector: str, families: tuple[Metric, ...]) -> None:
        self._results[(target, collector)] = families
        self._bump()

    def drop(self, target: str) -> None:
        """Forget every family of ``target`` (a target no longer watched: its series leave /metrics)."""
        for key in [key for key in self._results if key[0] == target]:
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

    def results(self) -> dict[SnapshotKey, tuple[Metric, ...]]:
        """The latest families of each (target, collector); a copy, so a reader in a thread sees one version."""
        return dict(self._results)

    def samples(self) -> Iterable[tuple[str, dict[str, str], float]]:
        for families in list(self._results.values()):
            for family in families:
                for sample in family.samples:
                    yield sample.name, sample.labels, sample.value

