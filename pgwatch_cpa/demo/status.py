"""The demo's status line: what the daemon exports, summed up every few seconds against the guide's targets.

    status: 19.8 req/s | p95 api 41 ms (<200) query 6 ms (<100) | cache hit 97.2% (>90%) | pg pool 2/8 | firing: none

Read from the daemon's own /metrics and /alerts (what Prometheus and on-call see), as the change between two
reads: rates and p95s cover the last period, not the whole run. A figure with no traffic in the period is "-".
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from pgwatch_cpa.alerts.promql.quantile import bucket_quantile

API_TARGET_S, QUERY_TARGET_S, CACHE_HIT_TARGET = 0.2, 0.1, 0.9  # the guide's p95 and hit-rate targets

REQUESTS = "cpa_request_duration_seconds"
QUERIES = "cpa_db_query_duration_seconds"
CACHE_REQUESTS = "cpa_cache_requests_total"
POOL_CONNECTIONS = "cpa_pg_pool_connections"  # by state; in_use is what the line shows
POOL_MAX = "cpa_pg_pool_max_connections"


@dataclass
class Sample:
    """The sums the line needs from one /metrics read (every label but ``le`` summed away)."""

    at: float
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # histogram -> upper bound -> count
    cache: dict[str, float] = field(default_factory=dict)  # result -> lookups
    gauges: dict[str, float] = field(default_factory=dict)


def read_sample(text: str, at: float) -> Sample:
    sample = Sample(at)
    buckets: dict[str, defaultdict[float, float]] = {name: defaultdict(float) for name in (REQUESTS, QUERIES)}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_bucket") and s.name[:-7] in buckets:
                buckets[s.name[:-7]][float(s.labels["le"])] += s.value
            elif s.name == CACHE_REQUESTS:
                result = s.labels.get("result", "")
                sample.cache[result] = sample.cache.get(result, 0.0) + s.value
            elif s.name == POOL_MAX or (s.name == POOL_CONNECTIONS and s.labels.get("state") == "in_use"):
                sample.gauges[s.name] = sample.gauges.get(s.name, 0.0) + s.value
    sample.buckets = {name: dict(b) for name, b in buckets.items() if b}
    return sample


def p95(buckets: Mapping[float, float]) -> float | None:
    """Prometheus's histogram_quantile(0.95, ...) over cumulative bucket counts; None without observations."""
    if not buckets:
        return None
    value = bucket_quantile(0.95, list(buckets.items()))
    return None if math.isnan(value) else value


def _delta(new: Mapping[float, float], old: Mapping[float, float]) -> dict[float, float]:
    return {bound: max(0.0, count - old.get(bound, 0.0)) for bound, count in new.items()}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def status_line(new: Sample, old: Sample, firing: Iterable[str]) -> str:
    """One line comparing the period between two samples with the guide's targets."""
    period = max(new.at - old.at, 1e-9)
    requests = _delta(new.buckets.get(REQUESTS, {}), old.buckets.get(REQUESTS, {}))
    queries = _delta(new.buckets.get(QUERIES, {}), old.buckets.get(QUERIES, {}))
    rate = "-" if not requests else f"{max(requests.values()) / period:.1f}"
    lookups = {k: v - old.cache.get(k, 0.0) for k, v in new.cache.items()}
    total = sum(lookups.values())
    hit = "-" if total <= 0 else f"{100 * lookups.get('hit', 0.0) / total:.1f}%"
    pool = "-"
    if POOL_MAX in new.gauges:
        pool = f"{new.gauges.get(POOL_CONNECTIONS, 0.0):.0f}/{new.gauges[POOL_MAX]:.0f}"
    names = sorted(set(firing))
    return (f"status: {rate} req/s | p95 api {_ms(p95(requests))} (<{API_TARGET_S * 1000:.0f}) "
            f"query {_ms(p95(queries))} (<{QUERY_TARGET_S * 1000:.0f}) | cache hit {hit} "
            f"(>{CACHE_HIT_TARGET:.0%}) | pg pool {pool} | firing: {', '.join(names) if names else 'none'}")


def firing_alerts(api_alerts: Mapping[str, object]) -> list[str]:
    """Alert names in the firing state from /alerts (Prometheus's /api/v1/alerts shape)."""
    data = api_alerts.get("data")
    alerts = data.get("alerts", []) if isinstance(data, Mapping) else []
    return [str(a["labels"]["alertname"]) for a in alerts
            if isinstance(a, Mapping) and a.get("state") == "firing" and isinstance(a.get("labels"), Mapping)]
