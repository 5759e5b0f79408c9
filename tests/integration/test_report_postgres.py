"""The PostgreSQL report against real servers (PG 15 and 18), read as a pg_monitor-only role: planted problems
are found with their numbers, applying a recommendation makes its finding go, a clean database gets none."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pgwatch_cpa.config import PostgresTarget, settings_from_mapping
from pgwatch_cpa.report.model import Finding, Report, TargetReport
from pgwatch_cpa.report.postgres import postgres_target_report
from pgwatch_cpa.sandbox import PostgresSandbox

pytestmark = pytest.mark.integration

MONITOR, MONITOR_PW = "report_monitor", "r3port-pw"
SECRET = "987-65-4321"
_names = itertools.count(1)
INDEX_KINDS = {"unused_index", "low_usage_index", "duplicate_index", "redundant_index", "invalid_index"}
TABLE_KINDS = {"missing_index_candidate", "dead_tuples", "stale_statistics"}


@pytest.fixture(scope="module")
def pg(pg_server: PostgresSandbox) -> PostgresSandbox:
    with su(pg_server) as conn:
        conn.execute(f"CREATE ROLE {MONITOR} LOGIN PASSWORD '{MONITOR_PW}' IN ROLE pg_monitor")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return pg_server


def su(pg: PostgresSandbox, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(pg.dsn(dbname=dbname), autocommit=True)


def new_database(pg: PostgresSandbox, prefix: str) -> str:
    name = f"{prefix}_{next(_names)}"
    with su(pg) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return name


def target(pg: PostgresSandbox, **extra: Any) -> PostgresTarget:
    raw = {"name": "main", "dsn": pg.dsn(MONITOR, MONITOR_PW), **extra}
    return settings_from_mapping({"postgres": [raw]}, {}).postgres[0]


def report(t: PostgresTarget, **kwargs: Any) -> TargetReport:
    return asyncio.run(postgres_target_report(t, **kwargs))


def by_id(r: TargetReport) -> dict[str, Finding]:
    return {f.id: f for f in r.findings}


def report_until(t: PostgresTarget, predicate: Callable[[TargetReport], bool], timeout: float = 20.0
                 ) -> TargetReport:
    """Statistics reach the views when the writing backend flushes them (at exit, or within a second)."""
    deadline = time.monotonic() + timeout
    while True:
        r = report(t)
        if predicate(r):
            return r
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met; findings: {sorted(by_id(r))}")
        time.sleep(0.3)


def apply(pg: PostgresSandbox, dbname: str, recommendation: str) -> None:
    """Run a recommendation as written: every line that is not a comment is one statement (some, like
    VACUUM and the CONCURRENTLY ones, must run alone)."""
    statements = [line for line in recommendation.splitlines() if line.strip() and not line.startswith("--")]
    assert statements, recommendation
    with su(pg, dbname) as conn:
        for statement in statements:
            conn.execute(statement)


# ------------------------------------------------------------------ planted problems


def plant(pg: PostgresSandbox, db: str) -> None:
    with su(pg, db) as conn:
        for table in ("unused_t", "dup_t", "red_t"):
            conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, a int, b int)")
            conn.execute(f"INSERT INTO {table} SELECT g, g % 100, g % 7 FROM generate_series(1, 20000) g")
        conn.execute("CREATE INDEX unused_t_a ON unused_t (a)")
        conn.execute("CREATE INDEX dup_t_a1 ON dup_t (a)")
        conn.execute("CREATE INDEX dup_t_a2 ON dup_t (a)")
        conn.execute("CREATE INDEX red_t_a ON red_t (a)")
        conn.execute("CREATE INDEX red_t_ab ON red_t (a, b)")
        conn.execute("CREATE TABLE inv_t (a int)")
        conn.execute("INSERT INTO inv_t VALUES (1), (1), (2)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY inv_t_a ON inv_t (a)")  # leaves an INVALID index
        conn.execute("CREATE TABLE bloat_t (id int, pad text) WITH (autovacuum_enabled = off)")
        conn.execute("INSERT INTO bloat_t SELECT g, repeat('x', 20) FROM generate_series(1, 50000) g")
        conn.execute("DELETE FROM bloat_t WHERE id <= 30000")
        conn.execute("CREATE TABLE seq_t (id int, v int)")  # no index at all: idx_scan is NULL
        conn.execute("INSERT INTO seq_t SELECT g, g % 1000 FROM generate_series(1, 20000) g")
        conn.execute("CREATE TABLE stale_t (id int PRIMARY KEY) WITH (autovacuum_enabled = off)")
        conn.execute("INSERT INTO stale_t SELECT generate_series(1, 5000)")
        conn.execute("CREATE TABLE clean_t (id int PRIMARY KEY, code text UNIQUE)")
        conn.execute("INSERT INTO clean_t SELECT g, 'c' || g FROM generate_series(1, 100) g")
        # counts of this session reach the shared statistics now, not after ANALYZE set n_live_tup (they would
        # be added to it)
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("ANALYZE unused_t, dup_t, red_t, inv_t, seq_t, clean_t")
        for _ in range(5):
            conn.execute("SELECT count(*) AS seq_marker FROM seq_t WHERE v = 7")
        conn.execute("SELECT * FROM clean_t WHERE id = 5")


def planted_ids(db: str) -> dict[str, str]:
    p = f"main:{db}:public."
    return {"unused": f"unused_index:{p}unused_t_a", "duplicate": f"duplicate_index:{p}dup_t_a2",
            "redundant": f"redundant_index:{p}red_t_a", "invalid": f"invalid_index:{p}inv_t_a",
            "dead": f"dead_tuples:{p}bloat_t", "seq": f"missing_index_candidate:{p}seq_t",
            "stale": f"stale_statistics:{p}stale_t"}


def test_planted_problems_found_with_their_numbers_and_fixed_by_their_sql(pg):
    db = new_database(pg, "planted")
    plant(pg, db)
    ids = planted_ids(db)
    t = target(pg, databases=[db])
    r = report_until(t, lambda r: set(ids.values()) <= set(by_id(r))
                     and by_id(r)[ids["seq"]].evidence["seq_scan"] == 5)
    found = by_id(r)
    with su(pg, db) as conn:
        sizes = dict(conn.execute("SELECT relname, pg_relation_size(oid) FROM pg_class WHERE relname IN "
                                  "('unused_t_a', 'dup_t_a2', 'red_t_a')").fetchall())
        db_size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]

    unused = found[ids["unused"]]
    assert unused.evidence["idx_scan"] == 0 and unused.evidence["size_bytes"] == sizes["unused_t_a"] > 0
    assert unused.score == sizes["unused_t_a"] and unused.evidence["table_rows"] == 20000
    assert unused.recommendation.startswith("DROP INDEX CONCURRENTLY public.unused_t_a;")
    assert found[ids["duplicate"]].evidence["duplicate_of"] == "public.dup_t_a1"
    assert found[ids["duplicate"]].score == sizes["dup_t_a2"]
    assert found[ids["redundant"]].evidence["covered_by"] == "public.red_t_ab"
    assert found[ids["redundant"]].recommendation == "DROP INDEX CONCURRENTLY public.red_t_a;"
    assert "REINDEX INDEX CONCURRENTLY public.inv_t_a;" in found[ids["invalid"]].recommendation
    dead = found[ids["dead"]]
    assert (dead.evidence["n_dead_tup"], dead.evidence["n_live_tup"]) == (30000, 20000)
    assert dead.evidence["autovacuum_enabled"] is False and dead.score == 30000
    seq = found[ids["seq"]]
    assert (seq.evidence["seq_scan"], seq.evidence["seq_tup_read"], seq.evidence["n_live_tup"]) == (5, 100000, 20000)
    assert seq.evidence["idx_scan"] is None and seq.score == 100000 and "public.seq_t" in seq.recommendation
    assert found[ids["stale"]].evidence["never_analyzed"] is True

    # nothing about primary keys, unique indexes or the small clean table
    for f in r.findings:
        assert not (f.object or "").endswith(("_pkey", "clean_t", "clean_t_code_key")), f.id
    assert r.summary["databases"] == 1 and r.summary["databases_failed"] == 0
    assert abs(r.summary["size_bytes"] - db_size) < 1024 * 1024
    assert r.summary["indexes"] == 12 and r.summary["tables"] == 8
    assert r.error is None and r.status == "warning"

    # apply each recommendation as written; its finding goes on a later report
    with su(pg, db) as conn:
        conn.execute("DELETE FROM inv_t WHERE ctid = (SELECT min(ctid) FROM inv_t WHERE a = 1)")
    for key in ("unused", "duplicate", "redundant", "invalid", "dead", "stale"):
        apply(pg, db, found[ids[key]].recommendation)
    with su(pg, db) as conn:  # the missing index, on the column the statements filter on, then used
        conn.execute("CREATE INDEX CONCURRENTLY seq_t_v ON seq_t (v)")
        conn.execute("SET enable_seqscan = off")
        for _ in range(20):
            conn.execute("SELECT count(*) FROM seq_t WHERE v = 7")
    fixed = set(ids.values())
    r = report_until(t, lambda r: not fixed & set(by_id(r)))
    with su(pg, db) as conn:
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'inv_t_a'::regclass"
                            ).fetchone()[0] is True
        assert conn.execute("SELECT reloptions FROM pg_class WHERE relname = 'bloat_t'").fetchone()[0] is None


def test_clean_database_gets_no_index_or_table_finding(pg):
    db = new_database(pg, "clean")
    with su(pg, db) as conn:
        conn.execute("CREATE TABLE clients (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, name text)")
        conn.execute("CREATE TABLE tags (id int PRIMARY KEY, client_id bigint REFERENCES clients, label text, "
                      "UNIQUE (client_id, label))")
        conn.execute("CREATE UNIQUE INDEX clients_lower_email ON clients (lower(email))")
        conn.execute("INSERT INTO clients SELECT g, 'u' || g || '@x', 'n' FROM generate_series(1, 200) g")
        conn.execute("INSERT INTO tags SELECT g, g, 'l' FROM generate_series(1, 200) g")
        conn.execute("ANALYZE")
        for _ in range(20):
            conn.execute("SELECT * FROM clients WHERE id = 3")
            conn.execute("SELECT count(*) FROM tags")  # sequential scans of a small table: fine
    r = report(target(pg, databases=[db]))
    assert [f.id for f in r.findings if f.kind in INDEX_KINDS | TABLE_KINDS] == []
    assert r.summary["indexes"] == 5 and r.summary["tables"] == 2


# ------------------------------------------------------------------ statements and their text


def test_slow_statement_and_statement_text_only_when_opted_in(pg):
    db = new_database(pg, "texts")
    with su(pg, db) as conn:
        conn.execute("CREATE TABLE orders_big (id int, status int)")
        conn.execute("INSERT INTO orders_big SELECT g, g % 10 FROM generate_series(1, 5000) g")
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("ANALYZE orders_big")
        for _ in range(3):
            conn.execute(f"SELECT count(*) AS orders_marker FROM orders_big WHERE status = 3 AND '{SECRET}' <> ''")
        for _ in range(2):
            conn.execute(f"SELECT pg_sleep(0.3), '{SECRET}' AS sleepy_marker")
    with su(pg) as conn:
        queryid, calls, mean_ms = conn.execute(
            "SELECT queryid, sum(calls), sum(total_exec_time) / sum(calls) FROM pg_stat_statements "
            "WHERE query LIKE '%%sleepy_marker%%' GROUP BY queryid").fetchone()
    slow_id = f"slow_statement:main:{db}:{queryid}"

    plain = report_until(target(pg, databases=[db], slow_query_threshold="200ms"),
                         lambda r: slow_id in by_id(r) and f"missing_index_candidate:main:{db}:public.orders_big"
                         in by_id(r))
    slow = by_id(plain)[slow_id]
    assert slow.severity == "warning" and slow.object == str(queryid)
    assert slow.evidence["calls"] == calls == 2
    assert slow.evidence["mean_seconds"] == pytest.approx(mean_ms / 1000, abs=1e-6)
    assert slow.evidence["mean_seconds"] >= 0.3 and "query" not in slow.evidence
    assert f"queryid = {queryid}" in slow.recommendation
    assert plain.summary["slow_query_count"] >= 1 and plain.summary["total_queries"] >= 5
    body = Report(0, [plain]).to_json().decode()
    for text in ("sleepy_marker", "orders_marker", "pg_sleep", SECRET):
        assert text not in body  # no statement text at all without query_text

    opted = report(target(pg, databases=[db], slow_query_threshold="200ms", query_text=True,
                          query_text_max_length=60))
    found = by_id(opted)
    assert "sleepy_marker" in found[slow_id].evidence["query"] and len(found[slow_id].evidence["query"]) <= 60
    assert "EXPLAIN (ANALYZE, BUFFERS) SELECT pg_sleep" in found[slow_id].recommendation
    missing = found[f"missing_index_candidate:main:{db}:public.orders_big"]
    assert "orders_marker" in missing.recommendation
    assert SECRET not in Report(0, [opted]).to_json().decode()  # normalised: literals are gone


def test_statements_unavailable_without_the_extension(pg):
    db = new_database(pg, "noext")
    r = report(target(pg, dsn=pg.dsn(MONITOR, MONITOR_PW, dbname=db)))
    assert r.summary["total_queries"] is None and r.summary["slow_query_count"] is None
    assert "pg_stat_statements" in r.summary["statements_unavailable"]
    assert not [f for f in r.findings if f.kind == "slow_statement"]
    assert r.summary["databases"] == 1 and r.summary["connections"] >= 1


# ------------------------------------------------------------------ cache


def test_low_cache_hit_ratio(pg):
    db = new_database(pg, "cold")
    with su(pg, db) as conn:  # larger than a quarter of shared_buffers: sequential scans use a small ring
        conn.execute("CREATE TABLE cold_t AS SELECT g AS id, repeat('x', 40) AS pad FROM generate_series(1, 800000) g")
        for _ in range(3):
            conn.execute("SELECT count(*) FROM cold_t")
    r = report_until(target(pg, databases=[db]), lambda r: "cache_hit_ratio:main:-:-" in by_id(r))
    finding = by_id(r)["cache_hit_ratio:main:-:-"]
    with su(pg) as conn:
        hit, read = conn.execute("SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = %s",
                                 (db,)).fetchone()
    assert finding.evidence["blks_read"] == pytest.approx(read, rel=0.05)
    assert finding.score == finding.evidence["blks_read"]
    assert finding.evidence["cache_hit_ratio"] == pytest.approx(hit / (hit + read), abs=0.05)
    assert finding.evidence["cache_hit_ratio"] < 0.95
    assert r.summary["cache_hit_ratio"] == pytest.approx(finding.evidence["cache_hit_ratio"], abs=1e-3)
    assert "shared_buffers" in finding.recommendation
    sized = report(target(pg, databases=[db]), host_memory_bytes=8 * 1024**3)
    assert "ALTER SYSTEM SET shared_buffers = '2GB';" in by_id(sized)["cache_hit_ratio:main:-:-"].recommendation


# ------------------------------------------------------------------ settings


def test_settings_scaled_to_host_memory_or_left_out(pg):
    t = target(pg)
    unsized = {f.object for f in report(t).findings if f.kind == "setting"}
    assert "random_page_cost" in unsized  # 4, the default; not a size
    assert not unsized & {"shared_buffers", "effective_cache_size", "work_mem", "maintenance_work_mem",
                          "wal_buffers"}
    sized = by_id(report(t, host_memory_bytes=16 * 1024**3))
    shared = sized["setting:main:-:shared_buffers"]
    with su(pg) as conn:
        current = conn.execute("SELECT pg_size_bytes(current_setting('shared_buffers'))").fetchone()[0]
    assert shared.evidence["current"] == current and shared.evidence["recommended"] == 4 * 1024**3
    assert shared.recommendation.startswith("ALTER SYSTEM SET shared_buffers = '4GB';") and "restart" in \
        shared.recommendation
    assert sized["setting:main:-:effective_cache_size"].evidence["recommended"] == 12 * 1024**3
    assert "restart" in sized["setting:main:-:wal_buffers"].recommendation


# ------------------------------------------------------------------ databases, connections, failures


def test_discovery_and_one_failing_database(pg, monkeypatch):
    good, bad = new_database(pg, "disc_ok"), new_database(pg, "disc_bad")
    skipped = new_database(pg, "other")
    for db in (good, bad, skipped):
        with su(pg, db) as conn:
            conn.execute("CREATE TABLE t (id int, a int)")
            conn.execute("INSERT INTO t SELECT g, g FROM generate_series(1, 2000) g")
            conn.execute("CREATE INDEX t_a ON t (a)")
            conn.execute("ANALYZE t")
    with su(pg) as conn:
        conn.execute(f"ALTER DATABASE {bad} CONNECTION LIMIT 0")  # only superusers get in
    opened: list[dict[str, Any]] = []
    connect = psycopg.AsyncConnection.connect
    open_now = [0]

    async def watched_connect(*args: Any, **kwargs: Any) -> Any:
        assert open_now[0] == 0, "a second connection while one is open"
        conn = await connect(*args, **kwargs)
        cur = await conn.execute("SELECT current_database(), current_setting('application_name'), "
                                 "current_setting('statement_timeout'), current_setting('lock_timeout')")
        opened.append(dict(zip(("db", "app", "statement_timeout", "lock_timeout"), await cur.fetchone(),
                               strict=True)) | {"autocommit": conn.autocommit})
        open_now[0] += 1
        close = conn.close

        async def closed() -> None:
            open_now[0] -= 1
            await close()

        conn.close = closed
        return conn

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", watched_connect)
    r = report(target(pg, discover={"include": "disc_.*"}, statement_timeout="3s", lock_timeout="200ms"))
    assert r.summary["databases"] == 2 and r.summary["databases_failed"] == 1
    assert bad in r.summary["databases_failed_detail"]
    assert {f.database for f in r.findings if f.kind == "unused_index"} == {good}
    assert [o["db"] for o in opened] == ["postgres", good]  # disc_bad_N, first by name, refused us
    for o in opened:
        assert o["app"] == "pgwatch-cpa-report" and o["autocommit"] is True
        assert (o["statement_timeout"], o["lock_timeout"]) == ("3s", "200ms")
    assert open_now[0] == 0


def test_unreachable_target_raises(pg):
    t = target(pg, dsn=pg.dsn(MONITOR, "wrong-password"), connect_timeout="2s")
    with pytest.raises(psycopg.OperationalError):
        report(t)


def test_connection_utilisation_counts_client_backends(pg):
    with su(pg) as conn:
        limit = conn.execute("SELECT current_setting('max_connections')::int - "
                             "current_setting('superuser_reserved_connections')::int").fetchone()[0]
        if conn.info.server_version >= 160000:
            limit -= int(conn.execute("SHOW reserved_connections").fetchone()[0])
    held = []
    try:
        for _ in range(int(limit * 0.85)):
            held.append(su(pg))
        r = report(target(pg))
    finally:
        for conn in held:
            with contextlib.suppress(Exception):
                conn.close()
    finding = by_id(r)["connection_utilisation:main:-:-"]
    assert finding.evidence["available"] == limit
    assert finding.evidence["connections"] == r.summary["connections"] >= len(held) + 1
    assert r.summary["connection_utilisation"] == pytest.approx(r.summary["connections"] / limit, abs=1e-4)
    assert r.summary["connection_utilisation"] > 0.8
