"""CPA query layer on real, seeded PostgreSQL 15 and 18: correctness, RLS, batching and index use.

EXPLAIN tests use the "medium" scale (~1.2M rows, ~40 s to seed per server on 2 cores): real data volume, no
``enable_seqscan`` tricks.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import date
from decimal import Decimal

import psycopg
import pytest

from pgwatch_cpa.cpa import queries as q
from pgwatch_cpa.cpa.db import create_pool
from pgwatch_cpa.cpa.loaders import CpaLoaders
from pgwatch_cpa.cpa.seed import seed

pytestmark = pytest.mark.integration

APP_PASSWORD = "app-test-password"


@pytest.fixture(scope="module")
def pg(pg_server):
    """One sandbox per PostgreSQL build (tests/conftest.py), shared by the module."""
    return pg_server


def _seeded(pg, name: str, scale: str) -> str:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = pg.dsn(dbname=name)
    asyncio.run(seed(dsn, scale, seed=7, progress=False))
    with psycopg.connect(dsn, autocommit=True) as conn:  # deployments grant LOGIN; so does the test
        conn.execute(f"ALTER ROLE cpa_app LOGIN PASSWORD '{APP_PASSWORD}'")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        # tasks' statistics from every row rather than ANALYZE's random sample, so the tasks_for_assignee plan
        # does not depend on the sample (it flipped to a Sort about once in five runs).
        conn.execute("SET default_statistics_target = 10000")
        conn.execute("ANALYZE tasks")
    return dsn


@pytest.fixture(scope="module")
def small(pg) -> str:
    return _seeded(pg, "cpa_small", "small")


@pytest.fixture(scope="module")
def medium(pg) -> str:
    return _seeded(pg, "cpa_medium", "medium")


def _app_dsn(pg, owner_dsn: str) -> str:
    return pg.dsn(user="cpa_app", password=APP_PASSWORD, dbname=owner_dsn.rsplit("/", 1)[1])


async def _all_dashboard(conn, org: str) -> list[dict]:
    rows, after = [], None
    while True:
        page = await q.client_dashboard(conn, org, limit=97, after=after)
        rows += page
        if len(page) < 97:
            return rows
        after = (page[-1]["business_name"], page[-1]["id"])


async def test_dashboard_totals_equal_independent_sums_and_guide_query_is_wrong(small):
    org = "org_1"
    async with await psycopg.AsyncConnection.connect(small) as conn:
        ours = {r["id"]: r for r in await _all_dashboard(conn, org)}
        naive = {r["id"]: r for r in await q.guide_client_dashboard_naive(conn, org)}
    with psycopg.connect(small) as conn:  # independent: raw rows, summed in Python
        clients = {r[0] for r in conn.execute(
            "SELECT id FROM clients WHERE organization_id = %s AND deleted_at IS NULL", [org])}
        docs, engs, open_inv, overdue = defaultdict(int), defaultdict(int), defaultdict(int), defaultdict(Decimal)
        for cid, deleted, latest in conn.execute(
                "SELECT client_id, deleted_at, is_latest_version FROM documents WHERE organization_id = %s", [org]):
            docs[cid] += deleted is None and latest
        for cid, deleted, status in conn.execute(
                "SELECT client_id, deleted_at, status FROM engagements WHERE organization_id = %s", [org]):
            engs[cid] += deleted is None and status != "completed"
        for cid, deleted, status, total, paid in conn.execute(
                "SELECT client_id, deleted_at, status, total_amount, paid_amount FROM invoices "
                "WHERE organization_id = %s", [org]):
            if deleted is None and status not in ("paid", "cancelled"):
                open_inv[cid] += 1
                if status == "overdue":
                    overdue[cid] += total - paid
    assert set(ours) == clients and len(clients) > 100
    for cid in clients:
        row = ours[cid]
        assert (row["document_count"], row["engagement_count"], row["open_invoice_count"]) == \
               (docs[cid], engs[cid], open_inv[cid])
        assert row["overdue_amount"] == overdue[cid]
    true_total = sum(overdue[cid] for cid in clients)  # live clients only
    assert sum(r["overdue_amount"] for r in ours.values()) == true_total > 0
    # The guide's fan-out join: same counts, overdue multiplied by documents x engagements.
    wrong = 0
    for cid in clients:
        n = naive[cid]
        assert (n["document_count"], n["engagement_count"]) == (docs[cid], engs[cid])
        assert n["overdue_amount"] == overdue[cid] * max(docs[cid], 1) * max(engs[cid], 1)
        wrong += n["overdue_amount"] != overdue[cid]
    assert wrong > 0
    assert sum(n["overdue_amount"] for n in naive.values()) > true_total


async def test_keyset_pages_return_every_row_once_under_concurrent_inserts(small):
    org = "org_2"
    with psycopg.connect(small) as conn:
        before = {r[0] for r in conn.execute(
            "SELECT id FROM documents WHERE organization_id = %s AND deleted_at IS NULL AND is_latest_version",
            [org])}
        client_id, user_id = conn.execute(
            "SELECT c.id, u.id FROM clients c JOIN users u USING (organization_id) WHERE c.organization_id = %s "
            "LIMIT 1", [org]).fetchone()
    stop = asyncio.Event()

    async def writer() -> int:
        n = 0
        async with await psycopg.AsyncConnection.connect(small, autocommit=True) as w:
            while not stop.is_set():
                n += 1
                # new rows at the head of the order, and rows "back-dated" into the middle of it
                await w.execute(
                    "INSERT INTO documents (id, organization_id, client_id, uploaded_by, file_name, category, year, "
                    "created_at) VALUES (%s, %s, %s, %s, 'new.pdf', 'receipt', 2026, now() - %s * interval '1 day')",
                    [f"doc_new_{n}", org, client_id, user_id, n % 400])
                await asyncio.sleep(0.002)
        return n

    task = asyncio.create_task(writer())
    seen: list[str] = []
    async with await psycopg.AsyncConnection.connect(small) as conn:
        cursor = None
        while True:
            page = await q.list_documents_keyset(conn, org, cursor=cursor, limit=37)
            seen += [r["id"] for r in page.items]
            await asyncio.sleep(0.01)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    stop.set()
    inserted = await task
    assert inserted > 5
    assert len(seen) == len(set(seen))          # nothing twice
    assert before <= set(seen)                  # every pre-existing row once


async def test_rls_confines_the_app_role_to_its_organization(pg, small):
    with psycopg.connect(small) as owner:
        a_clients = owner.execute("SELECT count(*) FROM clients WHERE organization_id = 'org_3'").fetchone()[0]
        b_client = owner.execute("SELECT id FROM clients WHERE organization_id = 'org_4' LIMIT 1").fetchone()[0]
    with psycopg.connect(_app_dsn(pg, small)) as app:
        assert app.execute("SELECT count(*) FROM clients").fetchone()[0] == 0  # no org set: nothing
        app.execute("SELECT set_config('app.organization_id', 'org_3', false)")
        assert app.execute("SELECT count(*) FROM clients").fetchone()[0] == a_clients
        for table in ("clients", "documents", "engagements", "tasks", "invoices", "users", "audit_logs"):
            assert app.execute(f"SELECT count(*) FROM {table} WHERE organization_id = 'org_4'").fetchone()[0] == 0
            assert app.execute(f"SELECT count(DISTINCT organization_id) FROM {table}").fetchone()[0] == 1
        assert app.execute("SELECT id FROM organizations").fetchall() == [("org_3",)]
        cur = app.execute("UPDATE clients SET status = 'archived' WHERE id = %s", [b_client])
        assert cur.rowcount == 0
        app.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # WITH CHECK: cannot write into org B
            app.execute("INSERT INTO clients (id, organization_id, business_name) VALUES ('x', 'org_4', 'x')")
        app.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # soft delete only
            app.execute("DELETE FROM clients")
    async with await psycopg.AsyncConnection.connect(_app_dsn(pg, small)) as app:
        rows = await q.client_dashboard(app, "org_3", limit=10_000)
        with psycopg.connect(small) as owner:
            live = owner.execute("SELECT count(*) FROM clients WHERE organization_id = 'org_3' "
                                 "AND deleted_at IS NULL").fetchone()[0]
        assert len(rows) == live
        loaders = CpaLoaders(app, "org_3")
        assert await loaders.clients.load(b_client) is None


async def test_dataloader_turns_n_loads_into_one_query(small):
    with psycopg.connect(small) as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM clients WHERE organization_id = 'org_1' AND deleted_at IS NULL ORDER BY id LIMIT 40")]
        foreign = conn.execute("SELECT id FROM clients WHERE organization_id = 'org_5' LIMIT 1").fetchone()[0]
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.commit()
    async with await psycopg.AsyncConnection.connect(small) as conn:
        loaders = CpaLoaders(conn, "org_1")
        clients = await asyncio.gather(*(loaders.clients.load(i) for i in [*ids, foreign]))
        docs = await loaders.documents_by_client.load_many(ids)
        engs = await loaders.engagements_by_client.load_many(ids)
        again = await loaders.clients.load(ids[0])  # request-scoped cache: no query
    assert [c["id"] for c in clients[:-1]] == ids and clients[-1] is None and again is clients[0]
    assert all(d["client_id"] == i for i, ds in zip(ids, docs, strict=True) for d in ds)
    assert any(docs) and any(engs)
    assert dict(loaders.batches) == {"clients": 1, "documents_by_client": 1, "engagements_by_client": 1}
    with psycopg.connect(small) as conn:
        calls = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '%FROM clients%' "
            "AND query LIKE '%ANY(%' AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()[0]
    assert calls == 1


async def test_document_search_filters_and_escapes_wildcards(small):
    with psycopg.connect(small) as conn:
        client_id, user_id = conn.execute(
            "SELECT c.id, u.id FROM clients c JOIN users u USING (organization_id) WHERE c.organization_id = 'org_6' "
            "LIMIT 1").fetchone()
        for name in ("100%_done.pdf", "100x_done.pdf", "1000_done.pdf"):
            conn.execute("INSERT INTO documents (organization_id, client_id, uploaded_by, file_name, category, year) "
                         "VALUES ('org_6', %s, %s, %s, 'receipt', 2024)", [client_id, user_id, name])
        conn.commit()
    async with await psycopg.AsyncConnection.connect(small) as conn:
        assert [r["file_name"] for r in await q.search_documents(conn, "org_6", file_name="100%_")] == \
               ["100%_done.pdf"]
        rows = await q.search_documents(conn, "org_6", category="w2", year=2025, limit=50)
        assert all(r["category"] == "w2" and r["year"] == 2025 for r in rows)
        assert [r["created_at"] for r in rows] == sorted((r["created_at"] for r in rows), reverse=True)
        with pytest.raises(ValueError, match="keyset"):
            await q.search_documents(conn, "org_6", offset=50_000)


async def test_tasks_aging_metrics_and_lookups(small):
    async with await psycopg.AsyncConnection.connect(small) as conn:
        cur = await conn.execute("SELECT assigned_to_id FROM tasks WHERE organization_id = 'org_1' "
                                 "AND assigned_to_id IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
        user = (await cur.fetchone())[0]
        await conn.commit()
        tasks = await q.tasks_for_assignee(conn, "org_1", user, limit=500)
        assert tasks and all(t["status"] not in ("completed", "cancelled") for t in tasks)
        keys = [(t["priority_rank"], t["due_date"] or date.max, t["created_at"]) for t in tasks]
        assert keys == sorted(keys)
        assert {t["priority"] for t in tasks} <= {"urgent", "high", "normal", "low"}
        aging = await q.receivables_aging(conn, "org_1")
        metrics = await q.dashboard_metrics(conn, "org_1")
        assert [b["bucket"] for b in aging] == list(q.AGING_BUCKETS)
        assert sum(b["balance"] for b in aging) == metrics["outstanding_balance"]
        assert sum(b["balance"] for b in aging[1:]) == metrics["overdue_balance"]
        assert sum(b["invoice_count"] for b in aging) == metrics["open_invoices"]
        overdue = await q.overdue_tasks(conn, "org_1", limit=10_000)
        assert len(overdue) == metrics["overdue_tasks"] > 0
        client = (await q.client_dashboard(conn, "org_1", limit=1))[0]
        cur = await conn.execute("SELECT financial_data->>'quickbooks_id' FROM clients WHERE financial_data IS NOT "
                                 "NULL AND organization_id = 'org_1' AND deleted_at IS NULL LIMIT 1")
        qb = (await cur.fetchone())[0]
        await conn.commit()
        assert (await q.find_client_by_quickbooks_id(conn, "org_1", qb))["financial_data"]["quickbooks_id"] == qb
        assert await q.find_client_by_quickbooks_id(conn, "org_2", qb) is None
        assert await q.search_clients(conn, "org_1", client["business_name"].split()[0])
        assert await q.revenue_by_month(conn, "org_1", date(2024, 1, 1))
        assert len(await q.list_clients(conn, "org_1", page=2, per_page=5)) == 5


async def test_cache_seam_is_used(small):
    class DictCache:
        def __init__(self) -> None:
            self.store: dict[tuple, object] = {}
            self.loads = 0

        async def get_or_load(self, key_parts, loader):
            key = tuple(key_parts)
            if key not in self.store:
                self.loads += 1
                self.store[key] = await loader()
            return self.store[key]

    cache = DictCache()
    async with await psycopg.AsyncConnection.connect(small) as conn:
        first = await q.dashboard_metrics(conn, "org_1", cache=cache)
        second = await q.dashboard_metrics(conn, "org_1", cache=cache)
    assert first is second and cache.loads == 1 and ("dashboard", "org_1", "metrics") in cache.store


async def test_pool_settings_follow_the_guide(small):
    async with create_pool(small, min_size=1, max_size=3) as pool, pool.connection() as conn:
        cur = await conn.execute("SELECT current_setting('statement_timeout'), "
                                 "current_setting('idle_in_transaction_session_timeout'), "
                                 "current_setting('application_name')")
        assert await cur.fetchone() == ("30s", "5min", "cpa_platform")
    assert pool.max_size == 3
    async with create_pool(small) as pool:
        assert pool.max_size == 20 and pool.timeout == 5.0
        assert len(await q.client_dashboard(pool, "org_2", limit=5)) == 5


# ---------------------------------------------------------------- EXPLAIN at the medium scale


def _plan_nodes(plan: dict) -> list[dict]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


async def _explain(dsn: str, org: str, call) -> list[dict]:
    """Run a real query function, but with EXPLAIN in front of the statement it sends."""
    plans: list[dict] = []
    original = q._fetchall

    async def explaining(db, org_id, operation, query, params):
        async with q.tenant_cursor(db, org_id, operation) as cur:
            await cur.execute(psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ") + (
                psycopg.sql.SQL(query) if isinstance(query, str) else query), params)
            raw = (await cur.fetchone())["QUERY PLAN"]
        plans.extend(_plan_nodes((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]))
        return []

    q._fetchall = explaining
    try:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await call(conn, org)
    finally:
        q._fetchall = original
    return plans


def _indexes(nodes: list[dict]) -> set[str]:
    return {n["Index Name"] for n in nodes if "Index Name" in n}


MID_ORG = "org_7"  # ~2.5 % of the data: a typical practice, neither the giant nor the tail
EXPLAIN_CASES = {
    "client_dashboard": (lambda c, o: q.client_dashboard(c, o),
                         {"idx_clients_org_name", "idx_documents_client_category_year", "idx_engagements_client",
                          "idx_invoices_client_status_due"}, True),
    "list_clients": (lambda c, o: q.list_clients(c, o), {"idx_clients_org_status_name"}, True),
    "keyset_documents": (lambda c, o: q.list_documents_keyset(c, o), {"idx_documents_org_created"}, True),
    "tasks_for_assignee": (None, {"idx_tasks_assignee_priority_rank"}, True),
    "overdue_tasks": (lambda c, o: q.overdue_tasks(c, o), {"idx_tasks_overdue"}, True),
    "receivables_aging": (lambda c, o: q.receivables_aging(c, o), {"idx_invoices_open_ar"}, True),
    "ocr_queue": (lambda c, o: q.ocr_queue(c, o), {"idx_documents_ocr_processing"}, True),
    # Owner-only: their operators (ILIKE, @@, ->>, date_trunc filter) are not LEAKPROOF, see queries.py.
    "file_name_search": (lambda c, o: q.search_documents(c, o, file_name="w2_2024_client-3"),
                         {"idx_documents_file_name_trgm"}, False),
    "contact_search": (lambda c, o: q.search_clients(c, o, "Acme Bakery"), {"idx_clients_contact_search"}, False),
    "quickbooks_lookup": (lambda c, o: q.find_client_by_quickbooks_id(c, o, "qb_4000"),
                          {"idx_clients_quickbooks_mapping"}, False),
    "revenue_by_month": (lambda c, o: q.revenue_by_month(c, o, date(2025, 6, 1)),
                         {"idx_invoices_revenue_reporting"}, False),
}


@pytest.mark.parametrize("case", list(EXPLAIN_CASES))
async def test_explain_uses_the_intended_index(pg, medium, case):
    call, expected, as_app_too = EXPLAIN_CASES[case]
    if call is None:
        with psycopg.connect(medium) as conn:
            user = conn.execute("SELECT assigned_to_id FROM tasks WHERE organization_id = %s AND assigned_to_id "
                                "IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC LIMIT 1", [MID_ORG]).fetchone()[0]

        def call(c, o):
            return q.tasks_for_assignee(c, o, user)
    nodes = await _explain(medium, MID_ORG, call)
    assert expected <= _indexes(nodes), json.dumps(nodes, default=str)[:3000]
    assert not any(n["Node Type"] == "Seq Scan" for n in nodes)
    if case in ("tasks_for_assignee", "keyset_documents", "client_dashboard"):
        assert not any(n["Node Type"] == "Sort" for n in nodes)  # the index order is the result order
    if case == "list_clients":
        assert any(n["Node Type"] == "Index Only Scan" for n in nodes)  # covering
    if as_app_too:
        app_nodes = await _explain(_app_dsn(pg, medium), MID_ORG, call)
        assert expected <= _indexes(app_nodes)
        assert not any(n["Node Type"] == "Seq Scan" for n in app_nodes)
