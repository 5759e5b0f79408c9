"""One polling loop per target: probe reachability, run the due collectors concurrently, store snapshots.

Scheduling: each target starts its cycles at its own phase of the interval (a hash of its kind and name, so the
spread survives restarts and no two targets herd at the same instant); a cycle that takes longer than the
interval is counted as an overrun and the next one starts at once, never beside it; the collections of all
targets share a bounded number of slots (``max_concurrent_cycles``). A target takes a slot only after its probe
answered, so unreachable or hung targets, whose probes end at the probe timeout, never hold one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from prometheus_client.core import Metric

from pgwatch_cpa.collectors.base import Collector, CollectorDisabled
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.daemon.snapshot import SnapshotStore
from pgwatch_cpa.secrets import describe

log = logging.getLogger(__name__)

POLLER_SLOT = "_poller"  # the store slot for the poller's own metrics (up, collector health)
MIN_BACKOFF = 1.0
# Target kinds cut their own I/O at the probe or collector timeout (client deadlines, socket timeouts); the
# task is cancelled outright this much later, should a client library not honour its deadline.
TIMEOUT_BACKSTOP = 1.0
DEFAULT_CYCLE_SLOTS = 16


def start_phase(kind: str, name: str, interval: float) -> float:
    """Where in the interval the target's cycles start, in [0, interval): stable across processes (blake2b, not
    hash(), which Python salts per process), and uniform over the targets' names."""
    digest = hashlib.blake2b(f"{kind}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * interval


class TargetPoller(ABC):
    """Polls one target on its interval. Never raises out of run(): every fault becomes a metric."""

    kind: str
    up_metric: str
    up_help: str

    def __init__(self, name: str, interval: float, collectors: Sequence[Collector], settings: Any,
                 store: SnapshotStore) -> None:
        self.name = name
        self.interval = interval
        self.settings = settings
        self.store = store
        overrides = getattr(settings, "collectors", {})
        self.collectors = [c for c in collectors if overrides.get(c.name) is None or overrides[c.name].enabled]
        self._intervals = {c.name: _collector_interval(c, overrides.get(c.name), interval) for c in self.collectors}
        self._last_run: dict[str, float] = {}
        self._disabled: dict[str, str] = {}
        self._health: dict[str, tuple[bool, float]] = {}
        self._state: dict[str, dict[str, Any]] = {c.name: {} for c in self.collectors}
        self._up: bool | None = None
        self.attempts = 0
        self.errors = 0
        self.cycles_completed = 0
        self.cycle_overruns = 0
        self.phase = start_phase(self.kind, name, interval)
        self.cycle_slots = asyncio.Semaphore(DEFAULT_CYCLE_SLOTS)  # the Fleet gives every target one shared semaphore
        self._cycle_started = 0.0
        self._cycle_duration = 0.0

    # -- lifecycle implemented per kind

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def probe(self) -> None:
        """Raise if the target cannot be reached and queried right now."""

    @abstractmethod
    def context(self, collector: Collector) -> Any:
        """An async context manager yielding the collector's context for one run."""

    # -- the loop

    async def run(self) -> None:
        """The first cycle at once (readiness), then cycles at ``anchor + phase + k * interval``; a down target
        is retried with a doubling backoff instead, and rejoins its phase once up."""
        anchor = time.monotonic()
        backoff = MIN_BACKOFF
        while True:
            started = time.monotonic()
            up = await self.poll_once()
            backoff = MIN_BACKOFF if up else min(backoff * 2, self.interval)
            next_start = self._next_slot(anchor, started) if up else started + backoff
            await asyncio.sleep(max(0.0, next_start - time.monotonic()))

    def _next_slot(self, anchor: float, started: float) -> float:
        """The first start of this target's phase at least half an interval after ``started``: one interval
        after a cycle that started on time; after an overrun (it started late) the slot may already be past,
        and the next cycle starts at once."""
        slots_ahead = (started + self.interval / 2 - anchor - self.phase) // self.interval + 1
        return anchor + self.phase + slots_ahead * self.interval

    async def poll_once(self) -> bool:
        self._cycle_started = time.monotonic()
        self.attempts += 1
        try:
            async with asyncio.timeout(self.probe_timeout + TIMEOUT_BACKSTOP):
                await self.probe()
        except Exception as exc:  # task boundary: any failure to reach the target means "down"
            self.errors += 1
            self._set_up(False, exc)
            for collector in self.collectors:
                self.store.put(self.name, collector.name, ())
            self._end_cycle()
            return False
        self._set_up(True, None)
        async with self.cycle_slots:
            now = time.monotonic()
            due = [c for c in self.collectors if c.name not in self._disabled and self._is_due(c, now)]
            await self.run_collectors(due)
        self._end_cycle()
        return True

    def _end_cycle(self) -> None:
        self._cycle_duration = time.monotonic() - self._cycle_started
        if self._cycle_duration > self.interval:
            self.cycle_overruns += 1
        self._publish_own_metrics()
        self.cycles_completed += 1

    async def run_collectors(self, due: Sequence[Collector]) -> None:
        """Run this cycle's due collectors, concurrently. A target kind may group them differently."""
        await asyncio.gather(*(self._run_collector(c) for c in due))

    def _is_due(self, collector: Collector, now: float) -> bool:
        last = self._last_run.get(collector.name)
        # A small slack so a collector on the target's own interval is not skipped by scheduling jitter.
        return last is None or now - last >= self._intervals[collector.name] - 0.5

    async def _run_collector(self, collector: Collector) -> None:
        started = time.monotonic()
        out = MetricSet({"target": self.name})
        try:
            async with asyncio.timeout(self.collector_timeout + TIMEOUT_BACKSTOP), self.context(collector) as ctx:
                await collector.collect(ctx, out)
        except CollectorDisabled as exc:
            self.disable(collector, exc)
            return
        except Exception as exc:  # task boundary: one collector's failure never hides another's samples
            self.finish(collector, started, time.monotonic() - started, exc, ())
            return
        self.finish(collector, started, time.monotonic() - started, None, out.families())

    def disable(self, collector: Collector, reason: BaseException) -> None:
        """Stop running a collector that can never work on this target, after one WARNING."""
        self._disabled[collector.name] = str(reason)
        log.warning("target %s: collector %s disabled: %s", self.name, collector.name, describe(reason))
        self.store.put(self.name, collector.name, ())

    def finish(self, collector: Collector, started: float, duration: float, failure: BaseException | None,
               families: tuple[Metric, ...]) -> None:
        """Record one run of a collector: its health, and the samples it produced (even after a partial failure)."""
        if failure is None:
            self._last_run[collector.name] = started
        self._record_health(collector.name, failure is None, duration, failure)
        self.store.put(self.name, collector.name, families)

    @property
    def collector_timeout(self) -> float:
        return max(1.0, min(self.interval, 30.0))

    @property
    def probe_timeout(self) -> float:
        """A target whose probe takes longer is down: so a hung target is reported within two intervals."""
        return self.collector_timeout

    def _record_health(self, collector: str, ok: bool, duration: float, exc: BaseException | None) -> None:
        previous = self._health.get(collector)
        self._health[collector] = (ok, duration)
        if not ok and (previous is None or previous[0]):
            log.warning("target %s: collector %s failed: %s", self.name, collector, describe(exc))
        elif ok and previous is not None and not previous[0]:
            log.info("target %s: collector %s recovered", self.name, collector)

    def _set_up(self, up: bool, exc: BaseException | None) -> None:
        if up == self._up:
            return
        if up:
            log.info("target %s (%s) is up", self.name, self.kind)
        else:
            log.warning("target %s (%s) is down: %s", self.name, self.kind, describe(exc))
        self._up = up

    def _publish_own_metrics(self) -> None:
        out = MetricSet({"target": self.name})
        out.gauge(self.up_metric, self.up_help, 1.0 if self._up else 0.0)
        out.counter("pgwatch_connection_attempts_total", "Reachability probes of the target.", self.attempts)
        out.counter("pgwatch_connection_errors_total", "Reachability probes that failed.", self.errors)
        out.gauge("pgwatch_cycle_duration_seconds", "Duration of the target's last cycle (probe, waiting for a slot, "
                  "collectors).", self._cycle_duration)
        out.counter("pgwatch_cycle_overruns_total", "Cycles that took longer than the target's interval (the next "
                    "one then started at once, never beside it).", self.cycle_overruns)
        for collector in self.collectors:
            labels = {"collector": collector.name}
            out.gauge("pgwatch_collector_enabled", "1 if the collector runs on this target, 0 if disabled.",
                      0.0 if collector.name in self._disabled else 1.0, labels)
            ok, duration = self._health.get(collector.name, (False, 0.0))
            if collector.name in self._disabled or not self._up:
                ok = False
            out.gauge("pgwatch_collector_success", "1 if the collector's last run succeeded.", 1.0 if ok else 0.0,
                      labels)
            out.gauge("pgwatch_collector_duration_seconds", "Duration of the collector's last run.", duration,
                      labels)
        self.store.put(self.name, POLLER_SLOT, out.families())


def _collector_interval(collector: Collector, override: Any, default: float) -> float:
    if override is not None and override.interval:
        return float(override.interval)
    return max(default, collector.default_interval or 0.0)

