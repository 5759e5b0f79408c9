"""The CPA caching service's own statistics, as each application instance publishes them to Redis.

Instances are found through the publishers' sorted-set index (no SCAN), their snapshots read with one MGET; an
instance that died disappears when its snapshot key expires. Labels: app_instance and family only (no org ids).
The application's PostgreSQL pool and query-layer sections of the same snapshots are exported by cpa_app_stats.py.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pgwatch_cpa.collectors.base import Collector, RedisContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.redis.cpa_app_stats import export_app_sections

log = logging.getLogger(__name__)

MAX_INSTANCES = 200  # bounds the app_instance label
INDEX_HORIZON = 3600.0  # index members older than this are not even looked up


class CpaCacheStatsCollector(Collector):
    name = "cpa_cache_stats"
    kind = "redis"

    async def collect(self, ctx: RedisContext, out: MetricSet) -> None:
        # Imported here: the cache package loads redis-py, which a daemon without Redis targets never needs.
        from pgwatch_cpa.cpa.cache.stats import INDEX_KEY, INSTANCE_KEY_PREFIX, SnapshotError, parse_snapshot

        now = time.time()
        members = await ctx.client.zrevrangebyscore(INDEX_KEY, "+inf", now - INDEX_HORIZON, start=0,
                                                    num=MAX_INSTANCES)
        names = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        raw = await ctx.client.mget([INSTANCE_KEY_PREFIX + n for n in names]) if names else []
        snapshots, invalid = [], 0
        for name, data in zip(names, raw, strict=True):
            if data is None:
                continue  # the instance stopped publishing: its key expired
            try:
                snapshots.append(parse_snapshot(data))
            except SnapshotError as exc:
                invalid += 1
                _warn_once(ctx.state, name, exc)
        out.gauge("cpa_cache_instances", "Application instances whose cache statistics are live in Redis.",
                  len(snapshots))
        out.gauge("cpa_cache_invalid_snapshots", "Published cache snapshots that failed validation.", invalid)
        for snapshot in snapshots:
            export_snapshot(snapshot, now, out)


def _warn_once(state: dict[str, Any], instance: str, exc: Exception) -> None:
    warned = state.setdefault("invalid_warned", set())
    if instance not in warned:
        warned.add(instance)
        log.warning("ignoring the cache statistics of instance %s: %s", instance, exc)


def export_snapshot(snap: dict[str, Any], now: float, out: MetricSet) -> None:
    instance = {"app_instance": snap["app_instance"]}
    out.gauge("cpa_cache_snapshot_age_seconds", "Seconds since the instance published its statistics.",
              max(0.0, now - snap["published_at"]), instance)
    out.gauge("cpa_cache_breaker_open", "1 if the instance's circuit breaker keeps it away from Redis.",
              0.0 if snap["breaker"]["state"] == "closed" else 1.0, instance)
    out.counter("cpa_cache_breaker_opens_total", "Times the circuit breaker opened.", snap["breaker"]["opens"],
                instance)
    for family, stats in snap["families"].items():
        _export_family(snap, {**instance, "family": family}, stats, out)
    for kind, count in snap["invalidations"].items():
        out.counter("cpa_cache_invalidations_total", "Cache invalidations, by kind.", count, {**instance, "kind": kind})
    _export_pool(snap["pool"], instance, out)
    export_app_sections(snap, instance, out)


def _export_family(snap: dict[str, Any], labels: dict[str, str], stats: dict[str, Any], out: MetricSet) -> None:
    for result, count in stats["requests"].items():
        out.counter("cpa_cache_requests_total", "Cache lookups, by family and result (hit/miss/stale/error).",
                    count, {**labels, "result": result})
    out.counter("cpa_cache_loads_total", "Loader calls (a miss, a fail-open or a stale refresh).", stats["loads"],
                labels)
    out.counter("cpa_cache_load_errors_total", "Loader calls that raised.", stats["load_errors"], labels)
    out.counter("cpa_cache_fail_open_total", "Requests served without Redis (down, slow, breaker open, "
                "write failed): get() returned its default, get_or_load() the loader's value.",
                stats["fail_opens"], labels)
    out.counter("cpa_cache_tenant_mismatch_total", "Cached values rejected because their org did not match.",
                stats["tenant_mismatches"], labels)
    latency = stats["latency"]
    out.histogram("cpa_cache_request_duration_seconds", "Cache lookup latency as the application sees it.",
                  snap["latency_buckets"], latency["buckets"], latency["sum"], labels)
    out.counter("cpa_cache_written_bytes_total", "Bytes of serialized values written.",
                stats["value_bytes"]["sum"], labels)
    out.counter("cpa_cache_writes_total", "Values written.", stats["value_bytes"]["count"], labels)


def _export_pool(pool: dict[str, int], labels: dict[str, str], out: MetricSet) -> None:
    for state in ("in_use", "idle"):
        out.gauge("cpa_redis_pool_connections", "The application's redis-py pool connections, by state.",
                  pool[state], {**labels, "state": state})
    out.gauge("cpa_redis_pool_max_connections", "The application's redis-py pool size limit.", pool["max"], labels)
    out.counter("cpa_redis_pool_waits_total", "Checkouts that had to wait for a free connection.", pool["waits"],
                labels)
    out.counter("cpa_redis_pool_exhausted_total", "Checkouts that timed out waiting for a connection.",
                pool["exhausted"], labels)
