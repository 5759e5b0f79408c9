"""PostgreSQL collectors against real servers (PG 18 wheel and Debian PG 15), as a pg_monitor-only role."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import psycopg
import pytest

from pgwatch_cpa.collectors import POSTGRES_COLLECTORS
from pgwatch_cpa.config import PostgresTarget, settings_from_mapping
from pgwatch_cpa.daemon.lifecycle import Daemon
from pgwatch_cpa.daemon.postgres_poller import PostgresPoller
from pgwatch_cpa.daemon.snapshot import SnapshotStore
from pgwatch_cpa.sandbox import PostgresSandbox, free_port
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

MONITOR, MONITOR_PW = "monitor", "m0nitor-pw"
SSN = "123-45-6789"


def setup_server(pg: PostgresSandbox) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as su:
        su.execute(f"CREATE ROLE {MONITOR} LOGIN PASSWORD '{MONITOR_PW}' IN ROLE pg_monitor")
        su.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        su.execute("CREATE DATABASE noext")


@pytest.fixture(scope="module")
def pg(pg_server: PostgresSandbox) -> PostgresSandbox:
    setup_server(pg_server)
    return pg_server


def su_connect(pg: PostgresSandbox, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection:
    return psycopg.connect(pg.dsn(dbname=dbname), autocommit=True, **kwargs)


def target(pg: PostgresSandbox, dbname: str = "postgres", **extra: Any) -> PostgresTarget:
    raw = {"name": "db", "dsn": pg.dsn(MONITOR, MONITOR_PW, dbname=dbname), **extra}
    return settings_from_mapping({"postgres": [raw]}, {}).postgres[0]


class Harness:
    """The real poller and snapshot store; each poll() runs every collector (slow ones included)."""

    def __init__(self, settings: PostgresTarget, interval: float = 15.0) -> None:
        self.store = SnapshotStore()
        self.poller = PostgresPoller("db", interval, [c() for c in POSTGRES_COLLECTORS], settings, self.store)

    async def __aenter__(self) -> Harness:
        await self.poller.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.poller.close()

    async def poll(self) -> bool:
        self.poller._last_run.clear()  # every collector is due, whatever its interval
        return await self.poller.poll_once()

    async def poll_until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            await self.poll()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.3)

    def samples(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(lab, v) for n, lab, v in self.store.samples()
                if n == name and all(lab.get(k) == want for k, want in labels.items())]

    def value(self, name: str, **labels: str) -> float | None:
        found = self.samples(name, **labels)
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
        return found[0][1] if found else None

    def success(self, collector: str) -> float | None:
        return self.value("pgwatch_collector_success", collector=collector)


def pgwatch_connections(pg: PostgresSandbox) -> int:
    with su_connect(pg) as su:
        return su.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgwatch-cpa'"
                          ).fetchone()[0]


# ------------------------------------------------------------------ activity


async def test_idle_in_transaction_session_age(pg):
    async with Harness(target(pg)) as h:
        with psycopg.connect(pg.dsn(), application_name="cpa-app") as other:  # not autocommit
            other.execute("SELECT 1")  # opens the transaction, then the session sits idle in it
            opened = time.monotonic()
            await asyncio.sleep(1.5)
            await h.poll()
            elapsed = time.monotonic() - opened
            xact_age = h.value("pg_stat_activity_oldest_xact_age_seconds", state="idle in transaction")
            idle_age = h.value("pg_stat_activity_idle_in_transaction_seconds")
            assert 1.3 <= xact_age <= elapsed + 0.5
            assert 1.3 <= idle_age <= elapsed + 0.5
            assert h.value("pg_stat_activity_connections", datname="postgres", state="idle in transaction") >= 1
            assert h.value("pg_stat_activity_application_connections", application_name="cpa-app") == 1
            other.rollback()
        # the monitoring backend itself is never counted
        assert not h.samples("pg_stat_activity_connections", state="active")
        limits = h.value("pg_settings_max_connections")
        with su_connect(pg) as su:
            assert limits == float(su.execute("SHOW max_connections").fetchone()[0])


async def test_long_running_and_blocked_sessions(pg):
    with su_connect(pg) as su:
        su.execute("CREATE TABLE locked_t (id int PRIMARY KEY)")
    async with Harness(target(pg, long_query_threshold="500ms")) as h:
        holder = su_connect(pg)
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE locked_t IN ACCESS EXCLUSIVE MODE")
        waiter = threading.Thread(target=lambda: su_connect(pg).execute("SELECT count(*) FROM locked_t").close())
        waiter.start()
        try:
            await h.poll_until(lambda: (h.value("pg_stat_activity_blocked_backends") or 0) >= 1
                               and (h.value("pg_stat_activity_long_running_queries") or 0) >= 1)
            assert h.value("pg_locks_waiting") >= 1
            assert h.value("pg_locks", datname="postgres", mode="AccessExclusiveLock", granted="true") >= 1
            assert h.value("pg_stat_activity_active_wait_event_type_connections", wait_event_type="Lock") >= 1
            # table_size needs an AccessShareLock on every table: it fails after lock_timeout, the rest exports
            assert h.success("table_size") == 0
            assert h.success("activity") == 1 and h.success("tables") == 1 and h.success("database") == 1
            assert h.value("pg_up") == 1
            assert h.value("pg_stat_database_numbackends", datname="postgres") >= 1
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            waiter.join(10)
        await h.poll()
        assert h.success("table_size") == 1
        assert h.value("pg_table_size_bytes", relname="locked_t", datname="postgres") is not None


# ------------------------------------------------------------------ statements


async def test_slow_statement_counted_and_own_statements_excluded(pg):
    with su_connect(pg) as su:
        su.execute("SELECT pg_sleep(0.3)")
    async with Harness(target(pg, slow_query_threshold="200ms")) as h:
        await h.poll()
        assert h.value("pg_stat_statements_slow_statements") >= 1
        assert h.value("pg_stat_statements_slow_threshold_seconds") == pytest.approx(0.2)
        slow = [v for _lab, v in h.samples("pg_stat_statements_mean_seconds", user="postgres") if v >= 0.3]
        assert slow, "the pg_sleep(0.3) statement is in the top N"
        assert not h.samples("pg_stat_statements_calls_total", user=MONITOR)
        assert h.success("statements") == 1


async def test_top_n_plus_other_keeps_totals_exact(pg):
    with su_connect(pg) as su:
        for i in range(8):
            su.execute(f"SELECT {i} AS c{i}")  # distinct shapes (column aliases differ)
    async with Harness(target(pg, top_n=3)) as h:
        await h.poll()
        with su_connect(pg) as su:
            calls, statements = su.execute(
                "SELECT sum(calls), count(DISTINCT (queryid, userid, dbid)) FROM pg_stat_statements "
                "WHERE userid <> (SELECT oid FROM pg_roles WHERE rolname = %s)", (MONITOR,)).fetchone()
        series = h.samples("pg_stat_statements_calls_total")
        assert len(series) == 4 and sum(1 for lab, _v in series if lab["queryid"] == "other") == 1
        assert sum(v for _lab, v in series) == float(calls)
        assert h.value("pg_stat_statements_statements") == float(statements)
        total_time = sum(v for _lab, v in h.samples("pg_stat_statements_seconds_total"))
        top = [v for lab, v in h.samples("pg_stat_statements_seconds_total") if lab["queryid"] != "other"]
        other = h.value("pg_stat_statements_seconds_total", queryid="other")
        assert min(top) >= 0 and total_time == pytest.approx(sum(top) + other)


async def test_missing_extension_disables_statements_once(pg, caplog):
    caplog.set_level(logging.WARNING)
    async with Harness(target(pg, dbname="noext")) as h:
        for _ in range(3):
            await h.poll()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "statements" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "pg_stat_statements" in warnings[0].getMessage()
    assert h.value("pgwatch_collector_enabled", collector="statements") == 0
    assert h.value("pgwatch_collector_success", collector="statements") == 0
    assert not h.samples("pg_stat_statements_calls_total")
    assert h.value("pgwatch_collector_enabled", collector="activity") == 1
    assert h.success("activity") == 1 and h.value("pg_settings_max_connections") is not None
    assert h.value("pg_tables", datname="noext") == 0


# ------------------------------------------------------------------ indexes and tables


async def test_unused_and_invalid_indexes(pg):
    with su_connect(pg) as su:
        su.execute("CREATE TABLE idx_t (id bigint PRIMARY KEY, a int, b int)")
        su.execute("CREATE INDEX idx_t_a ON idx_t (a)")
        su.execute("CREATE UNIQUE INDEX idx_t_b_uniq ON idx_t (b)")
        su.execute("INSERT INTO idx_t SELECT g, g % 10, g FROM generate_series(1, 1000) g")
        su.execute("CREATE TABLE dup_t (a int)")
        su.execute("INSERT INTO dup_t VALUES (1), (1)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            su.execute("CREATE UNIQUE INDEX CONCURRENTLY dup_t_a ON dup_t (a)")  # leaves an INVALID index
    async with Harness(target(pg)) as h:
        await h.poll()
        unused = {lab["indexrelname"]: v for lab, v in h.samples("pg_stat_user_indexes_unused_bytes",
                                                                  datname="postgres")}
        assert "idx_t_a" in unused and unused["idx_t_a"] > 0
        assert "idx_t_pkey" not in unused and "idx_t_b_uniq" not in unused and "dup_t_a" not in unused
        assert h.value("pg_stat_user_indexes_invalid", indexrelname="dup_t_a") == 1
        assert h.value("pg_indexes_invalid", datname="postgres") >= 1
        assert h.value("pg_indexes_unused", datname="postgres") >= 1
        assert h.value("pg_indexes_unused_bytes", datname="postgres") >= unused["idx_t_a"]
        assert h.value("pg_stat_user_indexes_size_bytes", indexrelname="idx_t_pkey") > 0


async def test_tables_read_mostly_by_seq_scans_follow_the_guides_rule(pg):
    """seq_scan > coalesce(idx_scan, 0) on more than 1,000 live rows (the default): a few scans of a large table
    without an index count, many scans of a small table do not, nor does a large table read through its index."""
    with su_connect(pg) as su:
        su.execute("CREATE TABLE noidx_t (a int)")
        su.execute("INSERT INTO noidx_t SELECT generate_series(1, 1500)")
        su.execute("CREATE TABLE small_t (a int)")
        su.execute("INSERT INTO small_t SELECT generate_series(1, 100)")
        su.execute("CREATE TABLE indexed_t (id int PRIMARY KEY)")
        su.execute("INSERT INTO indexed_t SELECT generate_series(1, 1500)")
    with su_connect(pg) as worker:  # closing the session flushes its table statistics
        worker.execute("SET enable_seqscan = off")
        for _ in range(3):
            worker.execute("SELECT count(*) FROM noidx_t")
            worker.execute("SELECT * FROM indexed_t WHERE id = 5")
        for _ in range(20):
            worker.execute("SELECT count(*) FROM small_t")
    async with Harness(target(pg)) as h:
        await h.poll_until(lambda: (h.value("pg_stat_user_tables_seq_scan_heavy", relname="noidx_t") or 0) >= 3)
        assert h.value("pg_stat_user_tables_idx_scan_total", relname="noidx_t") == 0  # NULL became 0
        assert h.value("pg_stat_user_tables_seq_scan_heavy", relname="small_t") is None
        assert h.value("pg_stat_user_tables_seq_scan_total", relname="small_t") >= 20
        assert h.value("pg_stat_user_tables_seq_scan_heavy", relname="indexed_t") is None
        assert h.value("pg_tables_seq_scan_heavy", datname="postgres") >= 1
        assert h.value("pg_stat_user_tables_n_live_tup", relname="noidx_t", datname="postgres") == 1500
    async with Harness(target(pg, seq_scan_min_live_rows=50)) as h:
        await h.poll_until(lambda: (h.value("pg_stat_user_tables_seq_scan_heavy", relname="small_t") or 0) >= 20)


# ------------------------------------------------------------------ database, settings, replication


async def test_cache_hit_ratio_matches_pg_stat_database(pg):
    async with Harness(target(pg)) as h:
        await h.poll()
        exported = h.value("pg_stat_database_cache_hit_ratio", datname="postgres")
        hit = h.value("pg_stat_database_blks_hit_total", datname="postgres")
        read = h.value("pg_stat_database_blks_read_total", datname="postgres")
        with su_connect(pg) as su:
            independent = su.execute("SELECT blks_hit::float8 / (blks_hit + blks_read) FROM pg_stat_database "
                                     "WHERE datname = 'postgres'").fetchone()[0]
        assert exported == pytest.approx(hit / (hit + read))
        assert abs(exported - independent) < 0.01
        # a database never read has no ratio (NULLIF) rather than a division-by-zero error
        assert h.success("database") == 1
        assert h.value("pg_database_frozen_xid_age", datname="postgres") > 0
        assert h.value("pg_database_size_bytes", datname="postgres") > 1_000_000


async def test_settings_and_checkpointer_in_base_units(pg):
    async with Harness(target(pg)) as h:
        await h.poll()
        with su_connect(pg) as su:
            shared, work_mem, timeout = su.execute(
                "SELECT pg_size_bytes(current_setting('shared_buffers')), pg_size_bytes(current_setting('work_mem')),"
                " (SELECT setting::int FROM pg_settings WHERE name = 'checkpoint_timeout')").fetchone()
        assert h.value("pg_settings_shared_buffers_bytes") == shared
        assert h.value("pg_settings_work_mem_bytes") == work_mem
        assert h.value("pg_settings_checkpoint_timeout_seconds") == timeout
        assert h.value("pg_settings_track_io_timing") == 1
        assert h.value("pg_stat_checkpointer_num_timed_total") is not None
        assert h.value("pg_stat_bgwriter_buffers_alloc_total") > 0
        assert h.value("pg_stat_wal_bytes_total") > 0 and h.value("pg_stat_wal_write_total") is not None
        for collector in ("settings", "bgwriter", "wal", "replication", "locks"):
            assert h.success(collector) == 1, collector


async def test_replication_slot_retained_wal(pg):
    with su_connect(pg) as su:
        su.execute("SELECT pg_create_physical_replication_slot('pgwatch_test_slot', true)")
    try:
        async with Harness(target(pg)) as h:
            await h.poll()
            assert h.value("pg_replication_is_replica") == 0
            assert h.value("pg_replication_slots_active", slot_name="pgwatch_test_slot") == 0
            assert h.value("pg_replication_slots_retained_wal_bytes", slot_name="pgwatch_test_slot") > 0
    finally:
        with su_connect(pg) as su:
            su.execute("SELECT pg_drop_replication_slot('pgwatch_test_slot')")


# ------------------------------------------------------------------ multi-database


async def test_discovery_bounded_connections_and_dropped_database(pg, caplog, monkeypatch):
    with su_connect(pg) as su:
        for db in ("cpa_a", "cpa_b", "cpa_c"):
            su.execute(f"CREATE DATABASE {db}")
            with su_connect(pg, db) as c:
                c.execute("CREATE TABLE items (id int PRIMARY KEY, v int)")
    caplog.set_level(logging.INFO)
    async with Harness(target(pg, discover={"include": "cpa_.*", "exclude": "cpa_c"})) as h:
        await h.poll()
        assert h.poller.databases == ["cpa_a", "cpa_b"]
        assert {lab["datname"] for lab, _v in h.samples("pg_tables")} == {"cpa_a", "cpa_b"}
        assert h.value("pg_stat_user_tables_n_live_tup", datname="cpa_a", relname="items") == 0
        for _ in range(3):
            await h.poll()
            assert h.poller.connections.open_count <= 2
            assert pgwatch_connections(pg) <= 2

        # dropped between cycles: discovery no longer lists it, its series go, no warning
        with su_connect(pg) as su:
            su.execute("DROP DATABASE cpa_b WITH (FORCE)")
        await h.poll()
        assert h.poller.databases == ["cpa_a"]
        assert {lab["datname"] for lab, _v in h.samples("pg_tables")} == {"cpa_a"}
        # two databases (the DSN's and cpa_a), two connections: reused across cycles, none opened
        opened = h.poller.connections.opened
        for _ in range(3):
            await h.poll()
        assert h.poller.connections.opened == opened

        # dropped while being polled (discovery still listed it): the failure is recognised, not reported
        stale = h.poller._discover

        async def stale_discovery(conn):
            return [*await stale(conn), "cpa_a_gone"]

        with su_connect(pg) as su:
            su.execute("CREATE DATABASE cpa_a_gone")
        monkeypatch.setattr(h.poller, "_discover", stale_discovery)
        await h.poll()
        with su_connect(pg) as su:
            su.execute("DROP DATABASE cpa_a_gone WITH (FORCE)")
        await h.poll()
        for collector in ("tables", "indexes", "table_size"):
            assert h.success(collector) == 1
        assert not h.samples("pg_tables", datname="cpa_a_gone")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert h.poller.connections.open_count == 0


# ------------------------------------------------------------------ the daemon end to end


async def scrape_daemon(settings_raw: dict[str, Any], until: Callable[[Daemon], bool] | None = None,
                        accept: str | None = None) -> str:
    port = free_port()
    settings = settings_from_mapping({"listen": f"127.0.0.1:{port}", "interval": "1s", **settings_raw}, {})
    daemon = Daemon(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.serve(stop))
    try:
        deadline = time.monotonic() + 20
        while not (all(p.cycles_completed >= 1 for p in daemon.pollers) and (until is None or until(daemon))):
            assert time.monotonic() < deadline, "daemon did not complete its cycles"
            await asyncio.sleep(0.1)
        headers = {"Accept": accept} if accept else {}
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics",
                                                             headers=headers) as resp:
            assert resp.status == 200
            return await resp.text()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_literal_in_running_query_never_reaches_metrics_or_logs(pg, caplog):
    caplog.set_level(logging.DEBUG)
    with su_connect(pg) as su:
        su.execute(f"SELECT '{SSN}'::text AS ssn")  # completed: pg_stat_statements keeps it normalised
    running = threading.Thread(target=lambda: su_connect(pg, application_name="cpa-app").execute(
        f"SELECT pg_sleep(4), '{SSN}'").close())
    running.start()
    try:
        def saw_it(daemon: Daemon) -> bool:
            return any(n == "pg_stat_activity_long_running_queries" and v >= 1
                       for n, _lab, v in daemon.store.samples())

        body = await scrape_daemon({"postgres": [{
            "name": "db", "dsn": pg.dsn(MONITOR, MONITOR_PW), "long_query_threshold": "300ms",
            "query_text": True, "slow_query_threshold": "100ms"}]}, until=saw_it)
    finally:
        running.join(10)
    assert "pg_stat_activity_long_running_queries" in body
    assert "pg_stat_statements_query_info" in body  # the opt-in text path ran
    assert SSN not in body
    assert SSN not in caplog.text
    assert "AS ssn" in body  # the normalised text of that statement is there, without its literal


async def test_promtool_check_metrics_reports_nothing(pg):
    promtool = require_tool("promtool")
    with su_connect(pg, application_name="cpa-web"):  # an application session to count
        body = await scrape_daemon({"postgres": [{"name": "db", "dsn": pg.dsn(MONITOR, MONITOR_PW),
                                                  "query_text": True}]})
    assert "pg_stat_activity_connections" in body and "pg_stat_statements_calls_total" in body
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr)


# ------------------------------------------------------------------ restart (own server: it is stopped)


async def test_server_restart_gives_down_then_up_without_leaks(fresh_pg_server):
    pg = fresh_pg_server
    setup_server(pg)
    async with Harness(target(pg)) as h:
        await h.poll()
        assert h.value("pg_up") == 1
        assert pgwatch_connections(pg) <= 2
        pg.stop()
        assert await h.poll() is False
        assert h.value("pg_up") == 0
        assert not h.samples("pg_stat_activity_connections") and h.success("activity") == 0
        pg.start_again()
        assert await h.poll() is True
        assert h.value("pg_up") == 1
        assert h.success("activity") == 1 and h.success("statements") == 1
        for _ in range(5):
            await h.poll()
            assert h.poller.connections.open_count <= 2
        assert pgwatch_connections(pg) <= 2
    deadline = time.monotonic() + 5
    while pgwatch_connections(pg) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert pgwatch_connections(pg) == 0
