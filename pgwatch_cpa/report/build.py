"""Assemble a report: every PostgreSQL and Redis target of the settings (or one), read concurrently with a bound;
a target that cannot be read becomes a TargetReport saying why; the diff against the previous report if given."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from pgwatch_cpa.config import PostgresTarget, RedisTarget, Settings
from pgwatch_cpa.errors import PgwatchError
from pgwatch_cpa.report.diff import with_diff
from pgwatch_cpa.report.model import Report, TargetReport
from pgwatch_cpa.report.postgres import postgres_target_report
from pgwatch_cpa.report.redis import redis_target_report
from pgwatch_cpa.secrets import describe

log = logging.getLogger(__name__)

MAX_CONCURRENT_TARGETS = 4
# A backstop only: every query of a target report runs under its target's own timeouts (connect, statement,
# socket). A client library that ignores them cannot hold the report longer than this.
TARGET_BACKSTOP = 300.0


class UnknownTargetError(PgwatchError):
    """``--target`` names no target of the config."""


def target_names(settings: Settings) -> list[str]:
    return [t.name for t in settings.postgres] + [t.name for t in settings.redis]


Job = tuple[str, Literal["postgres", "redis"], Callable[[], Awaitable[TargetReport]]]


def _jobs(settings: Settings, target: str | None, host_memory: int | None) -> list[Job]:
    def pg_job(t: PostgresTarget) -> Callable[[], Awaitable[TargetReport]]:
        return lambda: postgres_target_report(t, host_memory_bytes=host_memory)

    def redis_job(t: RedisTarget) -> Callable[[], Awaitable[TargetReport]]:
        return lambda: redis_target_report(t)

    jobs: list[Job] = [
        *((t.name, "postgres", pg_job(t)) for t in settings.postgres),
        *((t.name, "redis", redis_job(t)) for t in settings.redis),
    ]
    if target is None:
        return jobs
    chosen = [job for job in jobs if job[0] == target]
    if not chosen:
        names = ", ".join(target_names(settings)) or "none"
        raise UnknownTargetError(f"no target named {target!r} (targets: {names})")
    return chosen


async def build_report(settings: Settings, *, target: str | None = None, previous: Report | None = None,
                       host_memory_bytes: int | None = None, now: float | None = None) -> Report:
    """The report of every target (or only ``target``; UnknownTargetError lists the names otherwise).

    Never raises for a target that cannot be read: its TargetReport carries ``error``, a one-line, secret-free
    description. ``host_memory_bytes`` defaults to the config's ``report.host_memory``.
    """
    host_memory = host_memory_bytes if host_memory_bytes is not None else settings.report.host_memory
    jobs = _jobs(settings, target, host_memory)
    generated_at = time.time() if now is None else now
    bound = asyncio.Semaphore(MAX_CONCURRENT_TARGETS)

    async def one(name: str, kind: Literal["postgres", "redis"], job: Callable[[], Awaitable[TargetReport]]
                  ) -> TargetReport:
        async with bound:
            started = time.monotonic()
            try:
                async with asyncio.timeout(TARGET_BACKSTOP):
                    result = await job()
            except Exception as exc:  # task boundary: one target's failure is that target's report, not the run's
                why = describe(exc)
                log.warning("report: target %s (%s) could not be read: %s", name, kind, why)
                return TargetReport(name, kind, error=why)
            log.debug("report: target %s read in %.2fs", name, time.monotonic() - started)
            return result

    targets = await asyncio.gather(*(one(*job) for job in jobs))
    report = Report(generated_at, list(targets))
    return with_diff(report, previous) if previous is not None else report
