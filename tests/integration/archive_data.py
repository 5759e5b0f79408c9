"""Planted CPA rows on both sides of every archiving policy's line, and readers of an archive directory.

Shared by the archive integration tests (test_archive*.py).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import orjson
import psycopg

from pgwatch_cpa.cpa.archive import export as ex
from pgwatch_cpa.cpa.schema.migrate import migrate

TABLES = {"documents": "documents", "tasks": "tasks", "invoices": "invoices", "audit_logs": "audit_logs"}
# The issue's policies, written out here independently of migration 0005's archive_due view.
EXPECTED_DUE = {
    "documents": """SELECT d.id FROM documents d
                     WHERE d.archived_at IS NULL AND d.created_at < now() - interval '1 year'
                       AND NOT EXISTS (SELECT 1 FROM engagements e WHERE e.id = d.engagement_id AND e.deleted_at IS NULL
                                          AND e.status IN ('planned', 'in_progress', 'review'))""",
    "tasks": """SELECT id FROM tasks WHERE status = 'completed' AND deleted_at IS NULL
                  AND completed_at < now() - interval '90 days'""",
    "invoices": """SELECT id FROM invoices WHERE status = 'paid' AND archived_at IS NULL
                     AND paid_at < now() - interval '1 year'""",
    "audit_logs": "SELECT id FROM audit_logs WHERE created_at < now() - interval '90 days'",
}
_db_counter = itertools.count(1)


def fresh_database(pg_server) -> str:
    """A fresh database, migrated, for one test (the modules' ``dsn`` fixture)."""
    name = f"cpa_archive_{next(_db_counter)}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    target = pg_server.dsn(dbname=name)
    asyncio.run(migrate(target))
    return target


def conn_utc(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC")


def due_ids(dsn: str) -> dict[str, set[str]]:
    with conn_utc(dsn) as conn:
        return {p: {r[0] for r in conn.execute(q)} for p, q in EXPECTED_DUE.items()}


def row_json(dsn: str, table: str, ids: set[str]) -> dict[str, str]:
    with conn_utc(dsn) as conn:
        rows = conn.execute(f"SELECT id, to_jsonb(t)::text FROM {table} t WHERE id = ANY(%s)", [list(ids)])
        return dict(rows.fetchall())


def exported_rows(root: Path) -> dict[str, list[str]]:
    """policy -> every exported JSON line, from manifests that verify; fails on a stray file."""
    out: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            continue
        assert path.name.endswith((ex.MANIFEST_SUFFIX, ex.EXPORT_SUFFIX)), f"stray file {path}"
        if path.name.endswith(ex.EXPORT_SUFFIX):
            assert path.with_name(path.name.replace(ex.EXPORT_SUFFIX, ex.MANIFEST_SUFFIX)).exists(), path
            continue
        manifest = ex.parse_manifest(path.read_bytes())
        export = ex.decode((path.parent / manifest["export"]).read_bytes(), manifest)
        out.setdefault(manifest["policy"], []).extend(export.lines)
    return out


def ids_of(lines: list[str]) -> list[str]:
    return [orjson.loads(line)["id"] for line in lines]


def plant(dsn: str) -> None:
    """Two organizations with rows on both sides of every policy's line."""
    with conn_utc(dsn) as conn:
        for o in ("a", "b"):
            conn.execute(f"""
                INSERT INTO organizations (id, name, subdomain) VALUES ('org_{o}', 'Org {o}', 'org-{o}');
                INSERT INTO users (id, organization_id, email, name) VALUES ('u_{o}', 'org_{o}', 'u@{o}', 'U');
                INSERT INTO clients (id, organization_id, business_name) VALUES ('c_{o}', 'org_{o}', 'C {o}');
                INSERT INTO engagements (id, organization_id, client_id, name, type, status, year) VALUES
                    ('e_active_{o}', 'org_{o}', 'c_{o}', 'open', 'audit', 'in_progress', 2025),
                    ('e_done_{o}', 'org_{o}', 'c_{o}', 'done', 'audit', 'completed', 2024);
                INSERT INTO documents (id, organization_id, client_id, engagement_id, uploaded_by, file_name,
                                       category, year, created_at, file_size) VALUES
                    ('d_old_{o}', 'org_{o}', 'c_{o}', 'e_done_{o}', 'u_{o}', 'a.pdf', 'w2', 2024,
                     now() - interval '400 days', 20000000),
                    ('d_old_noeng_{o}', 'org_{o}', 'c_{o}', NULL, 'u_{o}', 'b.pdf', 'w2', 2024,
                     now() - interval '500 days', 100),
                    ('d_old_active_{o}', 'org_{o}', 'c_{o}', 'e_active_{o}', 'u_{o}', 'c.pdf', 'w2', 2024,
                     now() - interval '400 days', 100),
                    ('d_new_{o}', 'org_{o}', 'c_{o}', 'e_done_{o}', 'u_{o}', 'd.pdf', 'w2', 2025,
                     now() - interval '300 days', 100);
                INSERT INTO tasks (id, organization_id, engagement_id, title, status, completed_at, deleted_at,
                                   checklist) VALUES
                    ('t_old_{o}', 'org_{o}', 'e_done_{o}', 'old', 'completed', now() - interval '100 days', NULL,
                     '[{{"item": "x", "done": true}}]'),
                    ('t_recent_{o}', 'org_{o}', 'e_done_{o}', 'recent', 'completed', now() - interval '80 days',
                     NULL, '[]'),
                    ('t_open_{o}', 'org_{o}', 'e_done_{o}', 'open', 'todo', NULL, NULL, '[]'),
                    ('t_deleted_{o}', 'org_{o}', 'e_done_{o}', 'gone', 'completed', now() - interval '100 days',
                     now() - interval '5 days', '[]');
                INSERT INTO invoices (id, organization_id, client_id, invoice_number, status, invoice_date, due_date,
                                      total_amount, paid_amount, paid_at) VALUES
                    ('i_paid_old_{o}', 'org_{o}', 'c_{o}', 'I1', 'paid', current_date - 430, current_date - 400,
                     100.50, 100.50, now() - interval '400 days'),
                    ('i_paid_new_{o}', 'org_{o}', 'c_{o}', 'I2', 'paid', current_date - 130, current_date - 100,
                     10, 10, now() - interval '100 days'),
                    ('i_sent_old_{o}', 'org_{o}', 'c_{o}', 'I3', 'overdue', current_date - 430,
                     current_date - 400, 10, 0, NULL);
                INSERT INTO audit_logs (id, organization_id, user_id, entity_type, entity_id, action, changes,
                                        ip_address, created_at)
                    SELECT 'a_old_{o}_' || k, 'org_{o}', 'u_{o}', 'client', 'c_{o}', 'update',
                           jsonb_build_object('k', k), '10.0.0.1', now() - (100 + k) * interval '1 day'
                      FROM generate_series(1, 5) k;
                INSERT INTO audit_logs (id, organization_id, entity_type, entity_id, action, created_at)
                    VALUES ('a_new_{o}', 'org_{o}', 'client', 'c_{o}', 'view', now() - interval '10 days');
            """)


PLANTED_DUE = {
    "documents": {f"d_{k}_{o}" for k in ("old", "old_noeng") for o in "ab"},
    "tasks": {"t_old_a", "t_old_b"},
    "invoices": {"i_paid_old_a", "i_paid_old_b"},
    "audit_logs": {f"a_old_{o}_{k}" for o in "ab" for k in range(1, 6)},
}
