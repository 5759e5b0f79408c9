"""The platform's background jobs, played by the workload: OCR, report generation and QuickBooks sync.

The guide's business targets are about them (OCR < 30 s, report generation < 60 s, QuickBooks sync < 5 minutes);
pgwatch-cpa's shipped ``cpa_business.yaml`` reads their backlog through the monitoring views of migration 0006.
Every ``tick`` the jobs, at most ``batch`` rows of each kind:

- OCR: finish the documents that were processing, then start the oldest pending ones (uploads make new ones);
- reports: finish the running jobs, start the oldest queued ones, and request one for a random organization;
- QuickBooks: finish the running syncs, start the pending ones, and start one for a random organization.

So a job takes one or two ticks. The first two ticks take every row they find (``LIMIT NULL``): the workers catch
up on the seeded backlog (days-old pending documents and running syncs) at once instead of reporting it for
minutes. They run as the schema owner, like the platform's workers (row-level security does not apply to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

REPORT_TYPES = ("profit_and_loss", "balance_sheet", "trial_balance", "tax_summary", "aging")
QUICKBOOKS_ENTITIES = ("customer", "invoice", "payment", "account", "vendor")  # the seed's entity types

_OCR = (
    """UPDATE documents SET ocr_status = 'completed', updated_at = now() WHERE id IN (
         SELECT id FROM documents WHERE ocr_status = 'processing' ORDER BY created_at LIMIT %(batch)s
         FOR UPDATE SKIP LOCKED)""",
    """UPDATE documents SET ocr_status = 'processing', updated_at = now() WHERE id IN (
         SELECT id FROM documents WHERE ocr_status = 'pending' ORDER BY created_at LIMIT %(batch)s
         FOR UPDATE SKIP LOCKED)""",
)
_REPORTS = (
    """UPDATE report_jobs SET status = 'completed', completed_at = now() WHERE id IN (
         SELECT id FROM report_jobs WHERE status = 'running' ORDER BY requested_at LIMIT %(batch)s
         FOR UPDATE SKIP LOCKED)""",
    """UPDATE report_jobs SET status = 'running', started_at = now() WHERE id IN (
         SELECT id FROM report_jobs WHERE status = 'queued' ORDER BY requested_at LIMIT %(batch)s
         FOR UPDATE SKIP LOCKED)""",
    "INSERT INTO report_jobs (organization_id, report_type) VALUES (%(org)s, %(report_type)s)",
)
_QUICKBOOKS = (
    """UPDATE quickbooks_syncs SET status = 'completed', completed_at = now()
       WHERE id IN (SELECT id FROM quickbooks_syncs WHERE status = 'running' ORDER BY started_at
                    LIMIT %(batch)s FOR UPDATE SKIP LOCKED)""",
    """UPDATE quickbooks_syncs SET status = 'running', started_at = now() WHERE id IN (
         SELECT id FROM quickbooks_syncs WHERE status = 'pending' ORDER BY started_at LIMIT %(batch)s
         FOR UPDATE SKIP LOCKED)""",
    """INSERT INTO quickbooks_syncs (organization_id, entity_type, status)
       VALUES (%(org)s, %(entity)s, 'running')""",
)


async def run_background_jobs(pool: Any, org_ids: Sequence[str], stop: asyncio.Event, *, seed: int = 1,
                              tick: float = 1.0, batch: int = 50) -> int:
    """Play the jobs on ``pool`` (the schema owner's) every ``tick`` seconds until ``stop``; returns the ticks run.

    A tick that fails (a lock timeout, the pool exhausted by a demo scenario) is logged at DEBUG and skipped.
    """
    rng = random.Random(seed)
    ticks = 0
    while not stop.is_set():
        params = {"batch": batch if ticks >= 2 else None, "org": rng.choice(org_ids),
                  "report_type": rng.choice(REPORT_TYPES), "entity": rng.choice(QUICKBOOKS_ENTITIES)}
        try:
            async with pool.connection() as conn, conn.transaction():
                for statement in (*_OCR, *_REPORTS, *_QUICKBOOKS):
                    await conn.execute(statement, params)
            ticks += 1
        except Exception as exc:  # task boundary: the jobs pause, the workload goes on
            log.debug("background jobs: tick skipped: %s", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=tick)
    return ticks
