"""The application's PostgreSQL pool and query-layer statistics, from the application to the daemon's /metrics and
the shipped alerts, on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import PoolTimeout

from pgwatch_cpa.cpa import queries as q
from pgwatch_cpa.cpa.cache.service import CacheService
from pgwatch_cpa.cpa.cache.stats import parse_snapshot
from pgwatch_cpa.cpa.db import create_pool
from pgwatch_cpa.cpa.query_stats import QueryLayerStats, app_sections, recording
from pgwatch_cpa.cpa.schema.migrate import migrate
from pgwatch_cpa.demo.run import DemoOptions, shipped_rules, shorten_rules
from tests.integration.test_cpa_cache_stats_collector import poll, values

pytestmark = pytest.mark.integration

POOL_MAX = 4
ORG = "org_1"


@pytest.fixture(scope="module")
def cpa_schema_dsn(pg_server) -> str:
    """A migrated, empty CPA database: the query functions run (and return no rows)."""
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS cpa_app_stats")
        conn.execute("CREATE DATABASE cpa_app_stats")
    dsn = pg_server.dsn(dbname="cpa_app_stats")
    asyncio.run(migrate(dsn))
    return dsn


async def until(check: Callable[[], object], timeout: float, what: str) -> object:
    """Poll without blocking the loop: the application under test publishes its statistics from it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # the daemon is not listening yet
            last = await asyncio.to_thread(check)
            if last:
                return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last={last!r})")


def metric(daemon, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(daemon.metrics()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def firing(daemon, alert: str, app_instance: str) -> bool:
    status, body = daemon.get("/alerts")
    assert status == 200
    return any(a["labels"].get("alertname") == alert and a["labels"].get("app_instance") == app_instance
               and a["state"] == "firing" for a in json.loads(body)["data"]["alerts"])


async def test_held_pool_shows_in_use_fires_saturated_then_timeouts(pg_server, redis_server, daemon_factory,
                                                                     tmp_path):
    rules = tmp_path / "alerts-demo.yml"
    shorten_rules(shipped_rules(), rules, DemoOptions().alert_for)  # the demo's time scale
    daemon = daemon_factory({"interval": "1s", "redis": [{"name": "cache", "url": redis_server.url}],
                             "alerting": {"rules": [str(rules)], "evaluation_interval": "1s"}})
    instance = {"app_instance": "pool-test"}
    stats = QueryLayerStats()
    async with create_pool(pg_server.dsn(), min_size=1, max_size=POOL_MAX, timeout=0.5) as pool, \
            CacheService.create(redis_server.url, app_instance="pool-test", stats_interval=0.3,
                                app_stats=lambda: app_sections(pool, stats)):
        held = [await pool.getconn() for _ in range(POOL_MAX - 1)]
        await until(lambda: metric(daemon, "cpa_pg_pool_connections", **instance, state="in_use") == POOL_MAX - 1,
                    30, f"{POOL_MAX - 1} connections in use")
        assert metric(daemon, "cpa_pg_pool_max_connections", **instance) == POOL_MAX
        assert metric(daemon, "cpa_pg_pool_timeouts_total", **instance) == 0
        assert not firing(daemon, "CpaPgPoolSaturated", "pool-test"), "75% is under the 80% threshold"

        held.append(await pool.getconn())
        await until(lambda: metric(daemon, "cpa_pg_pool_connections", **instance, state="in_use") == POOL_MAX,
                    30, "the whole pool in use")
        await until(lambda: firing(daemon, "CpaPgPoolSaturated", "pool-test"), 40, "CpaPgPoolSaturated firing")

        with recording(stats), pytest.raises(PoolTimeout):
            await q.list_clients(pool, ORG)  # waits 0.5 s for a connection, then fails
        await until(lambda: metric(daemon, "cpa_pg_pool_timeouts_total", **instance) == 1, 30, "one timeout")
        assert metric(daemon, "cpa_db_errors_total", **instance, operation="list_clients", kind="pool_timeout") == 1
        assert metric(daemon, "cpa_db_queries_total", **instance, operation="list_clients") == 1
        # it never held a connection, so it was not timed as a query
        assert metric(daemon, "cpa_db_query_duration_seconds_count", **instance, operation="list_clients") == 0
        await until(lambda: firing(daemon, "CpaPgPoolTimeouts", "pool-test"), 30, "CpaPgPoolTimeouts firing")

        for conn in held:
            await pool.putconn(conn)
        await until(lambda: not firing(daemon, "CpaPgPoolSaturated", "pool-test"), 40, "CpaPgPoolSaturated resolved")
        assert metric(daemon, "cpa_pg_pool_connections", **instance, state="in_use") == 0


async def test_latency_histograms_count_requests_and_queries_by_operation(cpa_schema_dsn, redis_server):
    stats = QueryLayerStats()
    async with create_pool(cpa_schema_dsn, min_size=1, max_size=2, statement_timeout_ms=200) as pool, \
            CacheService.create(redis_server.url, app_instance="latency-test",
                                app_stats=lambda: app_sections(pool, stats)) as service:
        with recording(stats):
            for _ in range(3):
                async with stats.measure_request("client_list"):
                    await q.list_clients(pool, ORG)
            for _ in range(2):
                async with stats.measure_request("dashboard"):
                    await q.dashboard_metrics(pool, ORG)
                    await q.receivables_aging(pool, ORG)
            async with q.tenant_cursor(pool, ORG, "sleep_probe") as cur:
                await cur.execute("SELECT pg_sleep(0.12)")  # at least 120 ms: never in the le="0.1" bucket
            with pytest.raises(psycopg.errors.QueryCanceled):
                async with stats.measure_request("slow_report"), q.tenant_cursor(pool, ORG, "sleep_probe") as cur:
                    await cur.execute("SELECT pg_sleep(5)")  # the pool's statement_timeout is 200 ms
        await q.list_clients(pool, ORG)  # outside recording(): not counted
        assert await service.publish_stats()
        store = await poll(redis_server.url)  # before the service closes and withdraws its snapshot

    inst = {"app_instance": "latency-test"}
    for operation, count in (("list_clients", 3), ("dashboard_metrics", 2), ("receivables_aging", 2)):
        assert values(store, "cpa_db_queries_total", **inst, operation=operation) == [count]
        assert values(store, "cpa_db_query_duration_seconds_count", **inst, operation=operation) == [count]
        assert values(store, "cpa_db_query_duration_seconds_bucket", **inst, operation=operation, le="+Inf") == [count]
        assert values(store, "cpa_db_errors_total", **inst, operation=operation, kind="other") == [0]
    assert values(store, "cpa_request_duration_seconds_count", **inst, operation="client_list") == [3]
    assert values(store, "cpa_requests_total", **inst, operation="dashboard") == [2]
    assert values(store, "cpa_request_errors_total", **inst, operation="slow_report", kind="statement_timeout") == [1]
    assert values(store, "cpa_request_errors_total", **inst, operation="client_list", kind="statement_timeout") == [0]

    probe = {**inst, "operation": "sleep_probe"}
    assert values(store, "cpa_db_query_duration_seconds_count", **probe) == [2]  # the cancelled one is timed too
    assert values(store, "cpa_db_query_duration_seconds_bucket", **probe, le="0.1") == [0]
    assert values(store, "cpa_db_errors_total", **probe, kind="statement_timeout") == [1]
    assert values(store, "cpa_pg_pool_max_connections", **inst) == [2]
    assert values(store, "cpa_pg_pool_requests_total", **inst) >= [10]
    assert not any(ORG in str(labels) for _, labels, _ in store.samples()), "org ids never become labels"


def test_snapshot_without_the_application_sections_stays_valid(redis_server):
    """An older publisher (no pg_pool, no query_layer) is still read, and exports no application metrics."""
    async def run() -> dict:
        async with CacheService.create(redis_server.url, app_instance="old-app") as service:
            return service.snapshot()

    snap = asyncio.run(run())
    assert "pg_pool" not in snap and "query_layer" not in snap
    assert parse_snapshot(json.dumps(snap))["app_instance"] == "old-app"


async def test_a_failing_provider_leaves_the_cache_statistics_published(redis_server, caplog):
    def broken() -> dict:
        raise RuntimeError("pool gone")

    async with CacheService.create(redis_server.url, app_instance="broken-app", app_stats=broken) as service:
        assert await service.publish_stats()
        assert await service.publish_stats()
        store = await poll(redis_server.url)
    assert values(store, "cpa_redis_pool_max_connections", app_instance="broken-app") == [50.0]
    assert values(store, "cpa_pg_pool_max_connections", app_instance="broken-app") == []
    assert sum("statistics provider failed" in r.getMessage() for r in caplog.records) == 1
