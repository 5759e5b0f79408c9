"""The CPA application's query patterns (guide "Query Optimization" and "Best Practices"), correct and indexed.

Every function takes ``db`` (a psycopg ``AsyncConnection`` or ``AsyncConnectionPool``) and the tenant's
``org_id``, and runs in a transaction that first does ``SELECT set_config('app.organization_id', %s, true)``:
when the application connects as ``cpa_app`` the row-level security policies confine it to that organization.
The queries also filter ``organization_id`` explicitly, which gives the planner a constant to estimate with and
keeps them correct when run as the table owner (RLS bypassed).

RLS and index use: under a policy, PostgreSQL may use a user condition as an index condition only if its
functions are LEAKPROOF. ``=``/``<``/``>`` on text, dates and timestamps are, so the tenant, assignee, keyset and
aging queries keep their indexes as ``cpa_app``. ``ILIKE``, ``@@``, ``@>`` and ``->>`` are not: as ``cpa_app``
the file-name, tag, contact and QuickBooks lookups are filtered after the organization's index scan instead of
using their trigram/GIN/expression index (they do use them as the owner). That is bounded by the tenant's size.

Caching seam: functions whose result is worth caching accept ``cache: Cache | None``; the Redis caching service
(``pgwatch_cpa.cpa.cache``) implements :class:`Cache`. Without one, every call reads the database.

Statistics: each transaction (``tenant_cursor``) is a query of an operation, the function's name; when the task
records statistics (:mod:`pgwatch_cpa.cpa.query_stats`) its latency and errors are counted under that name.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol, TypeVar

from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from pgwatch_cpa.cpa.query_stats import OTHER_OPERATION, measure_query

T = TypeVar("T")
Db = AsyncConnection[Any] | AsyncConnectionPool
Row = dict[str, Any]

# Open tasks are ``status NOT IN ('completed', 'cancelled')``, written out in each query below: the literal list
# must match the idx_tasks_* partial-index predicates for the planner to use them.
MAX_OFFSET = 1_000  # offset pagination is for the first pages; deeper, use the keyset functions


class Cache(Protocol):
    """What a query needs from a cache: return the cached value for ``key_parts`` or load, store and return it."""

    async def get_or_load(self, key_parts: Sequence[str], loader: Callable[[], Awaitable[T]]) -> T: ...


class NoCache:
    """The default: always load."""

    async def get_or_load(self, key_parts: Sequence[str], loader: Callable[[], Awaitable[T]]) -> T:
        return await loader()


NO_CACHE = NoCache()


@asynccontextmanager
async def tenant_cursor(db: Db, org_id: str, operation: str = OTHER_OPERATION) -> AsyncIterator[AsyncCursor[DictRow]]:
    """A dict-row cursor inside a transaction scoped to ``org_id`` (SET LOCAL semantics: gone at commit).

    One query of the query layer: recorded under ``operation`` when the task records statistics
    (:func:`pgwatch_cpa.cpa.query_stats.recording`), timed from the moment it holds a connection.
    """
    with measure_query(operation) as measure:
        if isinstance(db, AsyncConnectionPool):
            async with db.connection() as conn:
                measure.start()
                async with _scoped(conn, org_id) as cur:
                    yield cur
        else:
            measure.start()
            async with _scoped(db, org_id) as cur:
                yield cur


@asynccontextmanager
async def _scoped(conn: AsyncConnection[Any], org_id: str) -> AsyncIterator[AsyncCursor[DictRow]]:
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT set_config('app.organization_id', %s, true)", [org_id])
        yield cur


async def _fetchall(db: Db, org_id: str, operation: str, query: str | sql.SQL | sql.Composed,
                    params: Any) -> list[Row]:
    async with tenant_cursor(db, org_id, operation) as cur:
        await cur.execute(query, params)
        return list(await cur.fetchall())


def escape_like(text: str) -> str:
    """Escape LIKE/ILIKE wildcards so user text matches literally (used with ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ---------------------------------------------------------------- client dashboard

CLIENT_DASHBOARD_SQL = """
SELECT c.id, c.business_name, c.status, c.risk_level,
       d.document_count, e.engagement_count, i.open_invoice_count, i.overdue_amount
  FROM clients c
  CROSS JOIN LATERAL (
        SELECT count(*) AS document_count FROM documents
         WHERE client_id = c.id AND deleted_at IS NULL AND is_latest_version = true) d
  CROSS JOIN LATERAL (
        SELECT count(*) AS engagement_count FROM engagements
         WHERE client_id = c.id AND deleted_at IS NULL AND status <> 'completed') e
  CROSS JOIN LATERAL (
        SELECT count(*) AS open_invoice_count,
               coalesce(sum(balance_amount) FILTER (WHERE status = 'overdue'), 0) AS overdue_amount
          FROM invoices
         WHERE client_id = c.id AND deleted_at IS NULL AND status NOT IN ('paid', 'cancelled')) i
 WHERE c.organization_id = %(org)s AND c.deleted_at IS NULL
   AND (%(after_name)s::text IS NULL OR (c.business_name, c.id) > (%(after_name)s::text, %(after_id)s::text))
 ORDER BY c.business_name, c.id
 LIMIT %(limit)s
"""


async def client_dashboard(db: Db, org_id: str, *, limit: int = 100, after: tuple[str, str] | None = None,
                           cache: Cache | None = None) -> list[Row]:
    """Clients by name with document, active-engagement and open-invoice counts and the overdue balance.

    Each child table is aggregated per client in its own LATERAL subquery (index-only scans on
    idx_documents_client_category_year, idx_engagements_client, idx_invoices_client_status_due), then joined:
    no row multiplication, so ``overdue_amount`` is the true sum (errata 1). Pages by ``after`` =
    (business_name, id) of the last row.
    """
    params = {"org": org_id, "limit": limit, "after_name": after[0] if after else None,
              "after_id": after[1] if after else None}

    async def load() -> list[Row]:
        return await _fetchall(db, org_id, "client_dashboard", CLIENT_DASHBOARD_SQL, params)
    key = ("client_dashboard", org_id, str(limit), json.dumps(after))
    return await (cache or NO_CACHE).get_or_load(key, load)


GUIDE_CLIENT_DASHBOARD_SQL = """
SELECT
  c.id, c.business_name, c.status, c.risk_level,
  COUNT(DISTINCT d.id) as document_count,
  COUNT(DISTINCT e.id) as engagement_count,
  COUNT(DISTINCT i.id) as open_invoice_count,
  SUM(CASE WHEN i.status = 'overdue' THEN i.balance_amount ELSE 0 END) as overdue_amount
FROM clients c
LEFT JOIN documents d ON d.client_id = c.id AND d.deleted_at IS NULL AND d.is_latest_version = true
LEFT JOIN engagements e ON e.client_id = c.id AND e.deleted_at IS NULL AND e.status != 'completed'
LEFT JOIN invoices i ON i.client_id = c.id AND i.deleted_at IS NULL AND i.status NOT IN ('paid', 'cancelled')
WHERE c.organization_id = %s AND c.deleted_at IS NULL
GROUP BY c.id, c.business_name, c.status, c.risk_level
ORDER BY c.business_name
"""


async def guide_client_dashboard_naive(db: Db, org_id: str) -> list[Row]:
    """The guide's fan-out query, verbatim: counts are right, ``overdue_amount`` is multiplied by
    documents x engagements per client. Kept only to demonstrate the defect; never use it."""
    return await _fetchall(db, org_id, "guide_client_dashboard_naive", GUIDE_CLIENT_DASHBOARD_SQL, [org_id])


# ---------------------------------------------------------------- clients


async def list_clients(db: Db, org_id: str, *, status: str = "active", page: int = 1, per_page: int = 20,
                       cache: Cache | None = None) -> list[Row]:
    """The guide's ``getClientsOptimized``: one status, by name, offset pages (index-only scan on
    idx_clients_org_status_name, whose INCLUDE columns cover the select list)."""
    offset = (page - 1) * per_page
    _check_offset(offset)

    async def load() -> list[Row]:
        return await _fetchall(db, org_id, "list_clients", """
            SELECT id, business_name, status, risk_level, primary_contact_email
              FROM clients
             WHERE organization_id = %s AND status = %s AND deleted_at IS NULL
             ORDER BY business_name
             LIMIT %s OFFSET %s""", [org_id, status, per_page, offset])
    return await (cache or NO_CACHE).get_or_load(("client_list", org_id, status, str(page), str(per_page)), load)


async def search_clients(db: Db, org_id: str, text: str, *, limit: int = 20) -> list[Row]:
    """Full-text search over business name and contact (the stored, coalesced ``contact_search``; errata 6)."""
    return await _fetchall(db, org_id, "search_clients", """
        SELECT id, business_name, primary_contact_name, primary_contact_email
          FROM clients
         WHERE organization_id = %s AND deleted_at IS NULL
           AND contact_search @@ websearch_to_tsquery('english', %s)
         ORDER BY business_name
         LIMIT %s""", [org_id, text, limit])


async def find_client_by_quickbooks_id(db: Db, org_id: str, quickbooks_id: str) -> Row | None:
    """QuickBooks mapping lookup; ``->>`` matches the btree expression index idx_clients_quickbooks_mapping.

    As the owner (the QuickBooks worker) that index answers directly. As ``cpa_app`` ``->>`` is not LEAKPROOF, so
    the lookup scans the tenant's live clients by idx_clients_org_name and filters (``deleted_at IS NULL`` is what
    lets it pick that index instead of a sequential scan).
    """
    rows = await _fetchall(db, org_id, "find_client_by_quickbooks_id", """
        SELECT id, business_name, financial_data
          FROM clients
         WHERE financial_data IS NOT NULL AND (financial_data ->> 'quickbooks_id') = %s
           AND organization_id = %s AND deleted_at IS NULL""", [quickbooks_id, org_id])
    return rows[0] if rows else None


# ---------------------------------------------------------------- documents


async def search_documents(db: Db, org_id: str, *, category: str | None = None, year: int | None = None,
                           file_name: str | None = None, client_id: str | None = None, tag: str | None = None,
                           limit: int = 20, offset: int = 0) -> list[Row]:
    """The guide's document search, latest versions, newest first, offset pages.

    The WHERE clause is built from the filters actually given (no ``$2 IS NULL OR ...`` that defeats indexes);
    ``file_name`` is a literal substring (``%``/``_`` escaped) served by the trigram index.
    """
    _check_offset(offset)
    where = [sql.SQL("d.organization_id = %(org)s"), sql.SQL("d.deleted_at IS NULL"),
             sql.SQL("d.is_latest_version = true")]
    params: dict[str, Any] = {"org": org_id, "limit": limit, "offset": offset}
    if category is not None:
        where.append(sql.SQL("d.category = %(category)s"))
        params["category"] = category
    if year is not None:
        where.append(sql.SQL("d.year = %(year)s"))
        params["year"] = year
    if client_id is not None:
        where.append(sql.SQL("d.client_id = %(client)s"))
        params["client"] = client_id
    if tag is not None:
        where.append(sql.SQL("d.tags @> ARRAY[%(tag)s]::text[]"))
        params["tag"] = tag
    if file_name:
        where.append(sql.SQL("d.file_name ILIKE %(pattern)s ESCAPE '\\'"))
        params["pattern"] = f"%{escape_like(file_name)}%"
    query = sql.SQL("""
        SELECT d.id, d.client_id, d.file_name, d.category, d.year, d.quarter, d.version, d.ocr_status,
               d.needs_review, d.tags, d.file_size, d.created_at, c.business_name, u.name AS uploader_name
          FROM documents d
          JOIN clients c ON c.id = d.client_id
          JOIN users u ON u.id = d.uploaded_by
         WHERE {where}
         ORDER BY d.created_at DESC, d.id DESC
         LIMIT %(limit)s OFFSET %(offset)s""").format(where=sql.SQL(" AND ").join(where))
    return await _fetchall(db, org_id, "search_documents", query, params)


@dataclass(frozen=True)
class Page:
    items: list[Row]
    next_cursor: str | None  # opaque; None on the last page


def encode_cursor(created_at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at.isoformat(), row_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, row_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), str(row_id)
    except (ValueError, TypeError) as exc:
        raise ValueError("invalid pagination cursor") from exc


async def list_documents_keyset(db: Db, org_id: str, *, cursor: str | None = None, limit: int = 50) -> Page:
    """Latest documents, newest first, by keyset on (created_at, id) (errata 2: sort AND filter on both).

    Cost is independent of the page depth (idx_documents_org_created); rows inserted while a client pages are
    never returned twice and never shift an existing row out of the sequence.
    """
    params: dict[str, Any] = {"org": org_id, "limit": limit + 1}
    keyset = sql.SQL("")
    if cursor:
        params["c_at"], params["c_id"] = decode_cursor(cursor)
        keyset = sql.SQL("AND (created_at, id) < (%(c_at)s, %(c_id)s)")
    query = sql.SQL("""
        SELECT id, client_id, file_name, category, year, ocr_status, created_at
          FROM documents
         WHERE organization_id = %(org)s AND deleted_at IS NULL AND is_latest_version = true {keyset}
         ORDER BY created_at DESC, id DESC
         LIMIT %(limit)s""").format(keyset=keyset)
    rows = await _fetchall(db, org_id, "list_documents_keyset", query, params)
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(rows, encode_cursor(rows[-1]["created_at"], rows[-1]["id"]))
    return Page(rows, None)


async def ocr_queue(db: Db, org_id: str, *, limit: int = 100) -> list[Row]:
    """Documents waiting for OCR, oldest first (idx_documents_ocr_processing)."""
    return await _fetchall(db, org_id, "ocr_queue", """
        SELECT id, client_id, file_name, ocr_status, created_at
          FROM documents
         WHERE organization_id = %s AND ocr_status IN ('pending', 'processing')
         ORDER BY created_at
         LIMIT %s""", [org_id, limit])


# ---------------------------------------------------------------- tasks


async def tasks_for_assignee(db: Db, org_id: str, assignee_id: str, *, limit: int = 50) -> list[Row]:
    """The guide's task-assignment query ordered by the stored ``priority_rank`` (errata 4): an index scan of
    idx_tasks_assignee_priority_rank that stops after ``limit`` rows, no sort."""
    return await _fetchall(db, org_id, "tasks_for_assignee", """
        SELECT t.id, t.title, t.status, t.priority, t.priority_rank, t.due_date, t.created_at, t.checklist,
               t.engagement_id, e.name AS engagement_name, c.id AS client_id, c.business_name
          FROM tasks t
          LEFT JOIN engagements e ON e.id = t.engagement_id
          LEFT JOIN clients c ON c.id = e.client_id
         WHERE t.assigned_to_id = %s AND t.organization_id = %s
           AND t.deleted_at IS NULL AND t.status NOT IN ('completed', 'cancelled')
         ORDER BY t.priority_rank, t.due_date ASC NULLS LAST, t.created_at ASC
         LIMIT %s""", [assignee_id, org_id, limit])


async def overdue_tasks(db: Db, org_id: str, *, limit: int = 100) -> list[Row]:
    """Open tasks past due, most overdue first; the date test is here, not in idx_tasks_overdue's predicate."""
    return await _fetchall(db, org_id, "overdue_tasks", """
        SELECT id, title, status, priority, assigned_to_id, due_date
          FROM tasks
         WHERE organization_id = %s AND deleted_at IS NULL AND status NOT IN ('completed', 'cancelled')
           AND due_date < CURRENT_DATE
         ORDER BY due_date
         LIMIT %s""", [org_id, limit])


# ---------------------------------------------------------------- invoices / accounts receivable

AGING_SQL = """
SELECT bucket, count(*) AS invoice_count, coalesce(sum(balance_amount), 0) AS balance
  FROM (SELECT balance_amount,
               CASE WHEN due_date >= CURRENT_DATE THEN 'current'
                    WHEN due_date >= CURRENT_DATE - 30 THEN '1-30'
                    WHEN due_date >= CURRENT_DATE - 60 THEN '31-60'
                    WHEN due_date >= CURRENT_DATE - 90 THEN '61-90'
                    ELSE '90+' END AS bucket
          FROM invoices
         WHERE organization_id = %s AND deleted_at IS NULL AND status NOT IN ('paid', 'cancelled')) open
 GROUP BY bucket
"""
AGING_BUCKETS = ("current", "1-30", "31-60", "61-90", "90+")


async def receivables_aging(db: Db, org_id: str, *, cache: Cache | None = None) -> list[Row]:
    """Open balance by days past due, every bucket present (index-only scan of idx_invoices_open_ar)."""
    async def load() -> list[Row]:
        found = {r["bucket"]: r for r in await _fetchall(db, org_id, "receivables_aging", AGING_SQL, [org_id])}
        return [found.get(b, {"bucket": b, "invoice_count": 0, "balance": 0}) for b in AGING_BUCKETS]
    return await (cache or NO_CACHE).get_or_load(("ar_aging", org_id), load)


async def receivables_by_client(db: Db, org_id: str, *, limit: int = 50) -> list[Row]:
    """Clients with the largest open balance, with their overdue part."""
    return await _fetchall(db, org_id, "receivables_by_client", """
        SELECT i.client_id, c.business_name, i.open_invoices, i.open_balance, i.overdue_balance, i.oldest_due
          FROM (SELECT client_id, count(*) AS open_invoices, sum(balance_amount) AS open_balance,
                       coalesce(sum(balance_amount) FILTER (WHERE due_date < CURRENT_DATE), 0) AS overdue_balance,
                       min(due_date) AS oldest_due
                  FROM invoices
                 WHERE organization_id = %s AND deleted_at IS NULL AND status NOT IN ('paid', 'cancelled')
                 GROUP BY client_id) i
          JOIN clients c ON c.id = i.client_id
         ORDER BY i.open_balance DESC, i.client_id
         LIMIT %s""", [org_id, limit])


async def revenue_by_month(db: Db, org_id: str, since: date) -> list[Row]:
    """Invoiced and collected amounts per month of paid/partial invoices (idx_invoices_revenue_reporting:
    the expression ``date_trunc('month', invoice_date::timestamp)`` is the index's, errata)."""
    return await _fetchall(db, org_id, "revenue_by_month", """
        SELECT date_trunc('month', invoice_date::timestamp)::date AS month,
               sum(total_amount) AS invoiced, sum(paid_amount) AS collected, count(*) AS invoices
          FROM invoices
         WHERE organization_id = %s AND deleted_at IS NULL AND status IN ('paid', 'partial')
           AND date_trunc('month', invoice_date::timestamp) >= date_trunc('month', %s::timestamp)
         GROUP BY 1
         ORDER BY 1""", [org_id, since])


# ---------------------------------------------------------------- dashboard metrics

DASHBOARD_METRICS_SQL = """
SELECT
  (SELECT count(*) FROM clients
    WHERE organization_id = %(org)s AND status = 'active' AND deleted_at IS NULL) AS active_clients,
  (SELECT count(*) FROM documents
    WHERE organization_id = %(org)s AND ocr_status IN ('pending', 'processing')) AS documents_pending_ocr,
  (SELECT count(*) FROM documents
    WHERE organization_id = %(org)s AND needs_review = true AND deleted_at IS NULL) AS documents_to_review,
  (SELECT count(*) FROM tasks
    WHERE organization_id = %(org)s AND deleted_at IS NULL AND status NOT IN ('completed', 'cancelled'))
    AS open_tasks,
  (SELECT count(*) FROM tasks
    WHERE organization_id = %(org)s AND deleted_at IS NULL AND status NOT IN ('completed', 'cancelled')
      AND due_date < CURRENT_DATE) AS overdue_tasks,
  ar.open_invoices, ar.outstanding_balance, ar.overdue_balance,
  (SELECT coalesce(sum(paid_amount), 0) FROM invoices
    WHERE organization_id = %(org)s AND deleted_at IS NULL AND status IN ('paid', 'partial')
      AND date_trunc('month', invoice_date::timestamp) = date_trunc('month', CURRENT_DATE::timestamp))
    AS collected_this_month
FROM (SELECT count(*) AS open_invoices, coalesce(sum(balance_amount), 0) AS outstanding_balance,
             coalesce(sum(balance_amount) FILTER (WHERE due_date < CURRENT_DATE), 0) AS overdue_balance
        FROM invoices
       WHERE organization_id = %(org)s AND deleted_at IS NULL AND status NOT IN ('paid', 'cancelled')) ar
"""


async def dashboard_metrics(db: Db, org_id: str, *, cache: Cache | None = None) -> Row:
    """The organization's headline numbers in one round trip; every part reads a partial index of its own."""
    async def load() -> Row:
        rows = await _fetchall(db, org_id, "dashboard_metrics", DASHBOARD_METRICS_SQL, {"org": org_id})
        return rows[0]
    return await (cache or NO_CACHE).get_or_load(("dashboard", org_id, "metrics"), load)


def _check_offset(offset: int) -> None:
    if offset < 0 or offset > MAX_OFFSET:
        raise ValueError(f"offset must be within 0..{MAX_OFFSET}; use keyset pagination for deeper pages")
