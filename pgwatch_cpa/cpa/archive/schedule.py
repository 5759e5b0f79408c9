"""The archiver's own schedule: cron syntax (the guide's "0 2 * * *"), run until stopped (SIGTERM).

A run that fails is logged and the schedule goes on; the next fire time is computed from the end of a run, so a
run longer than the period is followed by the next one, never by a burst of missed ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from croniter import croniter

log = logging.getLogger("pgwatch_cpa.cpa.archive")
DAILY_SECONDS = 86_400.0  # the period assumed for a run started by an outside scheduler (cron, a systemd timer)


def schedule_period(expression: str) -> float:
    """Seconds between two fire times of ``expression``; a ValueError names a malformed expression."""
    if not croniter.is_valid(expression):
        raise ValueError(f"--schedule {expression!r} is not a cron expression (e.g. '0 2 * * *')")
    it = croniter(expression, datetime.now(UTC))
    first = it.get_next(float)
    return float(it.get_next(float) - first)


async def run_on_schedule(expression: str, job: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
    """Run ``job`` at every fire time of ``expression`` (UTC) until ``stop`` is set."""
    schedule_period(expression)
    while not stop.is_set():
        next_at = croniter(expression, datetime.now(UTC)).get_next(datetime)
        delay = (next_at - datetime.now(UTC)).total_seconds()
        log.info("archive: next run at %s", next_at.isoformat(timespec="seconds"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(delay, 0.0))
        if stop.is_set():
            return
        try:
            await job()
        except Exception as exc:  # the schedule outlives a failed run; the run's failure is in its statistics
            log.error("archive: the scheduled run failed: %s: %s", type(exc).__name__, exc)
