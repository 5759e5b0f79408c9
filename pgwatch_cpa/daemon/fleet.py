"""The running pollers, one per target with its task, and a new config's targets applied as a difference.

A target is identified by its kind and name. On apply, a target whose effective settings (its own, its interval,
its custom queries) are unchanged keeps its poller, and with it its state: disabled collectors, backoff,
counters, connections. A removed target's poller stops and its series leave /metrics; a changed one restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pgwatch_cpa.collectors import POSTGRES_COLLECTORS, REDIS_COLLECTORS
from pgwatch_cpa.collectors.postgres.custom_queries import custom_query_collectors
from pgwatch_cpa.config import PostgresTarget, RedisTarget, Settings
from pgwatch_cpa.daemon.poller import TargetPoller
from pgwatch_cpa.daemon.postgres_poller import PostgresPoller
from pgwatch_cpa.daemon.redis_poller import RedisPoller
from pgwatch_cpa.daemon.snapshot import SnapshotStore

log = logging.getLogger(__name__)

TargetKey = tuple[str, str]  # (kind, name): names are unique per kind only
STOP_GRACE = 2.0


def targets(settings: Settings) -> Iterator[tuple[TargetKey, PostgresTarget | RedisTarget]]:
    yield from ((("postgres", t.name), t) for t in settings.postgres)
    yield from ((("redis", t.name), t) for t in settings.redis)


def _effective(settings: Settings, target: PostgresTarget | RedisTarget) -> tuple[Any, ...]:
    """Everything a target's poller is built from: equal tuples, same poller."""
    queries = settings.queries_for(target) if isinstance(target, PostgresTarget) else ()
    return target, target.interval or settings.interval, queries


def build_poller(settings: Settings, target: PostgresTarget | RedisTarget, store: SnapshotStore) -> TargetPoller:
    interval = target.interval or settings.interval
    if isinstance(target, PostgresTarget):
        collectors = [c() for c in POSTGRES_COLLECTORS] + custom_query_collectors(settings.queries_for(target))
        return PostgresPoller(target.name, interval, collectors, target, store)
    return RedisPoller(target.name, interval, [c() for c in REDIS_COLLECTORS], target, store)


@dataclass(frozen=True)
class Change:
    added: list[TargetKey]
    removed: list[TargetKey]
    restarted: list[TargetKey]
    kept: int

    def __str__(self) -> str:
        def names(keys: list[TargetKey]) -> str:
            return ", ".join(f"{kind} {name}" for kind, name in keys) or "none"

        return (f"added {names(self.added)}; removed {names(self.removed)}; restarted (settings changed) "
                f"{names(self.restarted)}; {self.kept} unchanged")


class Fleet:
    def __init__(self, settings: Settings, store: SnapshotStore) -> None:
        self.settings = settings
        self.store = store
        # Collections running at once, across every target, those a reload adds included (a restart resizes it).
        self.cycle_slots = asyncio.Semaphore(settings.max_concurrent_cycles)
        self.pollers: dict[TargetKey, TargetPoller] = {key: self._build(t) for key, t in targets(settings)}
        self._tasks: dict[TargetKey, asyncio.Task[None]] = {}

    async def start(self) -> None:
        for key in self.pollers:
            await self._start(key)

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks.values(), timeout=STOP_GRACE)
        await asyncio.gather(*(p.close() for p in self.pollers.values()), return_exceptions=True)
        self._tasks.clear()

    async def apply(self, settings: Settings) -> Change:
        """Run ``settings``'s targets: start the added, stop the removed, restart the changed, keep the rest."""
        old = {key: _effective(self.settings, t) for key, t in targets(self.settings)}
        new = {key: _effective(settings, t) for key, t in targets(settings)}
        removed = [key for key in old if key not in new]
        restarted = [key for key in old if key in new and old[key] != new[key]]
        added = [key for key in new if key not in old]
        for key in removed + restarted:
            await self._stop(key)
        self.settings = settings
        for key, target in targets(settings):
            if key not in self.pollers:
                self.pollers[key] = self._build(target)
                await self._start(key)
        self.pollers = {key: self.pollers[key] for key in new}  # the config's order
        return Change(added, removed, restarted, kept=len(new) - len(added) - len(restarted))

    def _build(self, target: PostgresTarget | RedisTarget) -> TargetPoller:
        poller = build_poller(self.settings, target, self.store)
        poller.cycle_slots = self.cycle_slots
        return poller

    async def _start(self, key: TargetKey) -> None:
        poller = self.pollers[key]
        await poller.open()
        self._tasks[key] = asyncio.create_task(poller.run(), name=f"poller:{poller.name}")

    async def _stop(self, key: TargetKey) -> None:
        poller, task = self.pollers.pop(key), self._tasks.pop(key)
        task.cancel()
        await asyncio.wait([task], timeout=STOP_GRACE)
        try:
            await poller.close()
        except Exception as exc:  # task boundary: a failed close must not stop the reload
            log.warning("target %s: closing its connections failed: %s", poller.name, type(exc).__name__)
        self.store.drop(poller.name)
