"""Progress publishing: the archiver's counters and last success per policy, to Redis (format: stats.py).

    async with RedisProgress("redis://cache:6379/0", schedule_period_seconds=86400.0) as progress:
        await archive(dsn, url, progress=progress)

The snapshot already in Redis is read first and added to (a cron-run archiver is a new process each day); an
invalid one is replaced, with one WARNING. Redis calls have a 5 s deadline.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis

from pgwatch_cpa.cpa.archive import stats
from pgwatch_cpa.cpa.archive.archiver import PolicyResult

log = logging.getLogger("pgwatch_cpa.cpa.archive")
TIMEOUT_S = 5.0


class RedisProgress:
    def __init__(self, url: str, *, schedule_period_seconds: float) -> None:
        self._client = aioredis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
        self._period = schedule_period_seconds
        self._policies: dict[str, dict[str, Any]] | None = None

    async def __aenter__(self) -> RedisProgress:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._client.aclose()

    async def _load(self) -> dict[str, dict[str, Any]]:
        data = await self._client.get(stats.KEY)
        if data is None:
            return {}
        try:
            return dict(stats.parse_snapshot(data)["policies"])
        except stats.SnapshotError as exc:
            log.warning("replacing the invalid archive statistics in Redis: %s", exc)
            return {}

    async def policy_done(self, result: PolicyResult, succeeded_at: float | None) -> None:
        if self._policies is None:
            self._policies = await self._load()
        entry = self._policies.setdefault(result.policy, stats.empty_policy())
        now = time.time()
        entry["last_run_at"] = now
        if succeeded_at is not None:
            entry["last_success_at"] = succeeded_at
        entry["rows_archived"] += result.rows
        entry["bytes_archived"] += result.bytes
        entry["batches"] += result.batches
        entry["failures"] += result.failed_orgs
        snapshot = stats.build_snapshot(published_at=now, schedule_period_seconds=self._period,
                                        policies=self._policies)
        await self._client.set(stats.KEY, stats.dump_snapshot(snapshot))
