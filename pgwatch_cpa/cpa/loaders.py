"""Request-scoped DataLoaders (guide "DataLoader Pattern"): N loads in one event-loop tick -> one query.

    loaders = CpaLoaders(pool, org_id)                       # one per request: its cache lives with the request
    clients = await loaders.clients.load_many(client_ids)   # one SELECT ... WHERE id = ANY(%s)
    docs = await loaders.documents_by_client.load_many(client_ids)

Each batch runs one statement with ``= ANY(%s)`` inside the tenant-scoped transaction of
:func:`pgwatch_cpa.cpa.queries.tenant_cursor` (query-layer operation ``load_<loader>``), so row-level security
applies; a key of another organization (or a soft-deleted row) loads as ``None`` / ``[]``, never as someone
else's row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from aiodataloader import DataLoader

from pgwatch_cpa.cpa.queries import Db, Row, tenant_cursor

MAX_BATCH = 500


class CpaLoaders:
    """The loaders of one request for one organization. ``batches`` counts queries issued per loader."""

    def __init__(self, db: Db, org_id: str, *, max_batch_size: int = MAX_BATCH) -> None:
        self.db = db
        self.org_id = org_id
        self.batches: dict[str, int] = defaultdict(int)
        self.clients: DataLoader[str, Row | None] = DataLoader(self._load_clients, max_batch_size=max_batch_size)
        self.documents_by_client: DataLoader[str, list[Row]] = DataLoader(
            self._load_documents_by_client, max_batch_size=max_batch_size)
        self.engagements_by_client: DataLoader[str, list[Row]] = DataLoader(
            self._load_engagements_by_client, max_batch_size=max_batch_size)

    async def _query(self, name: str, query: str, keys: Sequence[str]) -> list[Row]:
        self.batches[name] += 1
        async with tenant_cursor(self.db, self.org_id, "load_" + name) as cur:
            await cur.execute(query, [self.org_id, list(keys)])
            return list(await cur.fetchall())

    async def _load_clients(self, ids: list[str]) -> list[Row | None]:
        rows = await self._query("clients", """
            SELECT id, business_name, business_type, industry, status, risk_level, primary_contact_name,
                   primary_contact_email, created_at
              FROM clients
             WHERE organization_id = %s AND id = ANY(%s) AND deleted_at IS NULL""", ids)
        by_id = {r["id"]: r for r in rows}
        return [by_id.get(i) for i in ids]

    async def _load_documents_by_client(self, client_ids: list[str]) -> list[list[Row]]:
        rows = await self._query("documents_by_client", """
            SELECT id, client_id, file_name, category, year, version, ocr_status, created_at
              FROM documents
             WHERE organization_id = %s AND client_id = ANY(%s)
               AND deleted_at IS NULL AND is_latest_version = true
             ORDER BY client_id, created_at DESC, id DESC""", client_ids)
        return _group(rows, client_ids)

    async def _load_engagements_by_client(self, client_ids: list[str]) -> list[list[Row]]:
        rows = await self._query("engagements_by_client", """
            SELECT id, client_id, name, type, status, year, quarter, due_date, fee
              FROM engagements
             WHERE organization_id = %s AND client_id = ANY(%s) AND deleted_at IS NULL
             ORDER BY client_id, year DESC, id""", client_ids)
        return _group(rows, client_ids)


def _group(rows: list[Row], keys: list[str]) -> list[list[Row]]:
    grouped: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[row["client_id"]].append(row)
    return [grouped.get(k, []) for k in keys]

