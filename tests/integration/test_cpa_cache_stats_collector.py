"""The daemon reports every application instance's cache and pool from Redis alone."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from pgwatch_cpa.collectors.redis.cpa_cache_stats import CpaCacheStatsCollector
from pgwatch_cpa.config import settings_from_mapping
from pgwatch_cpa.cpa.cache import keys
from pgwatch_cpa.cpa.cache.service import CacheService
from pgwatch_cpa.daemon.exposition import Exposition
from pgwatch_cpa.daemon.redis_poller import RedisPoller
from pgwatch_cpa.daemon.snapshot import SnapshotStore
from tests.conftest import require_tool

pytestmark = pytest.mark.integration


async def poll(url: str) -> SnapshotStore:
    settings = settings_from_mapping({"redis": [{"name": "cache", "url": url}]}, {}).redis[0]
    store = SnapshotStore()
    poller = RedisPoller("cache", 1.0, [CpaCacheStatsCollector()], settings, store)
    await poller.open()
    try:
        await poller.poll_once()
    finally:
        await poller.close()
    return store


def values(store: SnapshotStore, name: str, **labels: str) -> list[float]:
    return [v for n, lab, v in store.samples() if n == name and all(lab.get(k) == x for k, x in labels.items())]


async def test_published_snapshots_become_metrics_and_vanish_after_the_app_stops(redis_server):
    services = [await CacheService.create(redis_server.url, app_instance=name, stats_interval=0.3)
                for name in ("web-1", "worker-1")]
    loads = 0

    async def loader():
        nonlocal loads
        loads += 1
        return {"clients": 3}

    for org, service in zip(("org_1", "org_2"), services, strict=True):
        for _ in range(4):  # one miss then three hits
            await service.get_or_load(keys.client_list(org, {"status": "active"}), loader)
        await service.publish_stats()
    store = await poll(redis_server.url)
    assert values(store, "cpa_cache_instances") == [2.0]
    for instance in ("web-1", "worker-1"):
        labels = {"app_instance": instance, "family": "client_list"}
        assert values(store, "cpa_cache_requests_total", **labels, result="hit") == [3.0]
        assert values(store, "cpa_cache_requests_total", **labels, result="miss") == [1.0]
        assert values(store, "cpa_cache_loads_total", **labels) == [1.0]
        assert values(store, "cpa_cache_request_duration_seconds_count", **labels) == [4.0]
        assert values(store, "cpa_redis_pool_max_connections", app_instance=instance) == [50.0]
    assert loads == 2
    assert not any("org_" in str(lab) for _, lab, _ in store.samples()), "org ids never become labels"

    body, _ = await Exposition(store).render(None)
    promtool = require_tool("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, check=False)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check.stdout

    await services[0].close(unpublish=False)  # dies without cleaning up: its key must expire
    await services[1].close()
    await asyncio.sleep(1.2)  # 3 x stats_interval
    store = await poll(redis_server.url)
    assert values(store, "cpa_cache_instances") == [0.0]
    assert values(store, "cpa_cache_requests_total") == []
