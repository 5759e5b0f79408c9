"""The PostgreSQL poller: instance-wide collectors on the DSN's database, per-database collectors on each
polled database, over a small connection cache shared by all databases of the target."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric

from pgwatch_cpa.collectors.base import Collector, CollectorDisabled
from pgwatch_cpa.collectors.metric_set import MetricSet, merge_families
from pgwatch_cpa.collectors.postgres.common import INVALID_UTF8, ROWS_SKIPPED, PgCollector, Skipped, skip_rows
from pgwatch_cpa.collectors.postgres.encoding import lossy
from pgwatch_cpa.daemon.poller import TargetPoller, describe

log = logging.getLogger(__name__)

DISCOVERY = "discovery"  # the collector label of the databases discovery skipped
SKIPPED_SLOT = "_rows_skipped"  # the store slot of pgwatch_rows_skipped_total


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
        self._discovery_state: dict[str, Any] = {}  # what discovery skipped (ROWS_SKIPPED), like a collector's
        self._skips_logged: set[str] = set()  # reasons already logged: one WARNING per reason and target

    @property
    def probe_timeout(self) -> float:
        # The probe is one trivial statement: a server that cannot answer it within statement_timeout is hung.
        return max(1.0, min(self.interval, self.settings.statement_timeout))

    async def open(self) -> None:
        from pgwatch_cpa.daemon.pg_connections import PgConnections

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
        async with self.connections.connection(None, deadline=self.probe_timeout) as (conn, reused):
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
            return self._connectable([self._database])
        cur = await conn.execute(load("pg_databases", self._server_version).text)
        existing = [row[0] for row in await cur.fetchall()]
        if s.databases is not None:
            existing = [d for d in existing if not lossy(d)]  # the configuration cannot name them
            for name in s.databases:
                if name not in existing and name not in self._missing_logged:
                    self._missing_logged.add(name)
                    log.warning("target %s: database %r does not exist or lacks CONNECT; not polled",
                                self.name, name)
            return [name for name in s.databases if name in existing]
        return self._connectable([d for d in existing if s.discover.matches(d)])

    def _connectable(self, names: list[str]) -> list[str]:
        """``names`` without those that are not valid UTF-8: decoded with U+FFFD, they name no database we could
        connect to. Each is skipped and counted, every cycle (before, it failed the probe: a false pg_up 0)."""
        for name in names:
            if lossy(name):
                skip_rows(self._discovery_state, INVALID_UTF8,
                          f"database name {name!a} is not valid UTF-8; it cannot be connected to by name "
                          "and is not polled")
        return [name for name in names if not lossy(name)]

    def _publish_own_metrics(self) -> None:
        super()._publish_own_metrics()
        out = MetricSet({"target": self.name})
        sources = [(DISCOVERY, self._discovery_state), *((c.name, self._state[c.name]) for c in self.collectors)]
        for collector, state in sources:
            skipped: dict[str, Skipped] = state.get(ROWS_SKIPPED, {})
            for reason, entry in sorted(skipped.items()):
                if reason not in self._skips_logged:
                    self._skips_logged.add(reason)
                    log.warning("target %s: %s skipped a row: %s; rows skipped for this reason are counted in "
                                "pgwatch_rows_skipped_total{reason=\"%s\"} and not logged again", self.name,
                                "discovery" if collector == DISCOVERY else f"collector {collector}", entry.example,
                                reason)
                out.counter("pgwatch_rows_skipped_total",
                            "Rows not exported because a value could not be used (not valid UTF-8, not convertible).",
                            entry.count, {"collector": collector, "reason": reason})
        self.store.put(self.name, SKIPPED_SLOT, out.families())

    @asynccontextmanager
    async def context(self, collector: Collector, database: str | None = None) -> AsyncIterator[Any]:
        from pgwatch_cpa.collectors.base import PgContext

        async with self.connections.connection(database, deadline=self.collector_timeout) as (conn, _reused):
            yield PgContext(self.name, conn, self._server_version, self.settings, database or self._database,
                            self._extensions, self._state[collector.name])

    async def run_collectors(self, due: Sequence[Collector]) -> None:
        """Instance-wide collectors run concurrently; per-database collectors run together, database by database,
        so that each database needs one connection per cycle (kept, if max_connections allows) rather than one
        per collector."""
        per_database = [c for c in due if isinstance(c, PgCollector) and c.per_database]
        instance_wide = [c for c in due if c not in per_database]
        await asyncio.gather(super().run_collectors(instance_wide), self._run_per_database(per_database))

    async def _run_per_database(self, collectors: Sequence[Collector]) -> None:
        if not collectors:
            return
        outcomes = await self._run_databases(collectors)
        for collector in collectors:
            outcome = outcomes[collector.name]
            if outcome.disabled is not None:
                self.disable(collector, outcome.disabled)
            else:
                # one database's failure never hides the other databases' samples
                self.finish(collector, outcome.started, outcome.duration, outcome.failure,
                            merge_families(outcome.results, unique=True))

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
                    async with self.context(collector, database) as ctx:
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
            async with self.connections.connection(None, deadline=self.probe_timeout) as (conn, _reused):
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
