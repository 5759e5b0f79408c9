"""The demo's status line reads real exposition text (prometheus_client's) and compares periods, not totals."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pgwatch_cpa.demo.status import (
    CACHE_REQUESTS,
    POOL_CONNECTIONS,
    POOL_MAX,
    QUERIES,
    REQUESTS,
    firing_alerts,
    read_sample,
    status_line,
)

BUCKETS = (0.05, 0.1, 0.2, 0.5)


class App:
    """A registry holding the families the daemon exports, under their exported names."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(REQUESTS.removesuffix("_seconds") + "_seconds", "api", ["app_instance"],
                                  buckets=BUCKETS, registry=self.registry)
        self.queries = Histogram(QUERIES, "db", ["app_instance", "operation"], buckets=BUCKETS,
                                 registry=self.registry)
        self.cache = Counter(CACHE_REQUESTS.removesuffix("_total"), "cache", ["app_instance", "result"],
                             registry=self.registry)
        self.pool = Gauge(POOL_CONNECTIONS, "by state", ["app_instance", "state"], registry=self.registry)
        self.max = Gauge(POOL_MAX, "max", ["app_instance"], registry=self.registry)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def test_a_period_is_the_change_between_two_reads() -> None:
    app = App()
    for _ in range(1000):  # an old, slow period that must not count
        app.requests.labels("a").observe(0.45)
    app.cache.labels("a", "miss").inc(1000)
    before = read_sample(app.text(), at=100.0)
    for i in range(100):  # the period: 100 requests over 10 s, 90 fast, 10 between 0.1 and 0.2
        app.requests.labels("a" if i % 2 else "b").observe(0.03 if i < 90 else 0.15)
        app.queries.labels("a", "dashboard").observe(0.07)
    app.cache.labels("a", "hit").inc(95)
    app.cache.labels("a", "miss").inc(5)
    app.pool.labels("a", "in_use").set(3)
    app.pool.labels("b", "in_use").set(2)
    app.pool.labels("a", "idle").set(5)
    app.max.labels("a").set(8)
    app.max.labels("b").set(8)
    line = status_line(read_sample(app.text(), at=110.0), before, ["CpaPgPoolSaturated", "RedisDown"])
    # api p95 = rank 95 of 100: 5 of the 10 in (0.1, 0.2] -> 0.1 + 0.1 * 5/10 = 150 ms; query: 0.05 + 0.05 * 95/100
    assert line == ("status: 10.0 req/s | p95 api 150 ms (<200) query 98 ms (<100) | cache hit 95.0% (>90%) | "
                    "pg pool 5/16 | firing: CpaPgPoolSaturated, RedisDown")


def test_no_traffic_shows_dashes_not_zeros() -> None:
    app = App()
    sample = read_sample(app.text(), at=1.0)
    line = status_line(read_sample(app.text(), at=11.0), sample, [])
    assert line == "status: - req/s | p95 api - (<200) query - (<100) | cache hit - (>90%) | pg pool - | firing: none"
    app.requests.labels("a")  # a family without traffic in the period: 0 req/s, no p95
    sample = read_sample(app.text(), at=1.0)
    assert status_line(read_sample(app.text(), at=11.0), sample, []).startswith("status: 0.0 req/s | p95 api - ")


def test_firing_alerts_reads_the_api_shape() -> None:
    body = {"status": "success", "data": {"alerts": [
        {"labels": {"alertname": "A"}, "state": "firing"},
        {"labels": {"alertname": "B"}, "state": "pending"},
        {"state": "firing"},
    ]}}
    assert firing_alerts(body) == ["A"]
