"""The Redis poller: PING as the probe, one small blocking pool without client-side retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pgwatch_cpa.collectors.base import Collector
from pgwatch_cpa.daemon.poller import TargetPoller


class RedisPoller(TargetPoller):
    kind = "redis"
    up_metric = "redis_up"
    up_help = "1 if the Redis target answered the last PING, 0 otherwise."

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client: Any = None

    async def open(self) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        s = self.settings
        pool = BlockingConnectionPool.from_url(
            s.resolved_url, max_connections=s.max_connections, timeout=s.timeout,
            socket_timeout=s.timeout, socket_connect_timeout=s.timeout, client_name="pgwatch-cpa",
        )
        # No client-side retries: a failed probe must say "down" now, not after a retry storm.
        self.client = Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            await self.client.connection_pool.disconnect()

    async def probe(self) -> None:
        await self.client.ping()

    @asynccontextmanager
    async def context(self, collector: Collector) -> AsyncIterator[Any]:
        from pgwatch_cpa.collectors.base import RedisContext

        yield RedisContext(self.name, self.client, self.settings, self._state[collector.name])
