"""The shipped builtin:cpa_business.yaml on a migrated CPA database, read as a pg_monitor-only role: planted
documents, report jobs and QuickBooks syncs of known ages give those ages; no organization id is exported."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest

from pgwatch_cpa.cpa.schema.migrate import migrate_sync
from pgwatch_cpa.sandbox import PostgresSandbox
from tests.integration.test_custom_queries import Harness, write_config

pytestmark = pytest.mark.integration

MONITOR, MONITOR_PW = "bizmon", "bizmon-pw"


@pytest.fixture(scope="module")
def cpa(pg_server: PostgresSandbox) -> PostgresSandbox:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as su:
        su.execute("CREATE DATABASE cpa_business")
        su.execute(f"CREATE ROLE {MONITOR} LOGIN PASSWORD '{MONITOR_PW}' IN ROLE pg_monitor")
    migrate_sync(pg_server.dsn(dbname="cpa_business"))
    return pg_server


def plant(owner_dsn: str) -> None:
    """Two organizations; rows whose ages are set relative to now() (the views compute ages at read time)."""
    with psycopg.connect(owner_dsn, autocommit=True) as su:
        su.execute("TRUNCATE organizations, users, clients, documents, report_jobs, quickbooks_syncs CASCADE")
        for org in ("org-a", "org-b"):
            su.execute("INSERT INTO organizations (id, name, subdomain) VALUES (%s, %s, %s)", (org, org, org))
            su.execute("INSERT INTO users (id, organization_id, email, name) VALUES (%s, %s, %s, 'A B')",
                       (f"u-{org}", org, f"{org}@example.com"))
            su.execute("INSERT INTO clients (id, organization_id, business_name) VALUES (%s, %s, 'Client')",
                       (f"c-{org}", org))
        docs = [("org-a", "pending", 40), ("org-b", "pending", 10), ("org-a", "processing", 25),
                ("org-b", "completed", 900)]
        for org, status, age in docs:
            su.execute("INSERT INTO documents (organization_id, client_id, uploaded_by, file_name, category, year, "
                       "ocr_status, created_at) VALUES (%s, %s, %s, 'f.pdf', 'tax', 2026, %s, "
                       "now() - make_interval(secs => %s))", (org, f"c-{org}", f"u-{org}", status, age))
        jobs = [("org-a", "trial_balance", "queued", 70), ("org-b", "trial_balance", "queued", 5),
                ("org-a", "trial_balance", "running", 20), ("org-b", "pnl", "completed", 500)]
        for org, kind, status, age in jobs:
            su.execute("INSERT INTO report_jobs (organization_id, report_type, status, requested_at) "
                       "VALUES (%s, %s, %s, now() - make_interval(secs => %s))", (org, kind, status, age))
        syncs = [("org-a", "invoices", "completed", 600, 590), ("org-a", "invoices", "completed", 200, 190),
                 ("org-b", "invoices", "completed", 100, 90), ("org-b", "invoices", "running", 400, None),
                 ("org-a", "customers", "failed", 50, 40)]
        for org, entity, status, started, completed in syncs:
            su.execute("INSERT INTO quickbooks_syncs (organization_id, entity_type, status, started_at, completed_at) "
                       "VALUES (%s, %s, %s, now() - make_interval(secs => %s), "
                       "now() - make_interval(secs => %s))", (org, entity, status, started, completed))


async def test_business_queries_give_the_planted_ages(cpa, tmp_path):
    plant(cpa.dsn(dbname="cpa_business"))
    dsn = cpa.dsn(MONITOR, MONITOR_PW, dbname="cpa_business")
    async with Harness(write_config(tmp_path, ["builtin:cpa_business.yaml"], dsn=dsn)) as h:
        await h.poll()
        assert h.value("cpa_business_ocr_documents", status="pending") == 2
        assert h.value("cpa_business_ocr_oldest_age_seconds", status="pending") == pytest.approx(40, abs=5)
        assert h.value("cpa_business_ocr_documents", status="processing") == 1
        assert h.value("cpa_business_ocr_oldest_age_seconds", status="processing") == pytest.approx(25, abs=5)

        assert h.value("cpa_business_reports_jobs", report_type="trial_balance", status="queued") == 2
        assert h.value("cpa_business_reports_oldest_age_seconds", report_type="trial_balance",
                       status="queued") == pytest.approx(70, abs=5)
        assert h.value("cpa_business_reports_oldest_age_seconds", report_type="trial_balance",
                       status="running") == pytest.approx(20, abs=5)
        assert h.value("cpa_business_reports_jobs", report_type="pnl") is None  # completed jobs are not backlog

        # org-a's last completed invoices sync is 190 s old, org-b's 90 s: the max is 190, none older than 5 min
        assert h.value("cpa_business_quickbooks_last_completed_max_age_seconds",
                       entity_type="invoices") == pytest.approx(190, abs=5)
        assert h.value("cpa_business_quickbooks_stale_organizations", entity_type="invoices") == 0
        assert h.value("cpa_business_quickbooks_running_syncs", entity_type="invoices") == 1
        assert h.value("cpa_business_quickbooks_running_oldest_age_seconds",
                       entity_type="invoices") == pytest.approx(400, abs=5)
        assert h.value("cpa_business_quickbooks_running_syncs", entity_type="customers") is None
        for key in ("ocr", "reports", "quickbooks"):
            assert h.value("pgwatch_collector_success", collector=f"custom:cpa_business_{key}") == 1
        exported = [lab for n, lab, _v in h.store.samples() if n.startswith("cpa_business_")]
    assert not [lab for lab in exported if any("org-" in v for v in lab.values())]


async def test_on_a_database_without_the_cpa_schema_each_query_is_disabled_with_one_warning(cpa, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    dsn = cpa.dsn(MONITOR, MONITOR_PW, dbname="postgres")
    async with Harness(write_config(tmp_path, ["builtin:cpa_business.yaml"], dsn=dsn)) as h:
        for _ in range(2):
            await h.poll()
        for key in ("ocr", "reports", "quickbooks"):
            assert h.value("pgwatch_collector_enabled", collector=f"custom:cpa_business_{key}") == 0
    warnings = [r.getMessage() for r in caplog.records if "disabled" in r.getMessage()]
    assert len(warnings) == 3 and all("does not exist" in w for w in warnings), warnings


def test_the_business_file_is_shipped(tmp_path):
    from pgwatch_cpa import shipped

    assert "cpa_business.yaml" in shipped.builtin_query_files()
    assert Path(shipped.resolve_builtin_queries("builtin:cpa_business.yaml")).is_file()


async def test_the_background_jobs_drain_the_backlog_and_keep_the_business_metrics_live(cpa, tmp_path):
    import asyncio

    from psycopg_pool import AsyncConnectionPool

    from pgwatch_cpa.cpa.background_jobs import run_background_jobs

    owner = cpa.dsn(dbname="cpa_business")
    plant(owner)
    stop = asyncio.Event()
    async with AsyncConnectionPool(owner, min_size=1, max_size=2, open=False) as pool:
        jobs = asyncio.create_task(run_background_jobs(pool, ["org-a", "org-b"], stop, tick=0.2))
        await asyncio.sleep(1.5)
        stop.set()
        assert await jobs >= 3
    with psycopg.connect(owner) as su:
        waiting = su.execute("SELECT count(*) FROM documents WHERE ocr_status IN ('pending', 'processing')")
        assert waiting.fetchone()[0] == 0
        jobs_by_status = dict(su.execute("SELECT status, count(*) FROM report_jobs GROUP BY status").fetchall())
        assert jobs_by_status["completed"] >= 4  # the planted ones and those the ticks requested
        running = su.execute("SELECT count(*), max(now() - started_at) FROM quickbooks_syncs WHERE status = 'running'")
        count, oldest = running.fetchone()
        assert count <= 1 and (oldest is None or oldest.total_seconds() < 5)  # the last tick's sync, at most
    dsn = cpa.dsn(MONITOR, MONITOR_PW, dbname="cpa_business")
    async with Harness(write_config(tmp_path, ["builtin:cpa_business.yaml"], dsn=dsn)) as h:
        await h.poll()
        assert h.value("cpa_business_ocr_oldest_age_seconds", status="pending") == 0
        assert h.value("cpa_business_quickbooks_running_oldest_age_seconds", entity_type="invoices") < 5
