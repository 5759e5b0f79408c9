"""``pgwatch-cpa archive``: one run (archive, then purge exports past retention), on a schedule, or a restore.

Prints the per-policy table on stdout; exit status 1 when an organization failed in any policy (its rows stay
due, the failure is in ``archive_failures`` and in the published statistics).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pgwatch_cpa.cpa.archive.archiver import DEFAULT_BATCH_SIZE, Progress, archive
from pgwatch_cpa.cpa.archive.publish import RedisProgress
from pgwatch_cpa.cpa.archive.restore import restore
from pgwatch_cpa.cpa.archive.retention import purge_expired
from pgwatch_cpa.cpa.archive.schedule import DAILY_SECONDS, run_on_schedule, schedule_period


@dataclass(frozen=True)
class ArchiveOptions:
    dsn: str
    to: str | None = None
    policies: tuple[str, ...] = ()
    org: str | None = None
    dry_run: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    redis: str | None = None
    schedule: str | None = None
    restore: str | None = None


def run_command(opts: ArchiveOptions) -> int:
    if opts.restore:
        rows = asyncio.run(restore(opts.dsn, opts.restore))
        print(f"restored {rows} row(s) from {opts.restore}")
        return 0
    if not opts.to:
        raise ValueError("archive: --to URL is required (or --restore MANIFEST_URL)")
    if opts.schedule:
        if opts.dry_run:
            raise ValueError("archive: --dry-run runs once; it cannot be combined with --schedule")
        period = schedule_period(opts.schedule)
        asyncio.run(_scheduled(opts, opts.schedule, opts.to, period))
        return 0
    return asyncio.run(run_once(opts, opts.to, DAILY_SECONDS))


async def run_once(opts: ArchiveOptions, to: str, period: float) -> int:
    """One run: archive to ``to``, then purge (or list, dry run) the exports past retention; print both."""
    policies = list(opts.policies) or None
    async with _progress(opts, period) as progress:
        report = await archive(opts.dsn, to, policies=policies, org=opts.org, dry_run=opts.dry_run,
                               batch_size=opts.batch_size, progress=progress)
    print(report.table(), flush=True)
    expired = await purge_expired(opts.dsn, dry_run=opts.dry_run, policies=policies)
    if expired:
        print(("would purge" if opts.dry_run else "purged") + f" {len(expired)} export(s) past retention:")
        for batch in expired:
            print("  " + batch.line())
    return 1 if report.failed else 0


@contextlib.asynccontextmanager
async def _progress(opts: ArchiveOptions, period: float) -> AsyncIterator[Progress | None]:
    if not opts.redis or opts.dry_run:
        yield None
        return
    async with RedisProgress(opts.redis, schedule_period_seconds=period) as progress:
        yield progress


async def _scheduled(opts: ArchiveOptions, schedule: str, to: str, period: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_on_schedule(schedule, lambda: run_once(opts, to, period), stop)
