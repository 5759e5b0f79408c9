"""The traffic replay and the demo's faults on real PostgreSQL (15 and 18) and Redis-protocol servers; no mocks."""

from __future__ import annotations

import asyncio
import math
import statistics
import time

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from pgwatch_cpa.cpa.cache import CacheService, keys, parse_snapshot
from pgwatch_cpa.cpa.cache import stats as cache_stats
from pgwatch_cpa.cpa.cache_adapter import QueryCache, cache_key
from pgwatch_cpa.cpa.queries import dashboard_metrics, list_clients
from pgwatch_cpa.cpa.seed import seed
from pgwatch_cpa.cpa.workload import READ_MIX, WorkloadError, arrival_gaps, load_inventory, run_workload
from pgwatch_cpa.demo.faults import (
    cache_cold,
    connection_spike,
    idle_in_transaction,
    lock_wait,
    long_query,
    running,
    slow_query,
)

pytestmark = pytest.mark.integration

RATE = 50.0


@pytest.fixture(scope="module")
def cpa_dsn(pg_server) -> str:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE cpa")
    dsn = pg_server.dsn(dbname="cpa")
    asyncio.run(seed(dsn, "small", seed=11, progress=False))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return dsn


async def _scalar(dsn: str, query: str, params=None):
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
        return row[0] if row else None


async def _no_connections(dsn: str, app_like: str, timeout: float = 10.0) -> None:
    """Wait until no backend's application_name matches ``app_like`` (a backend exits shortly after close)."""
    end = time.monotonic() + timeout
    n = None
    while time.monotonic() < end:
        n = await _scalar(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s", [app_like])
        if n == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{n} connection(s) named {app_like!r} left behind")


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# ---------------------------------------------------------------- arrival process (no server needed)


def test_arrival_gaps_are_exponential_and_counts_poisson():
    rate, n = 200.0, 40_000
    source = arrival_gaps(rate, seed=3)
    gaps = [next(source) for _ in range(n)]
    mean = statistics.fmean(gaps)
    assert abs(mean - 1 / rate) < 4 * (1 / rate) / math.sqrt(n)  # 4 standard errors
    assert 0.97 < statistics.stdev(gaps) / mean < 1.03  # exponential: cv = 1 (a fixed rate would give 0)
    # Kolmogorov-Smirnov against Exp(rate): D < 1.63 / sqrt(n) at the 1 % level
    ordered = sorted(gaps)
    d = max(max((i + 1) / n - (1 - math.exp(-rate * x)), (1 - math.exp(-rate * x)) - i / n)
            for i, x in enumerate(ordered))
    assert d < 1.63 / math.sqrt(n)
    # counts per 1 s window: Poisson, so variance ~= mean (index of dispersion ~1)
    t, counts, window = 0.0, [0] * int(sum(gaps)), 0
    for gap in gaps:
        t += gap
        window = int(t)
        if window < len(counts):
            counts[window] += 1
    dispersion = statistics.variance(counts) / statistics.fmean(counts)
    assert 0.7 < dispersion < 1.3
    assert next(arrival_gaps(rate, seed=3)) == gaps[0]  # seeded: a run is reproducible


# ---------------------------------------------------------------- the workload


async def test_workload_mix_latency_cache_and_invalidations(cpa_dsn, redis_server):
    registry = CollectorRegistry()
    redis = Redis.from_url(redis_server.url)
    await redis.flushall()
    audit_before = await _scalar(cpa_dsn, "SELECT count(*) FROM audit_logs")
    mid: dict[str, object] = {}

    async def observe_mid_run() -> None:
        await asyncio.sleep(6.0)  # after warm-up
        mid["hits"] = sum(_sample(registry, "cpa_cache_requests_total", family=f, result="hit")
                          for f in ("client_list", "document_list", "dashboard_metrics", "task_list"))
        mid["event_invalidations"] = _sample(registry, "cpa_cache_invalidations_total", kind="event")
        mid["in_flight"] = _sample(registry, "cpa_workload_in_flight")
        raw = await redis.get(cache_stats.instance_key("wl-test-1"))
        mid["snapshot"] = parse_snapshot(raw) if raw else None
        mid["pool"] = await _scalar(cpa_dsn, "SELECT count(*) FROM pg_stat_activity "
                                             "WHERE application_name = 'cpa_platform'")

    observer = asyncio.create_task(observe_mid_run())
    report = await run_workload(cpa_dsn, redis_server.url, rate=RATE, duration=10.0, seed=5,
                                app_instance="wl-test-1", registry=registry, pool_size=4)
    await observer
    print(report.table())

    # every request succeeded; nothing dropped or cancelled
    assert report.failed == 0 and report.dropped == 0 and report.cancelled == 0, report.table()
    assert report.completed == report.offered == report.ok

    # arrivals: a Poisson count in the window, mean gap 1/rate, gaps as variable as an exponential's
    expected = RATE * report.window
    assert abs(report.offered - expected) < 4.5 * math.sqrt(expected), report.table()
    assert abs(report.interarrival_mean - 1 / RATE) < 0.2 / RATE
    assert 0.75 < report.interarrival_cv < 1.25

    # the read mix is the guide's 30/25/20/25 (4.5 sigma of a binomial share), writes are ~5 %
    reads = sum(s.arrivals for s in report.scenarios.values() if s.kind == "read")
    for name, share in report.mix("read").items():
        p = READ_MIX[name] / 100
        assert abs(share - p) < 4.5 * math.sqrt(p * (1 - p) / reads), (name, share)
    writes = report.offered - reads
    assert abs(writes / report.offered - 0.05) < 4.5 * math.sqrt(0.05 * 0.95 / report.offered)
    assert writes > 0

    # latency percentiles per scenario, ordered, and printed
    for stats in report.scenarios.values():
        if stats.completed:
            p50, p95, p99 = (stats.percentile_ms(q) for q in (0.5, 0.95, 0.99))
            assert p50 is not None and 0 < p50 <= p95 <= p99 <= stats.latency.max * 1000 * 1.0001
    table = report.table()
    for name in READ_MIX:
        assert name in table
    assert "p95 ms" in table and "cache: hit ratio" in table

    # cache-aside: hits after warm-up, and every write invalidated through the event table
    assert mid["hits"] > 0 and report.cache is not None and report.cache.hits > 0
    assert mid["event_invalidations"] > 0
    assert report.cache.invalidations["event"] == report.writes_invalidated == writes
    snapshot = mid["snapshot"]
    assert snapshot is not None and snapshot["app_instance"] == "wl-test-1"  # the daemon sees this instance

    # the writes are real: one audit row per write
    assert await _scalar(cpa_dsn, "SELECT count(*) FROM audit_logs") - audit_before == writes

    # prometheus metrics agree with the report
    total = sum(_sample(registry, "cpa_workload_requests_total", scenario=n, outcome="ok")
                for n in report.scenarios)
    assert total == report.ok
    assert _sample(registry, "cpa_workload_dropped_total") == 0
    count = sum(_sample(registry, "cpa_workload_request_duration_seconds_count", scenario=n)
                for n in report.scenarios)
    assert count == report.completed

    # clean shutdown: pool closed, cache closed and unpublished
    assert mid["pool"] == 4
    await _no_connections(cpa_dsn, "cpa_platform")
    assert await redis.get(cache_stats.instance_key("wl-test-1")) is None
    await redis.aclose()


async def test_without_cache_redis_is_never_touched(cpa_dsn, redis_server):
    redis = Redis.from_url(redis_server.url)
    info = await redis.info("stats")  # this connection stays open: it is not counted again
    keys_before = await redis.dbsize()
    registry = CollectorRegistry()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(3.0, stop.set)
    started = time.monotonic()
    report = await run_workload(cpa_dsn, redis_server.url, rate=RATE, duration=None, stop=stop, cache=False,
                                registry=registry, pool_size=3)
    assert time.monotonic() - started < 6.0  # the stop event ends an open-ended run promptly
    after = await redis.info("stats")
    assert after["total_connections_received"] == info["total_connections_received"]
    assert await redis.dbsize() == keys_before
    assert report.cache is None and not report.cache_enabled and report.failed == 0 and report.ok > 100
    assert registry.get_sample_value("cpa_cache_requests_total", {"family": "client_list", "result": "hit"}) is None
    assert "cache: hit ratio" not in report.table()
    await redis.aclose()


async def test_overload_drops_arrivals_instead_of_slowing_them(cpa_dsn):
    registry = CollectorRegistry()
    rate, duration = 2000.0, 2.0
    report = await run_workload(cpa_dsn, None, rate=rate, duration=duration, max_in_flight=3, pool_size=2,
                                registry=registry, seed=9)
    print(report.table())
    expected = rate * report.window
    assert abs(report.window - duration) < 0.05
    # arrivals kept their schedule: the Poisson count of the target rate, not what the database could serve
    assert abs(report.offered - expected) < 4.5 * math.sqrt(expected), report.table()
    assert report.dropped > 0.5 * report.offered
    assert report.offered == report.dropped + report.completed + report.cancelled
    assert _sample(registry, "cpa_workload_dropped_total") == report.dropped
    assert sum(s.dropped for s in report.scenarios.values()) == report.dropped
    assert report.failed == 0
    assert not report.meets()
    assert "dropped" in report.table()
    await _no_connections(cpa_dsn, "cpa_platform")
    with pytest.raises(WorkloadError, match="one registry per run"):
        await run_workload(cpa_dsn, None, rate=10, duration=1, registry=registry)


async def test_rejects_endless_run_and_unseeded_database(pg_server):
    with pytest.raises(WorkloadError):
        await run_workload(pg_server.dsn(), None, rate=10, duration=None)
    async with await psycopg.AsyncConnection.connect(pg_server.dsn(), autocommit=True) as conn:
        await conn.execute("DROP DATABASE IF EXISTS cpa_empty")
        await conn.execute("CREATE DATABASE cpa_empty")
    empty = pg_server.dsn(dbname="cpa_empty")
    from pgwatch_cpa.cpa.schema.migrate import migrate
    await migrate(empty)
    with pytest.raises(WorkloadError, match="seed"):
        await load_inventory(empty)


# ---------------------------------------------------------------- the cache adapter


async def test_query_cache_adapter_maps_queries_to_families(cpa_dsn, redis_server):
    assert cache_key(("client_list", "org_1", "active", "1", "20")).family.name == "client_list"
    assert cache_key(("dashboard", "org_1", "metrics")) == keys.dashboard_metrics("org_1")
    assert cache_key(("ar_aging", "org_1")).family.name == "invoice_list"
    assert cache_key(("client_dashboard", "org_1", "100", "null")).family.name == "dashboard_metrics"
    with pytest.raises(ValueError):
        cache_key(("nope", "org_1"))
    from pgwatch_cpa.cpa.db import create_pool
    async with create_pool(cpa_dsn, min_size=1, max_size=2) as pool, \
            CacheService.create(redis_server.url, app_instance="adapter-test") as service:
        cache = QueryCache(service)
        first = await list_clients(pool, "org_1", cache=cache)
        assert await list_clients(pool, "org_1", cache=cache) == first
        await dashboard_metrics(pool, "org_1", cache=cache)
        await dashboard_metrics(pool, "org_1", cache=cache)
        assert service.stats.families["client_list"].requests["hit"] >= 1
        assert service.stats.families["dashboard_metrics"].requests["hit"] >= 1
        loads = service.stats.families["client_list"].loads
        await list_clients(pool, "org_1", cache=cache)
        assert service.stats.families["client_list"].loads == loads  # cached
        await service.invalidate("client.update", "org_1")
        await list_clients(pool, "org_1", cache=cache)
        assert service.stats.families["client_list"].loads == loads + 1  # the write's event invalidated it


# ---------------------------------------------------------------- faults


async def test_slow_query_is_in_pg_stat_statements_with_mean_over_a_second(cpa_dsn):
    await _scalar(cpa_dsn, "SELECT pg_stat_statements_reset() IS NOT NULL")
    async with running(slow_query, cpa_dsn) as task:
        row_mean = await _scalar(cpa_dsn, """
            SELECT max(mean_exec_time) FROM pg_stat_statements
             WHERE query LIKE '%%pg_sleep%%' AND query LIKE '%%AS fault%%' AND calls >= 1""")
        assert row_mean is not None and row_mean > 1000
        assert await _scalar(cpa_dsn, "SELECT count(*) FROM pg_stat_activity "
                                      "WHERE application_name = 'cpa_fault_slow_query'") == 1
    assert task.result() >= 1
    await _no_connections(cpa_dsn, "cpa_fault%")


async def test_long_query_is_active_and_cancelled_at_the_end(cpa_dsn):
    async with running(long_query, cpa_dsn, 120):
        await asyncio.sleep(1.1)
        age = await _scalar(cpa_dsn, """
            SELECT extract(epoch FROM now() - query_start) FROM pg_stat_activity
             WHERE application_name = 'cpa_fault_long_query' AND state = 'active'""")
        assert age is not None and age >= 1.0
    # the server-side statement was cancelled, not left sleeping for 120 s
    await _no_connections(cpa_dsn, "cpa_fault%")


async def test_idle_in_transaction_is_visible_with_an_xid(cpa_dsn):
    async with running(idle_in_transaction, cpa_dsn, 60):
        await asyncio.sleep(0.5)
        row = await _scalar(cpa_dsn, """
            SELECT backend_xid IS NOT NULL AND now() - state_change > interval '0.3 s' FROM pg_stat_activity
             WHERE application_name = 'cpa_fault_idle_in_transaction' AND state = 'idle in transaction'""")
        assert row is True
    await _no_connections(cpa_dsn, "cpa_fault%")


async def test_idle_in_transaction_ends_by_itself_after_seconds(cpa_dsn):
    started = time.monotonic()
    await idle_in_transaction(cpa_dsn, 0.5)
    assert time.monotonic() - started < 3
    await _no_connections(cpa_dsn, "cpa_fault%")


async def test_connection_spike_exceeds_the_fraction_and_releases(cpa_dsn):
    fraction = 0.6
    async with running(connection_spike, cpa_dsn, fraction) as task:
        usable = await _scalar(cpa_dsn, """
            SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
                   - coalesce(nullif(current_setting('reserved_connections', true), ''), '0')::int""")
        backends = await _scalar(cpa_dsn, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
        assert backends > fraction * usable
    assert task.result() > 0
    await _no_connections(cpa_dsn, "cpa_fault%")
    with pytest.raises(ValueError):
        await connection_spike(cpa_dsn, 1.0, 1)


async def test_lock_wait_shows_an_ungranted_row_lock(cpa_dsn):
    async with running(lock_wait, cpa_dsn, 60):
        waiting = await _scalar(cpa_dsn, """
            SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
             WHERE NOT l.granted AND a.application_name = 'cpa_fault_lock_waiter' AND a.wait_event_type = 'Lock'""")
        assert waiting >= 1
        blockers = await _scalar(cpa_dsn, """
            SELECT count(*) FROM pg_stat_activity w, pg_stat_activity h
             WHERE w.application_name = 'cpa_fault_lock_waiter' AND h.application_name = 'cpa_fault_lock_holder'
               AND h.pid = ANY(pg_blocking_pids(w.pid))""")
        assert blockers == 1
    await _no_connections(cpa_dsn, "cpa_fault%")
    assert await _scalar(cpa_dsn, "SELECT count(*) FROM pg_locks WHERE NOT granted") == 0


async def test_cache_cold_invalidates_every_org(cpa_dsn, redis_server):
    inventory = await load_inventory(cpa_dsn)
    orgs = [o.id for o in inventory.orgs]
    calls = 0
    redis = Redis.from_url(redis_server.url)
    await redis.flushall()  # earlier tests of this module cached dashboards of these orgs
    await redis.aclose()

    async def loader() -> dict:
        nonlocal calls
        calls += 1
        return {"n": calls}

    async with CacheService.create(redis_server.url, app_instance="cold-test", generation_ttl=0) as service:
        for org in orgs:
            await service.get_or_load(keys.dashboard_metrics(org), loader)
            await service.get_or_load(keys.dashboard_metrics(org), loader)
        assert calls == len(orgs)  # warm: the second round hit
        assert await cache_cold(service, orgs, rounds=2, interval=0.05) == 2 * len(orgs)
        assert service.stats.invalidations["org"] == 2 * len(orgs)
        for org in orgs:
            await service.get_or_load(keys.dashboard_metrics(org), loader)
        assert calls == 2 * len(orgs)  # cold: every org missed
