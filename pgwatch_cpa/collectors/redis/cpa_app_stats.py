"""The application's PostgreSQL pool and query-layer statistics, from the optional sections of its stats snapshot.

The cpa_cache_stats collector reads the snapshots (one MGET for every instance) and hands each one here; a snapshot
without these sections (an older application, or one that does not publish them) exports nothing from here.
Labels: app_instance, operation (names written in the application's code, at most 64 per instance), kind (a fixed
set). Pool metrics follow the cpa_redis_pool_* family of the same snapshot.
"""

from __future__ import annotations

from typing import Any

from pgwatch_cpa.collectors.metric_set import MetricSet

Labels = dict[str, str]


def export_app_sections(snap: dict[str, Any], instance: Labels, out: MetricSet) -> None:
    if "pg_pool" in snap:
        _export_pg_pool(snap["pg_pool"], instance, out)
    if "query_layer" in snap:
        layer = snap["query_layer"]
        _export_requests(layer["latency_buckets"], layer["requests"], instance, out)
        _export_queries(layer["latency_buckets"], layer["queries"], instance, out)


def _export_pg_pool(pool: dict[str, Any], labels: Labels, out: MetricSet) -> None:
    for state in ("in_use", "idle"):
        out.gauge("cpa_pg_pool_connections", "The application's psycopg_pool connections, by state.", pool[state],
                  {**labels, "state": state})
    out.gauge("cpa_pg_pool_size", "Connections the application's PostgreSQL pool holds open (in use and idle).",
              pool["size"], labels)
    out.gauge("cpa_pg_pool_min_connections", "The application's PostgreSQL pool minimum size.", pool["min"], labels)
    out.gauge("cpa_pg_pool_max_connections", "The application's PostgreSQL pool size limit.", pool["max"], labels)
    out.gauge("cpa_pg_pool_waiting_requests", "Requests waiting for a PostgreSQL pool connection now.",
              pool["waiting"], labels)
    out.counter("cpa_pg_pool_requests_total", "Connection requests made to the PostgreSQL pool.", pool["requests"],
                labels)
    out.counter("cpa_pg_pool_queued_requests_total", "Connection requests that had to wait for a free connection.",
                pool["queued"], labels)
    out.counter("cpa_pg_pool_wait_seconds_total", "Time connection requests spent waiting for the PostgreSQL pool.",
                pool["wait_seconds"], labels)
    out.counter("cpa_pg_pool_timeouts_total", "Connection requests that failed waiting (PoolTimeout after the "
                "pool's timeout, or cancelled while waiting).", pool["timeouts"], labels)
    out.counter("cpa_pg_pool_connection_errors_total", "Failed attempts of the pool to open a PostgreSQL "
                "connection.", pool["connection_errors"], labels)


def _export_requests(bounds: list[float], ops: dict[str, Any], instance: Labels, out: MetricSet) -> None:
    for operation, op in ops.items():
        labels = {**instance, "operation": operation}
        out.counter("cpa_requests_total", "API requests handled by the application, by operation.", op["calls"],
                    labels)
        for kind, count in op["errors"].items():
            out.counter("cpa_request_errors_total", "API requests that failed, by operation and kind.", count,
                        {**labels, "kind": kind})
        latency = op["latency"]
        out.histogram("cpa_request_duration_seconds", "API request latency in the application (handler time).",
                      bounds, latency["buckets"], latency["sum"], labels)


def _export_queries(bounds: list[float], ops: dict[str, Any], instance: Labels, out: MetricSet) -> None:
    for operation, op in ops.items():
        labels = {**instance, "operation": operation}
        out.counter("cpa_db_queries_total", "Query-layer transactions started, by operation (pool timeouts "
                    "included).", op["calls"], labels)
        for kind, count in op["errors"].items():
            out.counter("cpa_db_errors_total", "Query-layer transactions that failed, by operation and kind.", count,
                        {**labels, "kind": kind})
        latency = op["latency"]
        out.histogram("cpa_db_query_duration_seconds", "Query-layer transaction latency, from holding a connection "
                      "to commit.", bounds, latency["buckets"], latency["sum"], labels)
