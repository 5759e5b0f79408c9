"""Custom SQL metrics (custom_queries) against real servers, as a pg_monitor-only role.

tests/data/postgres_exporter/queries.yaml is postgres_exporter's example ``queries.yaml``, unchanged
(github.com/prometheus-community/postgres_exporter, queries.yaml at commit 01d9d85acfa4cc7b586122b6638f4dec628e33f7).
All five of its queries run on PostgreSQL 15 and 18 without an extension, so none was dropped. Its
pg_stat_user_tables metrics overlap our built-in ``tables`` collector, so the target disables it, as the config
error tells a user to.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgwatch_cpa.collectors import POSTGRES_COLLECTORS
from pgwatch_cpa.collectors.postgres.custom_queries import custom_query_collectors
from pgwatch_cpa.config import reserved_metrics, settings_from_mapping
from pgwatch_cpa.daemon.postgres_poller import PostgresPoller
from pgwatch_cpa.daemon.snapshot import SnapshotStore
from pgwatch_cpa.sandbox import PostgresSandbox, free_port
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

MONITOR, MONITOR_PW = "monitor", "m0nitor-pw"
EXPORTER_FILE = Path(__file__).resolve().parents[1] / "data" / "postgres_exporter" / "queries.yaml"


@pytest.fixture(scope="module")
def pg(pg_server: PostgresSandbox) -> PostgresSandbox:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as su:
        su.execute(f"CREATE ROLE {MONITOR} LOGIN PASSWORD '{MONITOR_PW}' IN ROLE pg_monitor")
        su.execute("CREATE DATABASE other")
        # Tables with stable statistics: no autovacuum may change them between the two exporters' reads.
        for name in ("accounts", "ledger"):
            su.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, note text) WITH (autovacuum_enabled = off)")
            su.execute(f"INSERT INTO {name} SELECT g, 'n' || g FROM generate_series(1, 500) g")
            su.execute(f"UPDATE {name} SET note = 'x' WHERE id <= 20")
            su.execute(f"DELETE FROM {name} WHERE id > 490")
            su.execute(f"SELECT count(*) FROM {name} WHERE note = 'x'")
            su.execute(f"SELECT * FROM {name} WHERE id = 7")
        su.execute("VACUUM ANALYZE accounts")
        su.execute("CREATE TABLE wide AS SELECT g AS id FROM generate_series(1, 10000) g")
        su.execute("GRANT SELECT ON wide TO monitor")
    return pg_server


def write_config(tmp_path: Path, files: list[str], **target: Any) -> Any:
    return settings_from_mapping({"custom_queries": files, "postgres": [{"name": "db", **target}]}, {},
                                 base_dir=tmp_path)


class Harness:
    """The real poller with the target's custom query collectors (and ``builtins``, if given)."""

    def __init__(self, settings: Any, builtins: tuple[Any, ...] = ()) -> None:
        target = settings.postgres[0]
        collectors = [c() for c in builtins] + custom_query_collectors(settings.queries_for(target))
        self.store = SnapshotStore()
        self.poller = PostgresPoller("db", 15.0, collectors, target, self.store)

    async def __aenter__(self) -> Harness:
        await self.poller.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.poller.close()

    async def poll(self) -> None:
        self.poller._last_run.clear()
        assert await self.poller.poll_once()

    def samples(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(lab, v) for n, lab, v in self.store.samples()
                if n == name and all(lab.get(k) == want for k, want in labels.items())]

    def value(self, name: str, **labels: str) -> float | None:
        found = self.samples(name, **labels)
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
        return found[0][1] if found else None


def dsn(pg: PostgresSandbox, dbname: str = "postgres") -> str:
    return pg.dsn(MONITOR, MONITOR_PW, dbname=dbname)


# ------------------------------------------------------------------ postgres_exporter compatibility


class Exporter:
    """The real postgres_exporter (Debian's prometheus-postgres-exporter) on a free loopback port."""

    def __init__(self, binary: str, dsn: str, queries: Path, tmp_path: Path) -> None:
        self.port = free_port()
        self.log = (tmp_path / "exporter.log").open("wb")
        env = {**os.environ, "DATA_SOURCE_NAME": dsn + "?sslmode=disable"}
        self.process = subprocess.Popen(
            [binary, "--disable-default-metrics", "--disable-settings-metrics", f"--extend.query-path={queries}",
             f"--web.listen-address=127.0.0.1:{self.port}"], env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
                    text = response.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.2)
        # The parser names a counter's sample <family>_total even where postgres_exporter wrote no _total (it
        # exports a COUNTER column as <key>_<column>): the exported name is the family's.
        return {(family.name if family.type == "counter" else s.name,
                 tuple(sorted((k, v) for k, v in s.labels.items() if k != "server"))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


async def test_a_postgres_exporter_file_loads_unchanged_and_yields_its_values(pg, tmp_path):
    binary = require_tool("prometheus-postgres-exporter", "postgres_exporter")
    settings = write_config(tmp_path, [str(EXPORTER_FILE)], dsn=dsn(pg),
                            collectors={"tables": {"enabled": False}})
    file_names = {q.metric_name(c) for q in settings.queries_for(settings.postgres[0]) for c in q.values}
    exporter = Exporter(binary, dsn(pg), EXPORTER_FILE, tmp_path)
    try:
        before = exporter.scrape()
        async with Harness(settings) as h:
            await h.poll()
            # datname is ours (the polled database) except on pg_database, whose query has a datname column
            ours = {(n, tuple(sorted((k, v) for k, v in lab.items()
                                     if k != "target" and (k != "datname" or n == "pg_database_size")))): v
                    for n, lab, v in h.store.samples() if n in file_names}
            datnames = {lab.get("datname") for n, lab, _v in h.store.samples() if n.startswith("pg_stat_user")}
        after = exporter.scrape()
    finally:
        exporter.stop()
    theirs = {k: v for k, v in before.items() if k[0] in file_names}  # not its own (pg_database_size_bytes)
    assert datnames == {"postgres"}  # not master: our datname label names the polled database
    compared = 0
    for key, value in theirs.items():
        if math.isnan(value):  # postgres_exporter's NULL: we skip the value (and count it)
            assert key not in ours, key
            continue
        if after.get(key) != value:
            continue  # changed between postgres_exporter's two reads: not comparable
        assert ours.get(key) == value, key
        compared += 1
    assert not set(ours) - set(theirs), f"series only we export: {sorted({k[0] for k in set(ours) - set(theirs)})}"
    names = {k[0] for k in theirs}
    assert {"pg_postmaster_start_time_seconds", "pg_database_size", "pg_stat_user_tables_seq_scan",
            "pg_statio_user_tables_heap_blks_hit", "pg_replication_is_in_recovery"} <= names
    assert compared >= 0.9 * len([v for v in theirs.values() if not math.isnan(v)])
    assert compared >= 60  # 3 tables x 27 columns, 5 databases, 2 instance-wide values


# ------------------------------------------------------------------ protections


async def test_a_query_of_10000_label_sets_is_cut_at_max_rows_with_one_warning(pg, tmp_path, caplog):
    (tmp_path / "wide.yaml").write_text(
        "wide_rows:\n"
        "  query: SELECT id::text AS id, id AS value FROM wide ORDER BY value\n"
        "  max_rows: 250\n"
        "  metrics:\n"
        "    - id: {usage: LABEL, description: Row id}\n"
        "    - value: {usage: GAUGE, description: The id again}\n")
    settings = write_config(tmp_path, ["wide.yaml"], dsn=dsn(pg))
    caplog.set_level(logging.WARNING)
    async with Harness(settings) as h:
        await h.poll()
        await h.poll()
        assert len(h.samples("wide_rows_value")) == 250
        assert h.value("wide_rows_value", id="250") == 250 and h.value("wide_rows_value", id="251") is None
        assert h.value("pgwatch_custom_query_truncations_total", query="wide_rows") == 2
        assert h.value("pgwatch_custom_query_rows", query="wide_rows") == 250
        assert h.value("pgwatch_custom_query_max_rows", query="wide_rows") == 250
        assert h.value("pgwatch_collector_success", collector="custom:wide_rows") == 1
    warnings = [r.getMessage() for r in caplog.records if "max_rows=250" in r.getMessage()]
    assert len(warnings) == 1, warnings


async def test_the_default_limit_cuts_10000_label_sets_at_1000(pg, tmp_path):
    (tmp_path / "wide.yaml").write_text(
        "wide_rows:\n"
        "  query: SELECT id::text AS id, id AS value FROM wide\n"
        "  metrics: [{id: {usage: LABEL}}, {value: {usage: GAUGE}}]\n")
    async with Harness(write_config(tmp_path, ["wide.yaml"], dsn=dsn(pg))) as h:
        await h.poll()
        assert len(h.samples("wide_rows_value")) == 1000
        assert h.value("pgwatch_custom_query_truncations_total", query="wide_rows") == 1


async def test_a_failing_query_is_disabled_with_one_warning_and_the_others_run(pg, tmp_path, caplog):
    (tmp_path / "q.yaml").write_text(
        "missing_table:\n"
        "  query: SELECT count(*) AS n FROM no_such_table\n"
        "  metrics: [{n: {usage: GAUGE}}]\n"
        "writer:\n"
        "  query: INSERT INTO accounts VALUES (9999, 'w') RETURNING id AS n\n"
        "  metrics: [{n: {usage: GAUGE}}]\n"
        "no_privilege:\n"
        "  query: SELECT count(*) AS n FROM accounts\n"
        "  metrics: [{n: {usage: GAUGE}}]\n"
        "fine:\n"
        "  query: SELECT 1 AS n\n"
        "  master: true\n"
        "  metrics: [{n: {usage: GAUGE}}]\n")
    caplog.set_level(logging.WARNING)
    async with Harness(write_config(tmp_path, ["q.yaml"], dsn=dsn(pg))) as h:
        for _ in range(3):
            await h.poll()
        for key in ("missing_table", "writer", "no_privilege"):
            assert h.value("pgwatch_collector_enabled", collector=f"custom:{key}") == 0, key
        assert h.value("pgwatch_collector_enabled", collector="custom:fine") == 1
        assert h.value("fine_n") == 1
    with psycopg.connect(pg.dsn(), autocommit=True) as su:
        assert su.execute("SELECT count(*) FROM accounts WHERE id = 9999").fetchone()[0] == 0
    disabled = [r.getMessage() for r in caplog.records if "disabled" in r.getMessage()]
    assert len(disabled) == 3, disabled
    assert any("no_such_table" in m for m in disabled)


async def test_a_query_past_its_timeout_fails_that_run_only(pg, tmp_path):
    (tmp_path / "slow.yaml").write_text(
        "slow:\n"
        "  query: SELECT 1 AS n FROM pg_sleep(3)\n"
        "  timeout: 200ms\n"
        "  master: true\n"
        "  metrics: [{n: {usage: GAUGE}}]\n")
    async with Harness(write_config(tmp_path, ["slow.yaml"], dsn=dsn(pg))) as h:
        await h.poll()
        assert h.value("pgwatch_collector_success", collector="custom:slow") == 0
        assert h.value("pgwatch_collector_enabled", collector="custom:slow") == 1


async def test_hostile_values_are_skipped_and_counted(pg, tmp_path):
    (tmp_path / "hostile.yaml").write_text(
        "hostile:\n"
        "  query: |\n"
        "    SELECT * FROM (VALUES ('null', NULL::text, 1), ('text', 'abc', 1), ('huge', '1e400', 1),\n"
        "      ('nan', 'NaN', 1), ('ok', '42.5', 1), ('ok', '1', 1), (repeat('k', 5000), '1', 1))\n"
        "      AS t(kind, value, other)\n"
        "  master: true\n"
        "  metrics: [{kind: {usage: LABEL}}, {value: {usage: GAUGE}}, {other: {usage: GAUGE}}]\n"
        "big_numeric:\n"
        "  query: SELECT 1e400::numeric AS value, now() AS at, true AS flag\n"
        "  master: true\n"
        "  metrics: [{value: {usage: GAUGE}}, {at: {usage: GAUGE}}, {flag: {usage: GAUGE}}]\n")
    async with Harness(write_config(tmp_path, ["hostile.yaml"], dsn=dsn(pg))) as h:
        await h.poll()
        assert h.value("hostile_value", kind="ok") == 42.5  # the second "ok" row repeats the label set
        assert h.value("hostile_other", kind="null") == 1  # a NULL skips its value, not the row
        for kind in ("null", "text", "huge", "nan", "long"):
            assert h.value("hostile_value", kind=kind) is None, kind
        skipped: dict[str, float] = {}
        for lab, v in h.samples("pgwatch_rows_skipped_total"):
            if lab["collector"] in {"custom:hostile", "custom:big_numeric"}:
                skipped[lab["reason"]] = skipped.get(lab["reason"], 0) + v
        assert skipped == {"null_value": 1, "not_a_number": 1, "not_finite": 3, "duplicate_labels": 1,
                           "label_too_long": 1}  # not_finite: 1e400, NaN and big_numeric's 1e400
        assert h.value("big_numeric_value") is None
        assert abs(h.value("big_numeric_at") - time.time()) < 60 and h.value("big_numeric_flag") == 1
        assert h.value("pgwatch_collector_success", collector="custom:hostile") == 1


async def test_per_database_queries_get_datname_and_master_queries_run_once(pg, tmp_path):
    (tmp_path / "q.yaml").write_text(
        "per_db:\n"
        "  query: SELECT current_database() AS db, 1 AS one\n"
        "  metrics: [{db: {usage: DISCARD}}, {one: {usage: GAUGE}}]\n"
        "cluster_wide:\n"
        "  query: SELECT datname, 1 AS present FROM pg_database WHERE datname IN ('postgres', 'other')\n"
        "  metrics: [{datname: {usage: LABEL}}, {present: {usage: GAUGE}}]\n"
        "once:\n"
        "  query: SELECT current_database() AS db, 1 AS one\n"
        "  master: true\n"
        "  metrics: [{db: {usage: LABEL}}, {one: {usage: GAUGE}}]\n")
    settings = write_config(tmp_path, ["q.yaml"], dsn=dsn(pg), databases=["postgres", "other"])
    async with Harness(settings) as h:
        await h.poll()
        assert sorted(lab["datname"] for lab, _v in h.samples("per_db_one")) == ["other", "postgres"]
        # run on both databases, the query's own datname label: each series once
        assert sorted(lab["datname"] for lab, _v in h.samples("cluster_wide_present")) == ["other", "postgres"]
        assert [lab for lab, _v in h.samples("once_one")] == [{"target": "db", "db": "postgres"}]


async def test_the_reserved_names_cover_every_built_in_family(pg):
    """config/reserved_metrics.py lists what the built-in collectors export: a new built-in name is caught."""
    settings = write_config(Path.cwd(), [], dsn=pg.dsn())
    async with Harness(settings, POSTGRES_COLLECTORS) as h:
        await h.poll()
        families = {f.name for result in h.store.results().values() for f in result}
    unlisted = sorted(n for n in families if reserved_metrics.owner(n) is None)
    assert not unlisted, f"add to config/reserved_metrics.py: {unlisted}"


def test_the_daemon_exports_custom_queries_promtool_accepts(pg, tmp_path, daemon_factory):
    promtool = require_tool("promtool")
    (tmp_path / "q.yaml").write_text(
        "app_accounts:\n"
        "  query: SELECT count(*) AS rows, sum(seq_scan) AS seq_scan, sum(seq_scan) AS scans_total\n"
        "         FROM pg_stat_user_tables\n"
        "  interval: 1s\n"
        "  metrics:\n"
        "    - rows: {usage: GAUGE, description: User tables}\n"
        "    - seq_scan: {usage: COUNTER, description: Sequential scans}\n"
        "    - scans_total: {usage: COUNTER, description: Sequential scans again}\n")
    daemon = daemon_factory({"interval": "1s", "custom_queries": [str(tmp_path / "q.yaml")],
                             "postgres": [{"name": "main", "dsn": dsn(pg)}]})
    daemon.wait_for(lambda: daemon.sample("app_accounts_rows", target="main", datname="postgres") == 3,
                    what="app_accounts_rows")
    text = daemon.metrics()
    assert "# HELP app_accounts_rows User tables" in text
    assert "# TYPE app_accounts_seq_scan untyped" in text and "# TYPE app_accounts_scans_total counter" in text
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stdout + lint.stderr
