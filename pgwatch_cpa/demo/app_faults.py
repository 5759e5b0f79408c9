"""The demo's application faults: an application instance of its own, publishing its pool and query-layer
statistics with its cache statistics as the CPA application does, whose pool or API goes bad.

pool-exhaustion  instance ``demo-batch`` (a pool of POOL_SIZE): sessions check out every connection and keep them;
                 its requests wait POOL_TIMEOUT seconds for one and fail with PoolTimeout. The server is far
                 from max_connections: PostgresConnectionsHigh stays quiet, CpaPgPoolSaturated fires.
slow-api         instance ``demo-api``: 90% of its requests list clients (fast), 10% load the engagements of a
                 client page (CpaLoaders). A migration-like session takes an ACCESS EXCLUSIVE lock on
                 engagements again and again, so those requests wait behind it: the API p95 crosses 200 ms.
                 The fix (``slow_api_fixed``): the lock is gone and the same instance serves the same traffic
                 until the slow requests are under 5% of the 5-minute window, which is when the alert resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import psycopg
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from pgwatch_cpa.cpa import queries as q
from pgwatch_cpa.cpa.cache import CacheService
from pgwatch_cpa.cpa.db import ACQUIRE_TIMEOUT_S, create_pool
from pgwatch_cpa.cpa.loaders import CpaLoaders
from pgwatch_cpa.cpa.query_stats import QueryLayerStats, app_sections, recording
from pgwatch_cpa.demo.faults import APP_PREFIX

POOL_SIZE = 4
POOL_TIMEOUT = 1.0
STATS_INTERVAL = 2.0  # a closed instance's last snapshot stays 3 x this: the daemon (3 s) reads it at least once
API_INSTANCE = "demo-api"
API_LOOPS = 2
API_PAUSE = 0.02  # between the requests of one loop
SLOW_SHARE = 10  # one request in SLOW_SHARE reads engagements
LOCK_HOLD, LOCK_GAP = 0.9, 0.05  # seconds the engagements lock is held, and released, in turn

Instance = tuple[AsyncConnectionPool, QueryLayerStats, CacheService]

_LARGEST_ORG_SQL = """
SELECT organization_id FROM clients WHERE deleted_at IS NULL AND status = 'active'
 GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"""


@asynccontextmanager
async def app_instance(owner_dsn: str, redis_url: str, name: str, *, min_size: int, max_size: int,
                       timeout: float = ACQUIRE_TIMEOUT_S) -> AsyncIterator[Instance]:
    """A pool, its query-layer statistics (recorded by this task) and a cache service publishing both as ``name``.

    On exit the instance publishes once more and stops, leaving its last snapshot to expire (3 x STATS_INTERVAL):
    the daemon reads the final state (an idle pool) before the instance disappears."""
    stats = QueryLayerStats()
    async with create_pool(owner_dsn, name=name, min_size=min_size, max_size=max_size, timeout=timeout) as pool:
        service = await CacheService.create(redis_url, app_instance=name, registry=CollectorRegistry(),
                                            stats_interval=STATS_INTERVAL,
                                            app_stats=lambda: app_sections(pool, stats))
        try:
            with recording(stats):
                yield pool, stats, service
        finally:
            await service.publish_stats()
            await service.close(unpublish=False)


async def largest_org(owner_dsn: str) -> str:
    async with await psycopg.AsyncConnection.connect(owner_dsn, autocommit=True) as conn:
        row = await (await conn.execute(_LARGEST_ORG_SQL)).fetchone()
    if row is None:
        raise RuntimeError("the demo database has no active clients")
    return str(row[0])


async def pool_exhaustion(owner_dsn: str, redis_url: str, *, stop: asyncio.Event, ready: asyncio.Event) -> None:
    org = await largest_org(owner_dsn)
    async with app_instance(owner_dsn, redis_url, "demo-batch", min_size=1, max_size=POOL_SIZE,
                            timeout=POOL_TIMEOUT) as (pool, stats, _):
        held = [await pool.getconn() for _ in range(POOL_SIZE)]
        ready.set()
        try:
            while not stop.is_set():
                with contextlib.suppress(PoolTimeout):
                    async with stats.measure_request("dashboard"):
                        await q.dashboard_metrics(pool, org)
                await _pause(stop, 0.5)
        finally:
            for conn in held:
                await pool.putconn(conn)


async def slow_api(owner_dsn: str, redis_url: str, *, stop: asyncio.Event, ready: asyncio.Event) -> None:
    org = await largest_org(owner_dsn)
    locker = await psycopg.AsyncConnection.connect(owner_dsn, autocommit=True,
                                                   application_name=APP_PREFIX + "slow_api")
    try:
        async with app_instance(owner_dsn, redis_url, API_INSTANCE, min_size=API_LOOPS, max_size=API_LOOPS + 2) \
                as (pool, stats, _):
            locking = asyncio.ensure_future(_lock_again_and_again(locker, stop))
            ready.set()
            try:
                await _api_traffic(pool, stats, org, stop.is_set)
            finally:
                if not stop.is_set():  # the traffic failed: end the locking too (its connection closes below)
                    locking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await locking
    finally:
        await locker.close()


async def slow_api_fixed(owner_dsn: str, redis_url: str, *, resolved: Callable[[], bool],
                         max_seconds: float) -> None:
    """The same traffic on the same instance without the lock, until ``resolved()`` or ``max_seconds``."""
    org = await largest_org(owner_dsn)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    async with app_instance(owner_dsn, redis_url, API_INSTANCE, min_size=API_LOOPS, max_size=API_LOOPS + 2) \
            as (pool, stats, _):
        await _api_traffic(pool, stats, org, lambda: resolved() or loop.time() > deadline)


async def _api_traffic(pool: AsyncConnectionPool, stats: QueryLayerStats, org: str,
                       done: Callable[[], bool]) -> None:
    async def requests() -> None:
        i = 0
        while not done():
            with contextlib.suppress(psycopg.Error):  # counted by measure_request; the traffic goes on
                await _request(pool, stats, org, i)
            i += 1
            await asyncio.sleep(API_PAUSE)

    await asyncio.gather(*(requests() for _ in range(API_LOOPS)))


async def _request(pool: AsyncConnectionPool, stats: QueryLayerStats, org: str, i: int) -> None:
    if i % SLOW_SHARE == 0:
        async with stats.measure_request("client_engagements"):
            page = await q.list_clients(pool, org, per_page=10)
            await CpaLoaders(pool, org).engagements_by_client.load_many([c["id"] for c in page])
    else:
        async with stats.measure_request("client_list"):
            await q.list_clients(pool, org, page=1 + i % 3)


async def _lock_again_and_again(conn: psycopg.AsyncConnection[object], stop: asyncio.Event) -> None:
    """Take and hold the engagements table's ACCESS EXCLUSIVE lock, release it briefly, again, until ``stop``."""
    while not stop.is_set():
        async with conn.transaction():
            await conn.execute("LOCK TABLE engagements IN ACCESS EXCLUSIVE MODE")
            await _pause(stop, LOCK_HOLD)
        await asyncio.sleep(LOCK_GAP)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
