"""CPA schema migrations on real PostgreSQL 15 and 18: idempotence, locking, checksums, invalid-index repair."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgwatch_cpa.cpa.schema import MIGRATIONS_DIR, MigrationError, load_migrations, migrate

pytestmark = pytest.mark.integration

ALL_FILES = [m.name for m in load_migrations()]

# Every index the guide's "Index Strategy" names (corrected per the errata, same names) ...
GUIDE_INDEXES = [
    "idx_organizations_subdomain", "idx_organizations_subscription",
    "idx_users_org_email", "idx_users_org_role_active", "idx_users_last_login",
    "idx_clients_org_status_name", "idx_clients_contact_search", "idx_clients_business_type_industry",
    "idx_documents_client_category_year", "idx_documents_ocr_processing", "idx_documents_review_queue",
    "idx_documents_tags_search",
    "idx_tasks_assignee_status_priority", "idx_tasks_engagement_workflow", "idx_tasks_overdue",
    "idx_invoices_client_status_due", "idx_invoices_payment_tracking", "idx_invoices_revenue_reporting",
    "idx_documents_reporting_period", "idx_engagements_reporting_period", "idx_revenue_monthly",
    "idx_quickbooks_sync_status", "idx_quickbooks_webhooks_processing", "idx_clients_quickbooks_mapping",
    "idx_audit_logs_entity_timeline", "idx_audit_logs_user_activity", "idx_auth_attempts_security",
]
# ... and the ones the query layer needs.
QUERY_INDEXES = [
    "idx_clients_org_name", "idx_clients_org_created", "idx_engagements_client", "idx_documents_file_name_trgm",
    "idx_documents_org_created", "idx_tasks_assignee_priority_rank", "idx_invoices_open_ar",
]
_db_counter = itertools.count(1)


@pytest.fixture(scope="module")
def pg(pg_server):
    """One sandbox per PostgreSQL build (tests/conftest.py), shared by the module."""
    return pg_server


@pytest.fixture
def dsn(pg) -> str:
    """A fresh, empty database for one test."""
    name = f"cpa_schema_{next(_db_counter)}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.dsn(dbname=name)


def _index_state(dsn: str) -> dict[str, dict]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("""
            SELECT c.relname, i.indisvalid, i.indisunique, am.amname, pg_get_indexdef(i.indexrelid)
              FROM pg_index i
              JOIN pg_class c ON c.oid = i.indexrelid
              JOIN pg_am am ON am.oid = c.relam
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public'""").fetchall()
    return {r[0]: {"valid": r[1], "unique": r[2], "am": r[3], "def": r[4]} for r in rows}


def _applied_or_none(dsn: str) -> list[str] | None:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None:
            return None
    return _applied(dsn)


def _applied(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT filename FROM schema_migrations ORDER BY version")]


async def test_migrate_applies_all_then_is_a_noop(dsn):
    assert await migrate(dsn) == ALL_FILES
    assert await migrate(dsn) == []
    assert _applied(dsn) == ALL_FILES
    with psycopg.connect(dsn) as conn:
        checksums = dict(conn.execute("SELECT filename, checksum FROM schema_migrations").fetchall())
    assert checksums == {m.name: m.checksum for m in load_migrations()}


async def test_concurrent_runners_apply_once(dsn):
    first, second = await asyncio.gather(migrate(dsn), migrate(dsn))
    assert sorted([first, second], key=len) == [[], ALL_FILES]
    assert _applied(dsn) == ALL_FILES


async def test_second_runner_waits_for_the_lock(dsn):
    from pgwatch_cpa.cpa.schema.migrate import ADVISORY_LOCK_KEY

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as holder:
        await holder.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        runner = asyncio.create_task(migrate(dsn))
        await asyncio.sleep(1.0)
        assert not runner.done()
        cur = await holder.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                   "'pgwatch-cpa-migrate' AND datname = current_database()")
        assert (await cur.fetchone())[0] == 1  # connected, polling for the lock, nothing applied
        assert _applied_or_none(dsn) is None
        await holder.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])
        assert await asyncio.wait_for(runner, 30) == ALL_FILES


def test_two_processes_apply_once(dsn):
    code = ("import sys; from pgwatch_cpa.cpa.schema import migrate_sync; "
            "print(len(migrate_sync(sys.argv[1])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, dsn], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = sorted(int(p.communicate(timeout=120)[0].strip()) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert outputs == [0, len(ALL_FILES)]
    assert _applied(dsn) == ALL_FILES


async def test_every_guide_index_exists_valid_and_corrected(dsn):
    await migrate(dsn)
    state = _index_state(dsn)
    missing = [name for name in GUIDE_INDEXES + QUERY_INDEXES if name not in state]
    assert missing == []
    assert all(state[name]["valid"] for name in GUIDE_INDEXES + QUERY_INDEXES)
    # errata corrections
    assert state["idx_organizations_subdomain"]["unique"]
    assert state["idx_users_org_email"]["unique"]
    assert "CURRENT_DATE" not in state["idx_tasks_overdue"]["def"].upper()
    assert "timestamp without time zone" in state["idx_invoices_revenue_reporting"]["def"]
    assert state["idx_clients_quickbooks_mapping"]["am"] == "btree"
    assert "->> 'quickbooks_id'" in state["idx_clients_quickbooks_mapping"]["def"]
    assert "gin_trgm_ops" in state["idx_documents_file_name_trgm"]["def"]
    assert "contact_search" in state["idx_clients_contact_search"]["def"]
    assert "INCLUDE" in state["idx_clients_org_status_name"]["def"]
    assert "priority_rank" in state["idx_tasks_assignee_priority_rank"]["def"]
    assert "status <> ALL" in state["idx_tasks_assignee_priority_rank"]["def"]
    assert "idx_clients_org_status" not in state  # the guide's REINDEX names an index that does not exist


async def test_roles_and_ownership(dsn):
    await migrate(dsn)
    with psycopg.connect(dsn) as conn:
        login, bypass = conn.execute(
            "SELECT rolcanlogin, rolbypassrls FROM pg_roles WHERE rolname = 'cpa_app'").fetchone()
        assert (login, bypass) == (False, False)
        rows = conn.execute("""
            SELECT c.relname, pg_get_userbyid(c.relowner), c.relrowsecurity
              FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
               AND c.relname <> 'schema_migrations'""").fetchall()
    assert rows and all(owner != "cpa_app" for _, owner, _ in rows)
    assert {name for name, _, rls in rows if not rls} == {"auth_attempts"}


async def test_edited_applied_file_is_refused(dsn, tmp_path: Path):
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    assert await migrate(dsn, migrations_dir=migrations) == ALL_FILES
    target = migrations / "0002_tables.sql"
    target.write_text(target.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(MigrationError, match=r"0002_tables\.sql.*edited"):
        await migrate(dsn, migrations_dir=migrations)


async def test_failed_concurrent_build_leaves_invalid_index_that_is_rebuilt(dsn, tmp_path: Path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for name in ALL_FILES[:2]:
        shutil.copy(MIGRATIONS_DIR / name, migrations / name)
    assert await migrate(dsn, migrations_dir=migrations) == ALL_FILES[:2]
    with psycopg.connect(dsn) as conn:  # duplicate subdomains make the UNIQUE concurrent build fail
        conn.execute("INSERT INTO organizations (id, name, subdomain) VALUES ('org_a', 'A', 'dup'), "
                     "('org_b', 'B', 'dup')")
    for name in ALL_FILES[2:]:
        shutil.copy(MIGRATIONS_DIR / name, migrations / name)
    with pytest.raises(MigrationError, match=r"0003_indexes\.sql"):
        await migrate(dsn, migrations_dir=migrations)
    assert _index_state(dsn)["idx_organizations_subdomain"]["valid"] is False
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE organizations SET subdomain = 'b' WHERE id = 'org_b'")
    assert await migrate(dsn, migrations_dir=migrations) == ALL_FILES[2:]
    state = _index_state(dsn)
    assert state["idx_organizations_subdomain"]["valid"] and state["idx_organizations_subdomain"]["unique"]


async def test_invalid_index_of_an_applied_file_is_rebuilt(dsn):
    await migrate(dsn)
    with psycopg.connect(dsn) as conn:  # simulate what a crashed CREATE INDEX CONCURRENTLY leaves behind
        conn.execute("UPDATE pg_index SET indisvalid = false "
                     "WHERE indexrelid = 'idx_documents_file_name_trgm'::regclass")
    assert _index_state(dsn)["idx_documents_file_name_trgm"]["valid"] is False
    assert await migrate(dsn) == []
    assert _index_state(dsn)["idx_documents_file_name_trgm"]["valid"] is True
