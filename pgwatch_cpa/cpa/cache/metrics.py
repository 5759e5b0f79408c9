"""In-process cache statistics and their Prometheus exposition.

The hit path only bumps plain ints (tens of ns); a prometheus_client custom Collector turns them into metric
families when /metrics is scraped, and stats.py turns the same numbers into the snapshot published to Redis.
Labels are bounded: family (a fixed set), result, kind, state. No org id ever becomes a label.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from pgwatch_cpa.cpa.cache.families import FAMILIES

RESULTS = ("hit", "miss", "stale", "error")
INVALIDATION_KINDS = ("org", "family", "event", "key", "scan", "failed")
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)


class Histogram:
    """Per-bucket (not cumulative) counts; the last bucket is +Inf."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[int]:
        out, total = [], 0
        for c in self.counts:
            total += c
            out.append(total)
        return out


class FamilyStats:
    __slots__ = ("fail_opens", "latency", "load_errors", "loads", "requests", "tenant_mismatches",
                 "value_bytes")

    def __init__(self) -> None:
        self.requests = dict.fromkeys(RESULTS, 0)
        self.loads = 0
        self.load_errors = 0
        self.fail_opens = 0
        self.tenant_mismatches = 0
        self.latency = Histogram(LATENCY_BUCKETS)  # cache lookup time, loader excluded
        self.value_bytes = Histogram(SIZE_BUCKETS)  # serialized size of values written


class PoolView(Protocol):
    """What the stats read from the connection pool (read-only: in_use and idle are computed properties)."""

    @property
    def in_use(self) -> int: ...
    @property
    def idle(self) -> int: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def waits(self) -> int: ...
    @property
    def exhausted(self) -> int: ...


class CacheStats:
    __slots__ = ("families", "invalidations")

    def __init__(self) -> None:
        self.families = {name: FamilyStats() for name in FAMILIES}
        self.invalidations = dict.fromkeys(INVALIDATION_KINDS, 0)


class CacheCollector(Collector):
    """Reads CacheStats, the pool and the breaker at scrape time; never does I/O."""

    def __init__(self, stats: CacheStats, pool: PoolView, breaker_state: Any) -> None:
        self._stats = stats
        self._pool = pool
        self._breaker_state = breaker_state  # callable returning the state's value

    def describe(self) -> Iterator[Any]:
        return iter(())  # families are built per scrape; no describe needed for registration

    def collect(self) -> Iterator[Any]:
        yield from self._family_metrics()
        yield from self._pool_metrics()

    def _family_metrics(self) -> Iterator[Any]:
        fams = self._stats.families
        requests = CounterMetricFamily("cpa_cache_requests", "Cache lookups by family and result",
                                       labels=["family", "result"])
        loads = CounterMetricFamily("cpa_cache_loads", "Loader calls (a miss, a fail-open or a stale refresh)",
                                    labels=["family"])
        load_errors = CounterMetricFamily("cpa_cache_load_errors", "Loader calls that raised", labels=["family"])
        fail_open = CounterMetricFamily("cpa_cache_fail_open", "Requests served without Redis (down, slow, "
                                        "breaker open, write failed)", labels=["family"])
        mismatch = CounterMetricFamily("cpa_cache_tenant_mismatch", "Values whose stored org id did not match "
                                       "the key's; treated as misses", labels=["family"])
        latency = HistogramMetricFamily("cpa_cache_request_duration_seconds", "Cache lookup time (loader "
                                        "excluded)", labels=["family"])
        sizes = HistogramMetricFamily("cpa_cache_value_bytes", "Serialized size of values written",
                                      labels=["family"])
        for name, fs in fams.items():
            for result, n in fs.requests.items():
                requests.add_metric([name, result], n)
            loads.add_metric([name], fs.loads)
            load_errors.add_metric([name], fs.load_errors)
            fail_open.add_metric([name], fs.fail_opens)
            mismatch.add_metric([name], fs.tenant_mismatches)
            latency.add_metric([name], _buckets(fs.latency), fs.latency.sum)
            sizes.add_metric([name], _buckets(fs.value_bytes), fs.value_bytes.sum)
        inval = CounterMetricFamily("cpa_cache_invalidations", "Invalidations by kind", labels=["kind"])
        for kind, n in self._stats.invalidations.items():
            inval.add_metric([kind], n)
        breaker = GaugeMetricFamily("cpa_cache_breaker_state", "1 for the circuit breaker's current state",
                                    labels=["state"])
        current = self._breaker_state()
        for state in ("closed", "open", "half_open"):
            breaker.add_metric([state], 1.0 if state == current else 0.0)
        yield from (requests, loads, load_errors, fail_open, mismatch, latency, sizes, inval, breaker)

    def _pool_metrics(self) -> Iterator[Any]:
        pool = self._pool
        conns = GaugeMetricFamily("cpa_redis_pool_connections", "Redis pool connections by state",
                                  labels=["state"])
        conns.add_metric(["in_use"], pool.in_use)
        conns.add_metric(["idle"], pool.idle)
        yield conns
        yield GaugeMetricFamily("cpa_redis_pool_max_connections", "Redis pool size limit",
                                value=pool.max_connections)
        yield CounterMetricFamily("cpa_redis_pool_waits", "Connection requests that had to wait for a free "
                                  "connection", value=pool.waits)
        yield CounterMetricFamily("cpa_redis_pool_exhausted", "Connection requests that timed out waiting",
                                  value=pool.exhausted)


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    cum = h.cumulative()
    out = [(repr(float(b)), float(c)) for b, c in zip(h.bounds, cum, strict=False)]
    out.append(("+Inf", float(cum[-1])))
    return out
