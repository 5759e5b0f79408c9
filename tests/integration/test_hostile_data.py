"""Hostile data from the monitored server (issue 15): one bad value never breaks a whole scrape or collector.

A SQL_ASCII database stores any bytes, and a database created from one can have a name that is not valid UTF-8
(CREATEDB is enough). Text is decoded with U+FFFD replacement characters; a name or label value that needed them
is skipped, counted in ``pgwatch_rows_skipped_total{target,collector,reason}`` and logged once per target and
reason. Each test fails on the code before the fix (500 on /metrics, pg_up 0, failed collectors).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from pgwatch_cpa.collectors import POSTGRES_COLLECTORS
from pgwatch_cpa.config import PostgresTarget, settings_from_mapping
from pgwatch_cpa.daemon.exposition import Exposition
from pgwatch_cpa.daemon.postgres_poller import PostgresPoller
from pgwatch_cpa.daemon.snapshot import SnapshotStore
from pgwatch_cpa.sandbox import PostgresSandbox
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

MONITOR, MONITOR_PW = "monitor", "m0nitor-pw"
ASCII_DB = "hostile_ascii"  # ENCODING 'SQL_ASCII'
GOOD_DB = "hostile_good"
BAD_DB = b"bad\xff\xfe"  # not valid UTF-8
SKIPPED = "pgwatch_rows_skipped_total"


def su_connect(pg: PostgresSandbox, dbname: str = "postgres") -> psycopg.Connection[Any]:
    return psycopg.connect(pg.dsn(dbname=dbname), autocommit=True)


def raw_conninfo(pg: PostgresSandbox, dbname: bytes) -> bytes:
    """A libpq conninfo naming a database by its bytes (psycopg's connect() only takes str)."""
    return (f"host=127.0.0.1 port={pg.port} user={pg.superuser} password={pg.password} dbname='".encode()
            + dbname + b"'")


@pytest.fixture(scope="module")
def pg(pg_server: PostgresSandbox) -> PostgresSandbox:
    with su_connect(pg_server) as su:
        su.execute(f"CREATE ROLE {MONITOR} LOGIN PASSWORD '{MONITOR_PW}' IN ROLE pg_monitor")
        su.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        su.execute(f"CREATE DATABASE {ASCII_DB} ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
        su.execute(f"CREATE DATABASE {GOOD_DB}")
    with su_connect(pg_server, GOOD_DB) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY)")
    with su_connect(pg_server, ASCII_DB) as c:  # client encoding SQL_ASCII: bytes go in as they are
        c.execute("CREATE TABLE plain (id int PRIMARY KEY)")
        c.execute(b'CREATE TABLE "caf\xc3\xa9" (id int)')  # valid UTF-8: exported as café
        c.execute(b'CREATE TABLE "latin\xe9" (id int)')  # Latin-1: not valid UTF-8, skipped
        c.execute(b'CREATE INDEX "latin\xe9_idx" ON "latin\xe9" (id)')
    return pg_server


@pytest.fixture
def bad_database(pg: PostgresSandbox) -> Iterator[bytes]:
    """A database whose name is not valid UTF-8, created with CREATEDB only (from a SQL_ASCII database)."""
    with su_connect(pg, ASCII_DB) as c:
        c.execute(b'CREATE DATABASE "' + BAD_DB + b'"')
    try:
        yield BAD_DB
    finally:
        with su_connect(pg, ASCII_DB) as c:
            c.execute(b'DROP DATABASE "' + BAD_DB + b'" WITH (FORCE)')


def monitor_target(pg: PostgresSandbox, name: str = "db", dbname: str = "postgres", **extra: Any) -> dict[str, Any]:
    return {"name": name, "dsn": pg.dsn(MONITOR, MONITOR_PW, dbname=dbname), **extra}


def parse(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, parsed by prometheus_client (raises on a malformed one)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def find(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> list[float]:
    return [v for (n, lab), v in samples.items() if n == name and set(labels.items()) <= lab]


def promtool_check(body: str) -> None:
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr)


def warnings_for(log: str, target: str, reason: str) -> list[str]:
    return [line for line in log.splitlines()
            if "WARNING" in line and f"target {target}:" in line and f'reason="{reason}"' in line]


# ------------------------------------------------------------------ SQL_ASCII database (the real daemon)


def test_sql_ascii_database_with_discover_serves_metrics(pg, daemon_factory):
    daemon = daemon_factory({"interval": "1s", "postgres": [
        monitor_target(pg, "main", discover={"include": f"postgres|{ASCII_DB}"})]})
    daemon.wait_ready()

    def scraped() -> str | None:
        status, body = daemon.get("/metrics")
        ready = (status == 200 and f'datname="{ASCII_DB}"' in body and 'relname="plain"' in body
                 and SKIPPED in body)
        return body if ready else None

    body = daemon.wait_for(scraped, what=f"/metrics 200 with the tables of {ASCII_DB}")
    samples = parse(body)
    assert find(samples, "pg_up", target="main") == [1.0]
    assert find(samples, "pg_stat_user_tables_n_live_tup", datname=ASCII_DB, relname="plain") == [0.0]
    assert find(samples, "pg_stat_user_tables_n_live_tup", datname=ASCII_DB, relname="café") == [0.0]
    assert find(samples, "pg_tables", datname=ASCII_DB) == [3.0]  # the skipped table is in the totals
    for collector in ("tables", "indexes", "table_size", "activity", "database", "statements"):
        assert find(samples, "pgwatch_collector_success", collector=collector) == [1.0], collector
    assert find(samples, SKIPPED, collector="tables", reason="invalid_utf8")[0] >= 1
    assert find(samples, SKIPPED, collector="indexes", reason="invalid_utf8")[0] >= 1
    assert "\ufffd" not in body and "latin" not in body
    status, openmetrics = daemon.get("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and openmetrics.endswith("# EOF\n")
    promtool_check(body)
    assert len(warnings_for(daemon.log(), "main", "invalid_utf8")) == 1, daemon.log()


# ------------------------------------------------------------------ a database name that is not UTF-8


def test_non_utf8_database_name_is_skipped_and_counted(pg, bad_database, daemon_factory):
    # A session in that database and a statement of it: their datname labels cannot be exported either.
    session = psycopg.pq.PGconn.connect(raw_conninfo(pg, bad_database))
    assert session.status == psycopg.pq.ConnStatus.OK, session.get_error_message()
    try:
        session.exec_(b"SELECT pg_sleep(0.3) AS in_the_bad_database")
        daemon = daemon_factory({"interval": "1s", "postgres": [
            monitor_target(pg, "disc", discover={"include": ".*"}),
            monitor_target(pg, "plain")]})  # no discovery: the DSN's database, database collectors cluster-wide
        daemon.wait_ready()

        def settled() -> str | None:
            body = daemon.get("/metrics")[1]
            samples = parse(body)
            done = (find(samples, SKIPPED, target="disc", collector="discovery", reason="invalid_utf8")
                    and find(samples, SKIPPED, target="disc", collector="discovery")[0] >= 3
                    and find(samples, SKIPPED, target="plain", collector="database_size"))
            return body if done else None

        body = daemon.wait_for(settled, what="three cycles of skipped discovery and a database_size run")
    finally:
        session.finish()
    samples = parse(body)
    for target in ("disc", "plain"):
        assert find(samples, "pg_up", target=target) == [1.0], target
        assert find(samples, "pgwatch_connection_errors_total", target=target) == [0.0], target
        for collector in ("database", "database_size", "activity", "statements", "locks"):
            assert find(samples, "pgwatch_collector_success", target=target, collector=collector) == [1.0], (
                target, collector)
        assert find(samples, SKIPPED, target=target, collector="database", reason="invalid_utf8")[0] >= 1
        assert find(samples, SKIPPED, target=target, collector="activity", reason="invalid_utf8")[0] >= 1
        assert find(samples, SKIPPED, target=target, collector="statements", reason="invalid_utf8")[0] >= 1
        # the other databases are all there
        for datname in ("postgres", ASCII_DB, GOOD_DB):
            assert find(samples, "pg_stat_database_xact_commit_total", target=target, datname=datname), datname
            assert find(samples, "pg_database_frozen_xid_age", target=target, datname=datname), datname
            assert find(samples, "pg_database_size_bytes", target=target, datname=datname), datname
        assert find(samples, "pg_stat_statements_calls_total", target=target, queryid="other")
    assert find(samples, "pg_tables", target="disc", datname=GOOD_DB) == [1.0]
    assert find(samples, "pgwatch_collector_success", target="disc", collector="tables") == [1.0]
    assert "\ufffd" not in body
    promtool_check(body)
    log = daemon.log()
    assert "is down" not in log, log
    for target in ("disc", "plain"):
        assert len(warnings_for(log, target, "invalid_utf8")) == 1, log


# ------------------------------------------------------------------ statement texts (the in-process poller)


class Harness:
    """The real poller and snapshot store; each poll() runs every collector (slow ones included)."""

    def __init__(self, settings: PostgresTarget) -> None:
        self.store = SnapshotStore()
        self.poller = PostgresPoller("db", 15.0, [c() for c in POSTGRES_COLLECTORS], settings, self.store)

    async def __aenter__(self) -> Harness:
        await self.poller.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.poller.close()

    async def poll(self) -> bool:
        self.poller._last_run.clear()  # every collector is due, whatever its interval
        return await self.poller.poll_once()

    def samples(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(lab, v) for n, lab, v in self.store.samples()
                if n == name and all(lab.get(k) == want for k, want in labels.items())]

    def value(self, name: str, **labels: str) -> float | None:
        found = self.samples(name, **labels)
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
        return found[0][1] if found else None

    async def rendered(self) -> str:
        body, _content_type = await Exposition(self.store).render(None)
        return body.decode()


def settings(pg: PostgresSandbox, dbname: str = "postgres", **extra: Any) -> PostgresTarget:
    return settings_from_mapping({"postgres": [monitor_target(pg, dbname=dbname, **extra)]}, {}).postgres[0]


def queryids_of(pg: PostgresSandbox, datname: str) -> set[str]:
    with su_connect(pg) as su:
        rows = su.execute("SELECT DISTINCT p.queryid::text FROM pg_stat_statements(false) AS p "
                          "JOIN pg_database AS d ON d.oid = p.dbid WHERE d.datname = %s AND p.queryid IS NOT NULL",
                          (datname,)).fetchall()
    return {r[0] for r in rows}


def run_bad_statements(pg: PostgresSandbox) -> None:
    """Statements whose text is not valid UTF-8, from the SQL_ASCII database: a comment (removed from the
    normalised text) and a utility statement (pg_stat_statements keeps its literal)."""
    with su_connect(pg, ASCII_DB) as c:
        c.execute(b"SELECT pg_sleep(0.05) AS bad_comment /* caf\xe9 \xff */")
        c.execute(b"DO $$BEGIN PERFORM 'caf\xe9'; END$$")


async def test_non_utf8_statement_text_read_from_a_utf8_database(pg, caplog):
    """The server cannot convert that text to our database's encoding: pg_stat_statements(true) fails as a whole.
    The collector still exports every statement's numbers and the texts it has, and counts the texts it lacks."""
    caplog.set_level(logging.WARNING)
    with su_connect(pg) as su:
        su.execute("SELECT pg_stat_statements_reset()")
        su.execute("SELECT 1 AS good_marker")
    async with Harness(settings(pg, query_text=True)) as h:
        await h.poll()
        assert any("good_marker" in lab["query"] for lab, _v in h.samples("pg_stat_statements_query_info"))
        run_bad_statements(pg)
        for _ in range(3):
            await h.poll()
        assert h.value("pgwatch_collector_success", collector="statements") == 1
        exported = {lab["queryid"] for lab, _v in h.samples("pg_stat_statements_calls_total")}
        bad = queryids_of(pg, ASCII_DB)
        assert bad and bad <= exported, (bad, exported)
        texts = [lab["query"] for lab, _v in h.samples("pg_stat_statements_query_info")]
        assert any("good_marker" in t for t in texts), texts
        assert h.value(SKIPPED, collector="statements", reason="unconvertible_text") >= 3
        body = await h.rendered()
    assert "\ufffd" not in body
    parse(body)
    promtool_check(body)
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and 'reason="unconvertible_text"' in warned[0].getMessage(), caplog.text


async def test_non_utf8_statement_text_read_from_a_sql_ascii_database(pg, caplog):
    """Read from a SQL_ASCII database (where the extension is installed too), the text arrives as it is: it is
    decoded with U+FFFD, normalised (its comment and literal removed) and exported, and every collector works."""
    caplog.set_level(logging.WARNING)
    with su_connect(pg, ASCII_DB) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    with su_connect(pg) as su:
        su.execute("SELECT pg_stat_statements_reset()")
        su.execute("SELECT 1 AS good_marker")
    run_bad_statements(pg)
    async with Harness(settings(pg, ASCII_DB, query_text=True)) as h:
        await h.poll()
        for collector in ("statements", "activity", "database", "tables", "indexes", "locks", "settings"):
            assert h.value("pgwatch_collector_success", collector=collector) == 1, collector
        texts = [lab["query"] for lab, _v in h.samples("pg_stat_statements_query_info")]
        assert any("good_marker" in t for t in texts), texts
        assert any("bad_comment" in t and "caf" not in t for t in texts), texts  # the comment is removed
        assert any(t.startswith("DO ") and "caf" not in t for t in texts), texts  # its literal is blanked out
        assert h.value("pg_stat_user_tables_n_live_tup", datname=ASCII_DB, relname="café") == 0
        assert not h.value(SKIPPED, collector="statements", reason="unconvertible_text")
        body = await h.rendered()
    samples = parse(body)
    assert find(samples, "pg_up") == [1.0]
    promtool_check(body)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and 'reason="invalid_utf8"' in warned[0], warned  # the Latin-1 table name


# ------------------------------------------------------------------ the exposition's last line of defence


async def test_a_sample_that_cannot_be_rendered_leaves_the_rest_of_metrics(caplog):
    """Should a collector still write a value that cannot be rendered (a bug), /metrics leaves that sample out,
    logs it once and counts it, instead of answering 500 for every family."""
    store = SnapshotStore()
    good = Metric("pg_good", "A family that renders.", "gauge")
    good.add_sample("pg_good", {"target": "t"}, 1.0)
    broken = Metric("pg_broken", "A family with one sample that does not.", "gauge")
    broken.add_sample("pg_broken", {"target": "t", "datname": "fine"}, 2.0)
    broken.add_sample("pg_broken", {"target": "t", "datname": b"raw\xff"}, 3.0)  # type: ignore[dict-item]
    store.put("t", "c", (good, broken))
    exposition = Exposition(store)
    for accept in (None, "application/openmetrics-text; version=1.0.0"):
        body, _content_type = await exposition.render(accept)
        text = body.decode()
        assert 'pg_good{target="t"} 1.0' in text
        assert 'pg_broken{datname="fine",target="t"} 2.0' in text
        assert "raw" not in text
    samples = parse((await exposition.render(None))[0].decode())
    assert find(samples, "pgwatch_render_dropped_samples_total")[0] >= 1
    assert len([r for r in caplog.records if "pg_broken" in r.getMessage()]) == 1


async def test_the_report_reads_sql_ascii_and_non_utf8_databases(pg, bad_database):
    """The report connects like the daemon: a SQL_ASCII database and a non-UTF-8 name lose nothing else."""
    from pgwatch_cpa.report.postgres import postgres_target_report

    report = await postgres_target_report(settings(pg, dbname=ASCII_DB, discover={"include": "hostile_.*|bad.*"}))
    assert report.error is None
    assert report.summary["databases"] == 2, report.summary  # the two hostile_ databases; the bad name skipped
    assert not report.summary.get("databases_failed"), report.summary
    names = {f.object for f in report.findings}
    assert all(isinstance(n, str) for n in names if n is not None)
