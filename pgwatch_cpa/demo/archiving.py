"""The demo's archiver: the CPA archiver on its own schedule (every 15 s), publishing its progress to the demo's
Redis, where the daemon's cpa_archive_stats collector reads it. Stopping it is the archive-stalled scenario.

The period is the schedule's: CpaArchivalStale fires after 1.5 periods without a success (22.5 s here, a day and
a half for the daily production run) plus the rule's `for`, which the demo shortens like every other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from pgwatch_cpa.cpa.archive.archiver import archive
from pgwatch_cpa.cpa.archive.publish import RedisProgress
from pgwatch_cpa.cpa.archive.schedule import run_on_schedule, schedule_period

log = logging.getLogger(__name__)

SCHEDULE = "* * * * * */15"  # croniter's optional sixth field is seconds: every 15 s


class DemoArchiver:
    def __init__(self, owner_dsn: str, redis_url: str, directory: Path, say: Callable[[str], None]) -> None:
        self.owner_dsn, self.redis_url, self.url, self.say = owner_dsn, redis_url, directory.as_uri(), say
        self.period = schedule_period(SCHEDULE)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Run once now, then on the schedule, until stop()."""
        if self.running:
            return
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="demo:archiver")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 60)
            self._task = None

    async def _run(self) -> None:
        async with RedisProgress(self.redis_url, schedule_period_seconds=self.period) as progress:

            async def run_once() -> None:
                report = await archive(self.owner_dsn, self.url, progress=progress)
                rows = sum(r.rows for r in report.results)
                if rows:
                    self.say("  archiver: " + ", ".join(f"{r.policy} {r.rows:,}" for r in report.results if r.rows)
                             + f" rows archived to {self.url}")

            try:
                await run_once()
            except Exception as exc:  # the schedule goes on; CpaArchivalStale says it if it keeps failing
                log.error("demo archiver: first run failed: %s: %s", type(exc).__name__, exc)
            await run_on_schedule(SCHEDULE, run_once, self._stop)
