"""The CPA cache service against real Redis-protocol servers (every one the sandbox finds): no mocks.

Each test runs once per server build through conftest's module-scoped ``redis_server`` fixture."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio import Redis

from pgwatch_cpa.cpa.cache import BreakerState, CacheService, keys, parse_snapshot
from pgwatch_cpa.cpa.cache import families as fam
from pgwatch_cpa.cpa.cache import stats as st
from pgwatch_cpa.cpa.cache.invalidation import purge_org
from pgwatch_cpa.cpa.cache.serializers import dump_envelope
from pgwatch_cpa.sandbox import RedisSandbox, free_port

pytestmark = pytest.mark.integration

@pytest.fixture
async def raw(redis_server: RedisSandbox):
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


def service(redis_server: RedisSandbox, **options) -> object:
    return CacheService.create(redis_server.url, app_instance=options.pop("app_instance", "test-1"), **options)


class Loader:
    def __init__(self, value: object, delay: float = 0.0) -> None:
        self.value, self.delay, self.calls = value, delay, 0

    async def __call__(self) -> object:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.value


HOSTILE = {"name": "*", "q": "a:b?[c]", "tag": "\n*:", "nested": {"k*": [":", "?"]}}


async def test_cross_tenant_reads_are_impossible(redis_server, raw) -> None:
    async with service(redis_server) as cache:
        a_loader, b_loader = Loader({"org": "A"}), Loader({"org": "B"})
        assert await cache.get_or_load(keys.client_list("org_a", HOSTILE), a_loader) == {"org": "A"}
        assert await cache.get_or_load(keys.client_list("org_b", HOSTILE), b_loader) == {"org": "B"}
        assert await cache.get_or_load(keys.client_list("org_a", HOSTILE), a_loader) == {"org": "A"}
        assert (a_loader.calls, b_loader.calls) == (1, 1)
        # glob characters in an org id do not reach another org either
        assert await cache.get(keys.client_list("org_*", HOSTILE)) is None
        assert await cache.get(keys.client_list("*", HOSTILE)) is None
        for key in await raw.keys("cpa:v1:d:*"):  # test-only inspection of what was written
            assert not set(key.decode()) & set("*?[\n ")

        # a value planted under A's key carrying B's org id is refused and counted
        key = keys.invoice_list("org_a", {"status": "paid"})
        rkey = await cache._redis_key(key)
        await raw.set(rkey, dump_envelope("org_b", {"secret": "of B"}), ex=60)
        before = dict(cache.stats.families["invoice_list"].requests)
        assert await cache.get(key) is None
        assert await cache.get_or_load(key, Loader({"own": "A"})) == {"own": "A"}
        fs = cache.stats.families["invoice_list"]
        assert fs.tenant_mismatches == 2
        assert fs.requests["miss"] - before["miss"] == 2 and fs.requests["hit"] == before["hit"]


async def test_money_and_dates_round_trip_exactly_through_redis(redis_server, raw) -> None:
    value = {
        "fee": Decimal("1234.5600"), "tiny": Decimal("-0.00000001"), "big": Decimal("12345678901234567890.12"),
        "naive": dt.datetime(2024, 4, 15, 23, 59, 59, 999999),
        "utc": dt.datetime(2024, 4, 15, 12, 0, tzinfo=dt.UTC),
        "ny": dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
        "due": dt.date(2025, 1, 31), "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    }
    async with service(redis_server) as cache:
        key = keys.report_data("org_1", "r1", {"year": 2024})
        assert await cache.set(key, value)
        back = await cache.get(key)
    assert back == value
    assert str(back["fee"]) == "1234.5600" and back["naive"].tzinfo is None
    assert back["ny"].fold == 1 and back["ny"].tzinfo == ZoneInfo("America/New_York")
    assert type(back["due"]) is dt.date and isinstance(back["id"], uuid.UUID)


async def test_redis_killed_mid_load_fails_open_and_recovers(redis_server, raw) -> None:
    async with service(redis_server, breaker_failures=1, breaker_reset=0.3, stats_interval=60) as cache:
        key = keys.dashboard_metrics("org_1")

        async def loader_that_kills_redis() -> dict:
            redis_server.kill()
            return {"open_tasks": 3}

        try:
            assert await cache.get_or_load(key, loader_that_kills_redis) == {"open_tasks": 3}
            fs = cache.stats.families["dashboard_metrics"]
            assert fs.fail_opens == 1 and fs.loads == 1
            assert cache.breaker.state is BreakerState.OPEN
            # while open: no exception, no Redis call, the loader serves
            t0 = time.perf_counter()
            assert await cache.get_or_load(key, Loader({"open_tasks": 4})) == {"open_tasks": 4}
            assert time.perf_counter() - t0 < 0.05
            assert await cache.get(key) is None
            assert fs.requests["miss"] == 1 and fs.requests["error"] == 2 and fs.fail_opens == 3
        finally:
            redis_server.start_again()
        await asyncio.sleep(0.35)
        assert cache.breaker.state is BreakerState.HALF_OPEN
        assert await cache.get_or_load(key, Loader({"open_tasks": 5})) == {"open_tasks": 5}  # the probe
        assert cache.breaker.state is BreakerState.CLOSED
        assert await cache.get(key) == {"open_tasks": 5}  # stored again: the cache works


async def test_redis_down_from_the_start_never_raises() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with CacheService.create(url, app_instance="down", socket_connect_timeout=0.1) as cache:
        for _ in range(10):
            assert await cache.get_or_load(keys.task_list("org_1", "u1"), Loader([1])) == [1]
        assert await cache.set(keys.task_list("org_1", "u1"), [2]) is False
        assert await cache.invalidate_org("org_1") is False
        assert cache.stats.families["task_list"].fail_opens == 10
        assert cache.breaker.state is BreakerState.OPEN


async def test_200_concurrent_cold_loads_call_the_loader_once(redis_server, raw) -> None:
    async with service(redis_server) as cache:
        loader = Loader({"rows": list(range(20))}, delay=0.05)
        key = keys.task_list("org_1", "user_7", {"status": "open"})
        results = await asyncio.gather(*(cache.get_or_load(key, loader) for _ in range(200)))
        assert loader.calls == 1
        assert all(r == {"rows": list(range(20))} for r in results)
        assert cache.stats.families["task_list"].requests["miss"] == 200
        assert await cache.get_or_load(key, loader) == {"rows": list(range(20))} and loader.calls == 1


async def test_report_lock_loads_once_across_processes(redis_server, raw) -> None:
    # two services with their own pools stand for two application processes
    async with service(redis_server, app_instance="p1") as one, service(redis_server, app_instance="p2") as two:
        loader = Loader({"report": "P&L"}, delay=0.2)
        key = keys.report_data("org_1", "pnl", {"year": 2024})
        results = await asyncio.gather(one.get_or_load(key, loader), two.get_or_load(key, loader))
        assert results == [{"report": "P&L"}] * 2
        assert loader.calls == 1
        assert await raw.keys("cpa:v1:l:*") == []  # the lock was released (token-checked)


async def _commandstats(raw: Redis) -> dict[str, int]:
    info = await raw.info("commandstats")
    return {name: int(v["calls"]) for name, v in info.items()}


async def _populate(raw: Redis, cache: CacheService, n: int) -> str:
    rkey = await cache._redis_key(keys.client_list("org_big", {"seed": 0}))
    prefix = rkey.rsplit(":", 1)[0]
    value = dump_envelope("org_big", {"x": 1})
    for start in range(0, n, 5000):
        pipe = raw.pipeline(transaction=False)
        for i in range(start, min(n, start + 5000)):
            pipe.set(f"{prefix}:{i:032x}", value, ex=600)
        await pipe.execute()
    return rkey


async def _invalidation_cost(raw: Redis, cache: CacheService) -> dict[str, int]:
    before = await _commandstats(raw)
    assert await cache.invalidate_org("org_big")
    after = await _commandstats(raw)
    delta = {c: after[c] - before.get(c, 0) for c in after if after[c] != before.get(c, 0)}
    delta["cmdstat_info"] -= 1  # the INFO of the "before" reading
    return {c: n for c, n in delta.items() if n}


async def test_org_invalidation_costs_the_same_for_1k_and_10k_keys(redis_server, raw) -> None:
    async with service(redis_server, stats_interval=60) as cache:
        await asyncio.sleep(0.1)  # the publisher's first snapshot must not land inside a measurement
        costs = []
        for n in (1_000, 10_000):
            await cache.set(keys.client_list("org_big", {"seed": 0}), {"x": 1})
            await cache.set(keys.client_list("org_other"), {"y": 2})
            await _populate(raw, cache, n)
            dbsize = await raw.dbsize()
            costs.append(await _invalidation_cost(raw, cache))
            assert await raw.dbsize() == dbsize  # nothing scanned or deleted: old entries just expire
            assert await cache.get(keys.client_list("org_big", {"seed": 0})) is None
            assert await cache.get(keys.client_list("org_other")) == {"y": 2}  # other tenants untouched
        assert costs[0] == costs[1]
        assert sum(costs[0].values()) <= 2 and "cmdstat_scan" not in costs[0] and "cmdstat_keys" not in costs[0]


async def test_event_invalidation_touches_only_its_table_entries(redis_server, raw) -> None:
    async with service(redis_server) as cache:
        client_list, task_list = keys.client_list("org_1"), keys.task_list("org_1", "u1")
        profile_1, profile_2 = keys.user_profile("org_1", "u1"), keys.user_profile("org_1", "u2")
        for key in (client_list, task_list, profile_1, profile_2):
            assert await cache.set(key, {"k": key.family.name})
        assert await cache.invalidate("client.update", "org_1", client_id="c1")
        assert await cache.get(client_list) is None and await cache.get(task_list) is not None
        assert await cache.invalidate("user.update", "org_1", user_id="u1")  # an exact key
        assert await cache.get(profile_1) is None and await cache.get(profile_2) is not None
        assert await cache.invalidate("user.update", "org_1")  # no id: the whole family, still correct
        assert await cache.get(profile_2) is None
        assert await cache.invalidate_family("org_1", fam.TASK_LIST)
        assert await cache.get(task_list) is None
        with pytest.raises(ValueError):
            await cache.invalidate("no.such.event", "org_1")
        assert cache.stats.invalidations["event"] == 2 and cache.stats.invalidations["key"] == 1


async def test_other_process_sees_invalidation_within_generation_ttl(redis_server, raw) -> None:
    async with service(redis_server, app_instance="p1", generation_ttl=0.2) as one, \
            service(redis_server, app_instance="p2", generation_ttl=0.2) as two:
        key = keys.client_list("org_1")
        await one.set(key, [1])
        assert await two.get(key) == [1]
        assert await one.invalidate_org("org_1")
        assert await one.get(key) is None  # immediately in the invalidating process
        await asyncio.sleep(0.25)
        assert await two.get(key) is None  # within the documented bound elsewhere
    async with service(redis_server, app_instance="p3", generation_ttl=0) as strict, \
            service(redis_server, app_instance="p4", generation_ttl=0) as other:
        await strict.set(key, [2])
        assert await other.get(key) == [2]
        assert await strict.invalidate_org("org_1")
        assert await other.get(key) is None  # strict mode: no delay at all


async def test_dashboard_serves_stale_while_one_caller_refreshes(redis_server, raw) -> None:
    async with service(redis_server, jitter=0.0) as cache:
        key = keys.dashboard_metrics("org_1")
        first, second = Loader({"v": 1}), Loader({"v": 2}, delay=0.1)
        assert await cache.get_or_load(key, first, ttl=0.2) == {"v": 1}
        ttl_ms = await raw.pttl(await cache._redis_key(key))
        assert ttl_ms > 1000  # hard TTL = soft + stale grace
        await asyncio.sleep(0.25)
        results = await asyncio.gather(*(cache.get_or_load(key, second, ttl=5) for _ in range(20)))
        assert results == [{"v": 1}] * 20  # stale, instantly
        assert cache.stats.families["dashboard_metrics"].requests["stale"] == 20
        await asyncio.sleep(0.2)
        assert second.calls == 1
        assert await cache.get_or_load(key, second) == {"v": 2}


async def test_ttls_are_jittered_around_the_family_ttl(redis_server, raw) -> None:
    async with service(redis_server) as cache:
        ttls = []
        for i in range(40):
            key = keys.quickbooks_data("org_1", f"type{i}")
            await cache.set(key, i)
            ttls.append(await raw.pttl(await cache._redis_key(key)) / 1000)
        assert all(0.9 * 300 - 1 <= t <= 1.1 * 300 for t in ttls)
        assert len({round(t) for t in ttls}) > 5


async def test_snapshot_is_published_parsed_and_expires(redis_server, raw) -> None:
    period = 0.2
    cache = await service(redis_server, app_instance="web-7", stats_interval=period)
    await cache.get_or_load(keys.client_list("org_secret_42"), Loader([1]))
    await cache.get(keys.client_list("org_secret_42"))
    await asyncio.sleep(period * 2)
    data = await raw.get("cpa:stats:instance:web-7")
    assert data is not None and b"org_secret_42" not in data
    snap = parse_snapshot(data)
    assert snap["app_instance"] == "web-7" and snap["interval_seconds"] == period
    assert snap["families"]["client_list"]["requests"]["hit"] == 1
    assert snap["families"]["client_list"]["loads"] == 1
    assert snap["pool"]["max"] == 50 and snap["pool"]["in_use"] >= 0
    assert 0 < await raw.pttl("cpa:stats:instance:web-7") <= period * st.TTL_PERIODS * 1000
    assert await raw.zscore(st.INDEX_KEY, "web-7") is not None
    await cache.close(unpublish=False)  # as if the process died: the key must expire by itself
    assert await raw.exists("cpa:stats:instance:web-7")
    await asyncio.sleep(period * st.TTL_PERIODS + 0.15)
    assert not await raw.exists("cpa:stats:instance:web-7")

    async with service(redis_server, app_instance="web-8", stats_interval=period):
        await asyncio.sleep(period / 2)
        assert await raw.exists("cpa:stats:instance:web-8")
    assert not await raw.exists("cpa:stats:instance:web-8")  # a clean stop removes it at once
    assert await raw.zscore(st.INDEX_KEY, "web-8") is None


async def test_prometheus_registry_has_the_metrics_and_no_org_ids(redis_server, raw) -> None:
    registry = CollectorRegistry()
    async with service(redis_server, registry=registry) as cache:
        await cache.get_or_load(keys.invoice_list("org_secret_99"), Loader([1]))
        await cache.invalidate_org("org_secret_99")
        text = generate_latest(registry).decode()
    for name in ("cpa_cache_requests_total", "cpa_cache_request_duration_seconds_bucket", "cpa_cache_loads_total",
                 "cpa_cache_invalidations_total", "cpa_cache_fail_open_total", "cpa_cache_value_bytes_bucket",
                 'cpa_redis_pool_connections{state="in_use"}', "cpa_redis_pool_max_connections",
                 "cpa_redis_pool_waits_total", "cpa_redis_pool_exhausted_total"):
        assert name in text, name
    assert 'cpa_cache_requests_total{family="invoice_list",result="miss"} 1.0' in text
    assert 'cpa_cache_invalidations_total{kind="org"} 1.0' in text
    assert "org_secret" not in text
    assert "cpa_cache_requests_total" not in generate_latest(registry).decode()  # unregistered on close


async def test_pool_waits_and_exhaustion_are_counted_not_tripping_the_breaker(redis_server, raw) -> None:
    async with service(redis_server, max_connections=1, pool_timeout=0.05, socket_timeout=2) as cache:
        key = keys.client_list("org_1")
        await cache.set(key, [1])
        hog = asyncio.create_task(cache.redis.blpop(["cpa:test:never"], timeout=0.5))  # holds the only connection
        await asyncio.sleep(0.05)
        assert await cache.get(key) is None  # no connection within 50 ms: fail open
        await hog
        assert cache.pool.waits >= 1 and cache.pool.exhausted >= 1
        assert cache.breaker.state is BreakerState.CLOSED  # a full pool is not a dead Redis
        assert await cache.get(key) == [1]


async def test_allkeys_policy_is_warned_about_once(redis_server, raw, caplog) -> None:
    await raw.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with caplog.at_level(logging.WARNING, logger="pgwatch_cpa.cpa.cache.service"):
            async with service(redis_server, stats_interval=0.05) as cache:
                await asyncio.sleep(0.2)
                assert cache.maxmemory_policy == "allkeys-lru"
        assert sum("maxmemory-policy" in r.getMessage() for r in caplog.records) == 1
    finally:
        await raw.config_set("maxmemory-policy", "noeviction")


async def test_lost_generation_counters_restart_above_old_values(redis_server, raw) -> None:
    async with service(redis_server, generation_ttl=0) as cache:
        key = keys.client_list("org_1")
        await cache.set(key, ["old"])
        old_rkey = await cache._redis_key(key)
        await raw.delete(key.org_gen_key, key.family_gen_key)  # as an allkeys-* eviction would
        await asyncio.sleep(0.002)
        assert await cache.get(key) is None and await raw.exists(old_rkey)
        assert await cache._redis_key(key) != old_rkey


async def test_admin_purge_removes_one_org_only(redis_server, raw) -> None:
    async with service(redis_server) as cache:
        for i in range(50):
            await cache.set(keys.client_list("org_1", {"p": i}), i)
            await cache.set(keys.client_list("org_2", {"p": i}), i)
        assert await purge_org(cache.redis, "org_1") == 50
        assert await cache.get(keys.client_list("org_2", {"p": 3})) == 3
        assert await raw.exists(keys.org_gen_key("org_1"))  # counters survive a purge
