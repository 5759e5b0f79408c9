"""Benchmark of the CPA cache service (pgwatch_cpa.cpa.cache) on a sandbox Redis.

Prints: the hit-path overhead over a raw redis-py asyncio GET of the same value (interleaved, same run), the
loader calls for 200 concurrent cold get_or_load, and the Redis commands one org invalidation costs at 1k keys
and at 1M keys (INFO commandstats deltas).

    .venv/bin/python bench/bench_cache.py [--iterations 20000] [--big-keys 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time
import timeit
from decimal import Decimal

from redis.asyncio import Redis

from pgwatch_cpa.cpa.cache import CacheService, keys
from pgwatch_cpa.cpa.cache.serializers import dump_envelope, load_envelope
from pgwatch_cpa.sandbox import RedisSandbox, find_redis_servers

ORG = "org_bench"
FILTERS = {"status": "active", "page": 1, "limit": 20, "sort": "name"}


DASHBOARD = {"clients": 412, "active_clients": 388, "open_tasks": 1290, "overdue_tasks": 37, "documents": 20411,
             "unpaid_invoices": 64, "revenue_mtd_cents": 18234550, "currency": "USD", "period": "2024-11"}


def sample_value() -> list[dict]:
    """A client-list page: 20 rows with money and dates, as the application caches it."""
    return [{"id": f"client_{i}", "name": f"Client {i} LLC", "status": "active",
             "balance": Decimal(f"{i * 137}.{i:02d}"), "created_at": dt.datetime(2024, 1, 1, 9, i, tzinfo=dt.UTC),
             "due": dt.date(2024, 4, 15)} for i in range(20)]


async def hit_path(url: str, iterations: int, value: object, label: str) -> None:
    raw = Redis.from_url(url)
    async with CacheService.create(url, app_instance="bench") as cache:
        key = keys.client_list(ORG, FILTERS)
        await cache.set(key, value)
        rkey = await cache._redis_key(key)  # same bytes, fetched raw
        assert await raw.get(rkey) is not None
        for _ in range(2000):  # warm both paths
            await raw.get(rkey)
            await cache.get(keys.client_list(ORG, FILTERS))
        t_raw, t_cache = [], []
        clock = time.perf_counter_ns
        for _ in range(iterations):
            t0 = clock()
            await raw.get(rkey)
            t1 = clock()
            await cache.get(keys.client_list(ORG, FILTERS))  # key building + hashing included
            t2 = clock()
            t_raw.append(t1 - t0)
            t_cache.append(t2 - t1)
        med_raw, med_cache = statistics.median(t_raw) / 1000, statistics.median(t_cache) / 1000
        size = len(dump_envelope(ORG, value))
        print(f"hit path, {label} ({size} B stored), {iterations} interleaved pairs, filter hashing included:")
        print(f"  raw redis-py asyncio GET     median {med_raw:7.1f} µs")
        print(f"  CacheService.get (hit)       median {med_cache:7.1f} µs")
        print(f"  overhead (difference of medians) {med_cache - med_raw:5.1f} µs   ratio {med_cache / med_raw:.3f}x"
              f"   (targets <= 25 µs, <= 1.25x)")
        data = dump_envelope(ORG, value)
        decode = min(timeit.repeat(lambda: load_envelope(data), number=1000, repeat=5)) / 1000 * 1e6
        print(f"  of which value decoding      {decode:7.1f} µs   (serializers.load_envelope alone; service "
              f"overhead without it {med_cache - med_raw - decode:.1f} µs)")
        pairs = sorted(c - r for r, c in zip(t_raw, t_cache, strict=True))
        p50 = pairs[len(pairs) // 2] / 1000
        print(f"  overhead per interleaved pair p50 {p50:.1f} µs  p90 {pairs[int(len(pairs) * 0.9)] / 1000:.1f} µs"
              f"   ratio at p50 {(med_raw + p50) / med_raw:.3f}x")
    await raw.aclose()


async def stampede(url: str) -> None:
    async with CacheService.create(url, app_instance="bench") as cache:
        calls = 0

        async def loader() -> list[dict]:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)  # a database query
            return sample_value()

        key = keys.client_list(ORG, {"cold": True})
        await asyncio.gather(*(cache.get_or_load(key, loader) for _ in range(200)))
        print(f"stampede: 200 concurrent cold get_or_load -> loader called {calls} time(s)")


async def commandstats(redis: Redis) -> dict[str, int]:
    info = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


async def invalidation_cost(url: str, n_keys: int) -> tuple[int, dict[str, int], float]:
    raw = Redis.from_url(url)
    await raw.flushall()
    async with CacheService.create(url, app_instance="bench", stats_interval=3600) as cache:
        await asyncio.sleep(0.1)  # let the publisher's first snapshot land before counting commands
        await cache.set(keys.client_list(ORG, {"seed": 0}), {"x": 1})  # creates the generation counters
        rkey = await cache._redis_key(keys.client_list(ORG, {"seed": 0}))
        prefix = rkey.rsplit(":", 1)[0]
        value = dump_envelope(ORG, {"x": 1})
        for start in range(0, n_keys, 10_000):  # pipelined bulk load, 10k per round trip
            pipe = raw.pipeline(transaction=False)
            for i in range(start, min(n_keys, start + 10_000)):
                pipe.set(f"{prefix}:{i:032x}", value, ex=3600)
            await pipe.execute()
        before = await commandstats(raw)
        t0 = time.perf_counter()
        ok = await cache.invalidate_org(ORG)
        elapsed = time.perf_counter() - t0
        after = await commandstats(raw)
        assert ok
    delta = {c: after.get(c, 0) - before.get(c, 0) for c in after}
    delta["info"] -= 1  # our own INFO call
    delta = {c: n for c, n in delta.items() if n}
    dbsize = await raw.dbsize()
    await raw.flushall()
    await raw.aclose()
    return dbsize, delta, elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--big-keys", type=int, default=1_000_000)
    args = parser.parse_args()
    server = find_redis_servers()[0]
    with RedisSandbox(server=server) as r:
        print(f"server: {server.name} {r.version()} on 127.0.0.1:{r.port}")
        await hit_path(r.url, args.iterations, DASHBOARD, "dashboard metrics: 9 plain JSON fields")
        await hit_path(r.url, args.iterations, sample_value(),
                       "client page: 20 rows, 60 Decimal/datetime/date fields decoded")
        await stampede(r.url)
        for n in (1_000, args.big_keys):
            dbsize, delta, elapsed = await invalidation_cost(r.url, n)
            total = sum(delta.values())
            print(f"org invalidation with {n:>9,} cached keys of that org (dbsize {dbsize:,}): {total} Redis "
                  f"commands {delta}, {elapsed * 1e6:.0f} µs")


if __name__ == "__main__":
    asyncio.run(main())
