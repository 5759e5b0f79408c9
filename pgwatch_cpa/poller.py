"""One polling loop per target: probe reachability, run the due collectors concurrently, store snapshots."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric

from pgwatch_cpa.collectors.base import Collector, CollectorDisabled
from pgwatch_cpa.secrets import REDACTOR
from pgwatch_cpa.snapshot import MetricSet, SnapshotStore

log = logging.getLogger(__name__)

POLLER_SLOT = "_poller"  # the store slot for the poller's own metrics (up, collector health)
MIN_BACKOFF = 1.0


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
        backoff = MIN_BACKOFF
        while True:
            started = time.monotonic()
            up = await self.poll_once()
            backoff = MIN_BACKOFF if up else min(backoff * 2, self.interval)
            delay = self.interval if up else backoff
            await asyncio.sleep(max(0.0, delay - (time.monotonic() - started)))

    async def poll_once(self) -> bool:
        self.attempts += 1
        try:
            await self.probe()
        except Exception as exc:  # task boundary: any failure to reach the target means "down"
            self.errors += 1
            self._set_up(False, exc)
            for collector in self.collectors:
                self.store.put(self.name, collector.name, ())
            self._publish_own_metrics()
            self.cycles_completed += 1
            return False
        self._set_up(True, None)
        now = time.monotonic()
        due = [c for c in self.collectors if c.name not in self._disabled and self._is_due(c, now)]
        await asyncio.gather(*(self._run_collector(c) for c in due))
        self._publish_own_metrics()
        self.cycles_completed += 1
        return True

    def _is_due(self, collector: Collector, now: float) -> bool:
        last = self._last_run.get(collector.name)
        # A small slack so a collector on the target's own interval is not skipped by scheduling jitter.
        return last is None or now - last >= self._intervals[collector.name] - 0.5

    async def _run_collector(self, collector: Collector) -> None:
        started = time.monotonic()
        out = MetricSet({"target": self.name})
        try:
            async with asyncio.timeout(self.collector_timeout), self.context(collector) as ctx:
                await collector.collect(ctx, out)
        except CollectorDisabled as exc:
            self._disabled[collector.name] = str(exc)
            log.warning("target %s: collector %s disabled: %s", self.name, collector.name, exc)
            self.store.put(self.name, collector.name, ())
            return
        except Exception as exc:  # task boundary: one collector's failure never hides another's samples
            self._record_health(collector.name, False, time.monotonic() - started, exc)
            self.store.put(self.name, collector.name, ())
            return
        self._last_run[collector.name] = started
        self._record_health(collector.name, True, time.monotonic() - started, None)
        self.store.put(self.name, collector.name, out.families())

    @property
    def collector_timeout(self) -> float:
        return max(1.0, min(self.interval, 30.0))

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

    @property
    def is_up(self) -> bool:
        return bool(self._up)

    def _publish_own_metrics(self) -> None:
        out = MetricSet({"target": self.name})
        out.gauge(self.up_metric, self.up_help, 1.0 if self._up else 0.0)
        out.counter("pgwatch_connection_attempts_total", "Reachability probes of the target.", self.attempts)
        out.counter("pgwatch_connection_errors_total", "Reachability probes that failed.", self.errors)
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


def describe(exc: BaseException | None) -> str:
    """A one-line, secret-free description of an error for logs."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in REDACTOR.secrets():
        text = text.replace(secret, "****")
    return f"{type(exc).__name__}: {text[:300]}"


class PostgresPoller(TargetPoller):
    """Polls one PostgreSQL server; per-database collectors run once per polled database.

    Connections come from a small cache shared by all databases of the target (``max_connections`` at most,
    reused across cycles). Databases come from ``databases`` or ``discover`` (re-read every cycle, so a dropped
    database just disappears), or default to the DSN's database.
    """

    kind = "postgres"
    up_metric = "pg_up"
    up_help = "1 if the PostgreSQL target answered the last probe, 0 otherwise."

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: Any = None
        self._server_version = 0
        self._database = ""
        self._extensions: dict[str, str] = {}
        self.databases: list[str] = []
        self._missing_logged: set[str] = set()
        self._db_failed: set[tuple[str, str]] = set()
        self._probe_reused = False
        self._batch: tuple[int, Any, list[Collector]] = (-1, None, [])

    async def open(self) -> None:
        from pgwatch_cpa.collectors.postgres.connections import PgConnections

        s = self.settings
        self.connections = PgConnections(
            s.conninfo, max_size=s.max_connections, connect_timeout=s.connect_timeout,
            statement_timeout=s.statement_timeout, lock_timeout=s.lock_timeout,
            max_idle=max(300.0, 4 * self.interval))

    async def close(self) -> None:
        if self.connections is not None:
            await self.connections.close()

    async def probe(self) -> None:
        import psycopg

        self._probe_reused = False
        try:
            await self._probe_once()
        except psycopg.OperationalError:
            if not self._probe_reused:
                raise
            # A reused connection may have died with a server restart: drop the idle ones and try once afresh.
            await self.connections.discard_idle()
            await self._probe_once()

    async def _probe_once(self) -> None:
        async with self.connections.connection(None) as (conn, reused):
            self._probe_reused = reused
            cur = await conn.execute(
                "SELECT current_setting('server_version_num')::int, current_database(), "
                "coalesce((SELECT json_object_agg(extname, extversion) FROM pg_catalog.pg_extension), '{}')"
            )
            self._server_version, self._database, self._extensions = await cur.fetchone()
            self.databases = await self._discover(conn)
        await self.connections.retain(self.databases)

    async def _discover(self, conn: Any) -> list[str]:
        from pgwatch_cpa.collectors.postgres.sql import load

        s = self.settings
        if s.databases is None and s.discover is None:
            return [self._database]
        cur = await conn.execute(load("pg_databases", self._server_version).text)
        existing = [row[0] for row in await cur.fetchall()]
        if s.databases is not None:
            for name in s.databases:
                if name not in existing and name not in self._missing_logged:
                    self._missing_logged.add(name)
                    log.warning("target %s: database %r does not exist or lacks CONNECT; not polled",
                                self.name, name)
            return [name for name in s.databases if name in existing]
        include, exclude = re.compile(s.discover.include), s.discover.exclude and re.compile(s.discover.exclude)
        return [d for d in existing if include.fullmatch(d) and not (exclude and exclude.fullmatch(d))]

    @asynccontextmanager
    async def context(self, collector: Collector, database: str | None = None) -> AsyncIterator[Any]:
        from pgwatch_cpa.collectors.base import PgContext

        async with self.connections.connection(database) as (conn, _reused):
            yield PgContext(self.name, conn, self._server_version, self.settings, database or self._database,
                            self._extensions, self._state[collector.name])

    async def _run_collector(self, collector: Collector) -> None:
        if not getattr(collector, "per_database", False):
            await super()._run_collector(collector)
            return
        # Per-database collectors of one cycle run together, database by database, so that each database
        # needs one connection per cycle (and keeps it, if max_connections allows) rather than one per collector.
        cycle, future, members = self._batch
        if cycle != self.attempts:
            now = time.monotonic()
            members = [c for c in self.collectors if getattr(c, "per_database", False)
                       and c.name not in self._disabled and self._is_due(c, now)]
            future = asyncio.get_running_loop().create_future()
            self._batch = (self.attempts, future, members)
            try:
                future.set_result(await self._run_databases(members))
            except BaseException as exc:
                future.set_exception(exc)
                raise
        if collector not in members:
            outcome = (await self._run_databases([collector]))[collector.name]
        else:
            outcome = (await asyncio.shield(future))[collector.name]
        if outcome.disabled is not None:
            self._disabled[collector.name] = str(outcome.disabled)
            log.warning("target %s: collector %s disabled: %s", self.name, collector.name, outcome.disabled)
            self.store.put(self.name, collector.name, ())
            return
        if outcome.failure is None:
            self._last_run[collector.name] = outcome.started
        self._record_health(collector.name, outcome.failure is None, outcome.duration, outcome.failure)
        # one database's failure never hides the other databases' samples
        self.store.put(self.name, collector.name, merge_families(outcome.results))

    async def _run_databases(self, collectors: Sequence[Collector]) -> dict[str, _Outcome]:
        outcomes = {c.name: _Outcome(started=time.monotonic()) for c in collectors}
        for database in list(self.databases):
            for collector in collectors:
                outcome = outcomes[collector.name]
                if outcome.disabled is not None:
                    continue
                out = MetricSet({"target": self.name})
                started = time.monotonic()
                try:
                    async with asyncio.timeout(self.collector_timeout), self.context(collector, database) as ctx:
                        await collector.collect(ctx, out)
                except CollectorDisabled as exc:
                    outcome.disabled = exc
                    continue
                except Exception as exc:  # task boundary for this collector on this database
                    outcome.duration += time.monotonic() - started
                    if await self._database_gone(database):
                        break
                    self._note_db_failure(collector.name, database, exc)
                    outcome.failure = outcome.failure or exc
                    continue
                outcome.duration += time.monotonic() - started
                self._note_db_success(collector.name, database)
                outcome.results.append(out.families())
        return outcomes

    async def _database_gone(self, database: str) -> bool:
        """True if the database was dropped (or lost CONNECT) since discovery: not an error, it just goes."""
        if database == self._database:
            return False
        try:
            async with self.connections.connection(None) as (conn, _reused):
                cur = await conn.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s "
                                         "AND pg_catalog.has_database_privilege(oid, 'CONNECT')", (database,))
                gone = await cur.fetchone() is None
        except Exception:  # cannot tell: count it as a failure of that database
            return False
        if gone:
            log.info("target %s: database %r disappeared; no longer polled", self.name, database)
            self.databases = [d for d in self.databases if d != database]
            await self.connections.discard_idle(database)
        return gone

    def _note_db_failure(self, collector: str, database: str, exc: BaseException) -> None:
        if (collector, database) not in self._db_failed:
            self._db_failed.add((collector, database))
            log.warning("target %s: collector %s failed on database %r: %s", self.name, collector, database,
                        describe(exc))

    def _note_db_success(self, collector: str, database: str) -> None:
        if (collector, database) in self._db_failed:
            self._db_failed.discard((collector, database))
            log.info("target %s: collector %s recovered on database %r", self.name, collector, database)


@dataclass
class _Outcome:
    """What one per-database collector produced over all databases in one cycle."""

    started: float
    duration: float = 0.0
    results: list[tuple[Metric, ...]] = field(default_factory=list)
    failure: BaseException | None = None
    disabled: BaseException | None = None


def merge_families(results: Sequence[tuple[Metric, ...]]) -> tuple[Metric, ...]:
    """Families of several runs (one per database) merged by name."""
    merged: dict[str, Metric] = {}
    for families in results:
        for family in families:
            existing = merged.get(family.name)
            if existing is None:
                existing = merged[family.name] = Metric(family.name, family.documentation, family.type,
                                                        family.unit)
            existing.samples.extend(family.samples)
    return tuple(merged.values())


class RedisPoller(TargetPoller):
    kind = "redis"
    up_metric = "redis_up"
    up_help = "1 if the Redis target answered the last PING, 0 otherwise."

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client: Any = None

    async def open(self) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        s = self.settings
        pool = BlockingConnectionPool.from_url(
            s.resolved_url, max_connections=s.max_connections, timeout=s.timeout,
            socket_timeout=s.timeout, socket_connect_timeout=s.timeout, client_name="pgwatch-cpa",
        )
        # No client-side retries: a failed probe must say "down" now, not after a retry storm.
        self.client = Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            await self.client.connection_pool.disconnect()

    async def probe(self) -> None:
        await self.client.ping()

    @asynccontextmanager
    async def context(self, collector: Collector) -> AsyncIterator[Any]:
        from pgwatch_cpa.collectors.base import RedisContext

        yield RedisContext(self.name, self.client, self.settings, self._state[collector.name])
