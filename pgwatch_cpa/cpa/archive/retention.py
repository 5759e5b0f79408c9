"""Retention: exports past their ``retain_until`` (archived_at + the policy's retention) are deleted.

The journal row of a purged batch stays, with ``purged_at`` set: what was archived, when, and when it went.
Files first, then the journal: a crash in between leaves a batch that the next purge removes again (a missing
file is fine). A dry run lists what would go and deletes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgwatch_cpa.cpa.archive.archiver import connect
from pgwatch_cpa.cpa.archive.destination import open_url

log = logging.getLogger("pgwatch_cpa.cpa.archive")


@dataclass(frozen=True)
class Expired:
    batch_id: str
    policy: str
    retain_until: datetime
    export_url: str
    manifest_url: str

    def line(self) -> str:
        return f"{self.policy:<11} {self.batch_id}  retained until {self.retain_until:%Y-%m-%d}  {self.manifest_url}"


async def purge_expired(dsn: str, *, dry_run: bool = False, policies: list[str] | None = None,
                        storage_options: dict[str, Any] | None = None) -> list[Expired]:
    """Delete (or, dry run, only list) the exports past retention of ``policies`` (all when None)."""
    async with await connect(dsn) as conn:
        cur = await conn.execute(
            """SELECT batch_id, policy, retain_until, export_url, manifest_url FROM archive_batches
                WHERE state = 'applied' AND purged_at IS NULL AND export_url IS NOT NULL
                  AND retain_until < now() AND (%s::text[] IS NULL OR policy = ANY(%s::text[]))
                ORDER BY retain_until, batch_id""", [policies, policies])
        expired = [Expired(*row) for row in await cur.fetchall()]
        if dry_run:
            return expired
        for batch in expired:
            dest, export_path = open_url(batch.export_url, storage_options)
            await asyncio.to_thread(dest.remove, export_path, open_url(batch.manifest_url, storage_options)[1])
            await conn.execute("UPDATE archive_batches SET purged_at = now() WHERE batch_id = %s", [batch.batch_id])
    if expired:
        log.info("retention: purged %d export(s) past retention", len(expired))
    return expired
