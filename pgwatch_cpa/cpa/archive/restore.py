"""Bring an export back: the rows of a batch, exactly as they were when archived.

    rows = await restore(dsn, "file:///srv/cpa-archive/audit_logs/2026/11/29/<batch>.manifest.json")

The manifest and its export are verified (row count, sha256) before anything is written. In one transaction every
row is upserted by id (deleted audit logs are inserted again, soft-deleted tasks and archived documents get their
pre-archive values back; generated columns are recomputed) and the batch's journal row gets ``restored_at``.
Restored rows are current again, so they are due again: the next archive run archives them into a new batch.
"""

from __future__ import annotations

import asyncio
import posixpath
from typing import Any

from psycopg import sql

from pgwatch_cpa.cpa.archive import export as ex
from pgwatch_cpa.cpa.archive.archiver import connect
from pgwatch_cpa.cpa.archive.destination import open_url
from pgwatch_cpa.cpa.archive.policies import POLICIES


async def restore(dsn: str, manifest_url: str, *, storage_options: dict[str, Any] | None = None) -> int:
    """Restore the batch of ``manifest_url``; return the number of rows written back."""
    dest, manifest_path = open_url(manifest_url, storage_options)
    manifest = ex.parse_manifest(await asyncio.to_thread(dest.read, manifest_path))
    policy = POLICIES.get(manifest["policy"])
    if policy is None or not policy.exported or policy.table != manifest["table"]:
        raise ex.ExportError(f"manifest: policy {manifest['policy']!r} / table {manifest['table']!r} is not an "
                             "exported policy")
    export_path = posixpath.join(posixpath.dirname(manifest_path), manifest["export"])
    export = ex.decode(await asyncio.to_thread(dest.read, export_path), manifest)
    async with await connect(dsn) as conn, conn.transaction():
        cur = await conn.execute(
            """SELECT attname FROM pg_catalog.pg_attribute
                WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
                ORDER BY attnum""", [policy.table])
        columns = [sql.Identifier(r[0]) for r in await cur.fetchall()]
        await conn.execute(sql.SQL("""
            INSERT INTO {table} ({cols})
            SELECT {cols} FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb)
            ON CONFLICT (id) DO UPDATE SET {updates}""").format(
            table=sql.Identifier(policy.table), cols=sql.SQL(", ").join(columns),
            updates=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=c) for c in columns)),
            ["[" + ",".join(export.lines) + "]"])
        await conn.execute("UPDATE archive_batches SET restored_at = now() WHERE batch_id = %s",
                           [manifest["batch_id"]])
    return export.row_count
