"""Archiving and retention on real PostgreSQL 15 and 18 (issue 14): exactly the due rows, verified exports,
read-only archived invoices, restore, retention, isolation per organization, the backlog query.

Crash tests (kill -9 at each step) are in test_archive_crash.py, S3 in test_archive_s3.py.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import psycopg
import pytest
import yaml

from pgwatch_cpa.cpa.archive import export as ex
from pgwatch_cpa.cpa.archive.archiver import ArchiveError, archive, connect
from pgwatch_cpa.cpa.archive.restore import restore
from pgwatch_cpa.cpa.archive.retention import purge_expired
from pgwatch_cpa.cpa.seed import seed
from tests.integration.archive_data import (
    PLANTED_DUE,
    TABLES,
    conn_utc,
    due_ids,
    exported_rows,
    fresh_database,
    ids_of,
    plant,
    row_json,
)

pytestmark = pytest.mark.integration

QUERIES_FILE = Path(__file__).resolve().parents[2] / "pgwatch_cpa" / "shipped" / "queries" / "cpa_archive.yaml"


@pytest.fixture
def dsn(pg_server) -> str:
    return fresh_database(pg_server)


_role_counter = itertools.count(1)


# ---------------------------------------------------------------- exactness


async def test_planted_rows_exactly_the_due_ones_are_archived_in_small_batches(dsn, tmp_path):
    plant(dsn)
    assert due_ids(dsn) == PLANTED_DUE
    before = {p: row_json(dsn, TABLES[p], ids) for p, ids in PLANTED_DUE.items()}
    report = await archive(dsn, tmp_path.as_uri(), batch_size=2)
    assert not report.failed
    assert {r.policy: r.rows for r in report.results} == {p: len(ids) for p, ids in PLANTED_DUE.items()}
    assert {r.policy: r.batches for r in report.results} == {"documents": 2, "tasks": 2, "invoices": 2,
                                                             "audit_logs": 6}
    exported = exported_rows(tmp_path)
    assert set(exported) == {"documents", "tasks", "audit_logs"}  # invoices stay in the database
    for policy, lines in exported.items():
        assert sorted(lines) == sorted(before[policy].values()), policy  # the rows as they were, each once
    with conn_utc(dsn) as conn:
        remaining_logs = {r[0] for r in conn.execute("SELECT id FROM audit_logs")}
        assert remaining_logs == {"a_new_a", "a_new_b"}
        tasks = dict(conn.execute("SELECT id, deleted_at IS NOT NULL AND archived_at IS NOT NULL FROM tasks"))
        assert {t for t, archived in tasks.items() if archived} == PLANTED_DUE["tasks"]
        docs = dict(conn.execute("SELECT id, archive_url FROM documents"))
        assert {d for d, url in docs.items() if url} == PLANTED_DUE["documents"]
        assert all(docs[d].startswith("file://") and docs[d].endswith(ex.EXPORT_SUFFIX)
                   for d in PLANTED_DUE["documents"])
        invoices = dict(conn.execute("SELECT id, archived_at IS NOT NULL FROM invoices"))
        assert {i for i, archived in invoices.items() if archived} == PLANTED_DUE["invoices"]
        journal = conn.execute("SELECT policy, state, sum(row_count) FROM archive_batches GROUP BY 1, 2").fetchall()
        assert sorted(journal) == sorted((p, "applied", len(ids)) for p, ids in PLANTED_DUE.items())
    assert due_ids(dsn) == {p: set() for p in PLANTED_DUE}
    again = await archive(dsn, tmp_path.as_uri(), batch_size=2)  # idempotent: nothing left to do
    assert [r.rows for r in again.results] == [0, 0, 0, 0] and exported_rows(tmp_path) == exported


async def test_seeded_data_every_due_row_and_only_due_rows(dsn, tmp_path):
    await seed(dsn, scale="small", progress=False)
    expected = due_ids(dsn)
    assert all(expected.values()), {p: len(v) for p, v in expected.items()}  # the seed has rows due in every policy
    before = {p: row_json(dsn, TABLES[p], ids) for p, ids in expected.items()}
    report = await archive(dsn, tmp_path.as_uri(), batch_size=500)
    assert not report.failed
    after = due_ids(dsn)
    exported = exported_rows(tmp_path)
    with conn_utc(dsn) as conn:
        archived = {
            "documents": {r[0] for r in conn.execute("SELECT id FROM documents WHERE archived_at IS NOT NULL")},
            "tasks": {r[0] for r in conn.execute("SELECT id FROM tasks WHERE archived_at IS NOT NULL")},
            "invoices": {r[0] for r in conn.execute("SELECT id FROM invoices WHERE archived_at IS NOT NULL")},
            "audit_logs": set(ids_of(exported["audit_logs"])),
        }
        assert conn.execute("SELECT count(*) FROM audit_logs WHERE id = ANY(%s)",
                            [list(archived["audit_logs"])]).fetchone()[0] == 0
    for policy, ids in expected.items():
        # Due before the run -> archived; archived -> due when the run started (rows only age during the run).
        assert ids <= archived[policy], policy
        assert not after[policy] & ids, policy
        if policy != "invoices":
            lines = exported[policy]
            assert len(lines) == len(set(ids_of(lines))) == len(archived[policy]), policy
            assert {line for line in lines if ids_of([line])[0] in ids} == set(before[policy].values()), policy
    assert sum(r.rows for r in report.results) == sum(len(v) for v in archived.values())


async def test_org_option_archives_that_organization_only(dsn, tmp_path):
    plant(dsn)
    report = await archive(dsn, tmp_path.as_uri(), org="org_b")
    assert sum(r.rows for r in report.results) == sum(len(ids) for ids in PLANTED_DUE.values()) // 2
    assert due_ids(dsn) == {p: {i for i in ids if "_a" in i} for p, ids in PLANTED_DUE.items()}


async def test_dry_run_counts_and_changes_nothing(dsn, tmp_path):
    plant(dsn)
    report = await archive(dsn, tmp_path.as_uri(), dry_run=True, policies=["audit_logs", "tasks"])
    assert [(r.policy, r.due_rows, r.due_orgs) for r in report.results] == [("tasks", 2, 2), ("audit_logs", 10, 2)]
    assert due_ids(dsn) == PLANTED_DUE and not list(tmp_path.iterdir())


async def test_a_failing_organization_is_isolated_recorded_and_retried(dsn, tmp_path):
    plant(dsn)
    with conn_utc(dsn) as conn:  # org_a's audit logs cannot be deleted (a fault planted by the test)
        conn.execute("""
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN RAISE EXCEPTION 'planted fault'; END $$;
            CREATE TRIGGER refuse BEFORE DELETE ON audit_logs FOR EACH ROW
                WHEN (OLD.organization_id = 'org_a') EXECUTE FUNCTION refuse();""")
    report = await archive(dsn, tmp_path.as_uri(), policies=["audit_logs", "tasks"])
    results = {r.policy: r for r in report.results}
    assert report.failed and results["audit_logs"].failed_orgs == 1 and results["tasks"].ok
    assert results["audit_logs"].rows == 5  # org_b went on
    assert due_ids(dsn)["audit_logs"] == PLANTED_DUE["audit_logs"] - {f"a_old_b_{k}" for k in range(1, 6)}
    with conn_utc(dsn) as conn:
        failures = conn.execute("SELECT policy, organization_id, error FROM archive_failures").fetchall()
        assert [(p, o) for p, o, _ in failures] == [("audit_logs", "org_a")] and "planted fault" in failures[0][2]
        assert conn.execute("SELECT count(*) FROM archive_batches WHERE state = 'pending'").fetchone()[0] == 0
        conn.execute("DROP TRIGGER refuse ON audit_logs")
    assert set(exported_rows(tmp_path)) == {"audit_logs", "tasks"}  # the failed batch left no file behind
    retry = await archive(dsn, tmp_path.as_uri(), policies=["audit_logs"])
    assert not retry.failed and retry.results[0].rows == 5
    assert sorted(ids_of(exported_rows(tmp_path)["audit_logs"])) == sorted(PLANTED_DUE["audit_logs"])


async def test_a_second_archiver_is_refused_while_one_runs(dsn, tmp_path):
    async with await connect(dsn) as holder:
        await holder.execute("SELECT pg_advisory_lock(x'6370612D61726368'::bigint)")
        with pytest.raises(ArchiveError, match="another archiver"):
            await archive(dsn, tmp_path.as_uri())


# ---------------------------------------------------------------- invoices are read-only once archived


async def test_the_application_role_cannot_modify_an_archived_invoice(dsn, tmp_path, pg_server):
    plant(dsn)
    await archive(dsn, tmp_path.as_uri(), policies=["invoices"])
    role = f"app_login_{next(_role_counter)}"
    with conn_utc(dsn) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw' IN ROLE cpa_app")
    with psycopg.connect(pg_server.dsn(user=role, password="pw", dbname=psycopg.conninfo.conninfo_to_dict(dsn)
                                       ["dbname"]), autocommit=True) as app:
        app.execute("SET ROLE cpa_app")
        app.execute("SELECT set_config('app.organization_id', 'org_a', false)")
        visible = {r[0] for r in app.execute("SELECT id FROM invoices")}
        assert {"i_paid_old_a", "i_paid_new_a"} <= visible  # archived invoices stay readable
        archived = app.execute("UPDATE invoices SET paid_amount = 1 WHERE id = 'i_paid_old_a'")
        assert archived.rowcount == 0
        assert app.execute("UPDATE invoices SET deleted_at = now() WHERE id = 'i_paid_old_a'").rowcount == 0
        current = app.execute("UPDATE invoices SET paid_amount = 1 WHERE id = 'i_paid_new_a'")
        assert current.rowcount == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("DELETE FROM invoices WHERE id = 'i_paid_old_a'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # nor can it archive (or un-archive) one
            app.execute("UPDATE invoices SET archived_at = now() WHERE id = 'i_paid_new_a'")
    with conn_utc(dsn) as conn:
        assert conn.execute("SELECT paid_amount, deleted_at FROM invoices WHERE id = 'i_paid_old_a'").fetchone() == (
            100.50, None)


# ---------------------------------------------------------------- restore and retention


async def test_restore_brings_every_exported_row_back_equal(dsn, tmp_path):
    plant(dsn)
    exported_ids = {p: ids for p, ids in PLANTED_DUE.items() if p != "invoices"}
    before = {p: row_json(dsn, TABLES[p], ids) for p, ids in exported_ids.items()}
    await archive(dsn, tmp_path.as_uri(), batch_size=3)
    assert all(row_json(dsn, TABLES[p], ids) != before[p] for p, ids in exported_ids.items())
    restored = 0
    for manifest in sorted(tmp_path.rglob("*" + ex.MANIFEST_SUFFIX)):
        restored += await restore(dsn, manifest.as_uri())
    assert restored == sum(len(ids) for ids in exported_ids.values())
    for policy, ids in exported_ids.items():
        assert row_json(dsn, TABLES[policy], ids) == before[policy], policy
    with conn_utc(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM archive_batches WHERE export_url IS NOT NULL "
                            "AND restored_at IS NULL").fetchone()[0] == 0


async def test_restore_refuses_an_export_that_does_not_match_its_manifest(dsn, tmp_path):
    plant(dsn)
    await archive(dsn, tmp_path.as_uri(), policies=["audit_logs"], batch_size=100)
    manifest = sorted(tmp_path.rglob("*" + ex.MANIFEST_SUFFIX))[0]  # one per organization
    export = manifest.with_name(manifest.name.replace(ex.MANIFEST_SUFFIX, ex.EXPORT_SUFFIX))
    export.write_bytes(ex.encode(['{"id": "forged"}']).data)
    with pytest.raises(ex.ExportError, match="sha256"):
        await restore(dsn, manifest.as_uri())


async def test_retention_purge_lists_in_dry_run_then_deletes_expired_exports(dsn, tmp_path):
    plant(dsn)
    await archive(dsn, tmp_path.as_uri(), policies=["audit_logs", "tasks"], batch_size=100)
    with conn_utc(dsn) as conn:
        conn.execute("UPDATE archive_batches SET retain_until = now() - interval '1 day' WHERE policy = 'tasks'")
        tasks_manifests = {r[0] for r in conn.execute(
            "SELECT manifest_url FROM archive_batches WHERE policy = 'tasks'")}
    listed = await purge_expired(dsn, dry_run=True)
    assert {e.manifest_url for e in listed} == tasks_manifests and len(tasks_manifests) == 2  # one per org
    assert set(exported_rows(tmp_path)) == {"audit_logs", "tasks"}  # nothing deleted yet
    purged = await purge_expired(dsn)
    assert [e.batch_id for e in purged] == [e.batch_id for e in listed]
    assert set(exported_rows(tmp_path)) == {"audit_logs"}
    assert await purge_expired(dsn) == []
    with conn_utc(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM archive_batches WHERE purged_at IS NOT NULL").fetchone()[0] == 2


async def test_retention_defaults_are_the_guides(dsn):
    with conn_utc(dsn) as conn:
        rows = conn.execute("SELECT policy, archive_after::text, retention::text FROM archive_policies "
                            "ORDER BY policy").fetchall()
    assert rows == [("audit_logs", "90 days", "7 years"), ("documents", "1 year", "7 years"),
                    ("invoices", "1 year", "7 years"), ("tasks", "90 days", "3 years")]


# ---------------------------------------------------------------- the backlog query (queries.yaml)


def test_backlog_query_as_the_monitoring_role_matches_planted_rows(dsn, pg_server):
    plant(dsn)
    query = yaml.safe_load(QUERIES_FILE.read_text())["cpa_archive_backlog"]["query"]
    role = f"monitor_{next(_role_counter)}"
    with conn_utc(dsn) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw' IN ROLE pg_monitor")
        assert conn.execute(query).fetchall()  # the owner can too
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(pg_server.dsn(user=role, password="pw", dbname=dbname), autocommit=True) as mon:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            mon.execute("SELECT count(*) FROM audit_logs")
        rows = {r[0]: r[1:] for r in mon.execute(query)}
    day = 86_400.0
    expected = {  # oldest planted due row per policy (age in days) and the number due
        "documents": (500, 4, 365.25), "tasks": (100, 2, 90), "invoices": (400, 2, 365.25),
        "audit_logs": (105, 10, 90),
    }
    for policy, (days, count, after_days) in expected.items():
        age, rows_due, after = rows[policy]
        assert days * day <= age < days * day + 600, policy
        assert (rows_due, after) == (count, after_days * day), policy


async def test_backlog_query_is_zero_when_nothing_is_due(dsn, tmp_path):
    plant(dsn)
    await archive(dsn, tmp_path.as_uri())
    query = yaml.safe_load(QUERIES_FILE.read_text())["cpa_archive_backlog"]["query"]
    with conn_utc(dsn) as conn:
        assert [r[:3] for r in conn.execute(query)] == [(p, 0.0, 0) for p in sorted(PLANTED_DUE)]


async def test_an_unwritable_destination_fails_every_organization_and_changes_nothing(dsn, tmp_path):
    plant(dsn)
    (tmp_path / "audit_logs").write_text("a file where the policy's directory goes")
    report = await archive(dsn, tmp_path.as_uri(), policies=["audit_logs"])
    assert report.failed and report.results[0].failed_orgs == 2 and report.results[0].rows == 0
    assert due_ids(dsn)["audit_logs"] == PLANTED_DUE["audit_logs"]
    with conn_utc(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM archive_batches").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM archive_failures").fetchone()[0] == 2
