"""The snapshot's optional application sections (pg_pool, query_layer): built, validated, named when bad."""

from __future__ import annotations

import orjson
import pytest

from pgwatch_cpa.cpa.cache import stats
from pgwatch_cpa.cpa.cache.metrics import CacheStats
from pgwatch_cpa.cpa.query_stats import MAX_OPERATIONS, QueryLayerStats, error_kind


class _RedisPool:
    in_use, idle, max_connections, waits, exhausted = 0, 1, 10, 0, 0


PG_POOL = {"min": 2, "max": 20, "size": 5, "idle": 3, "in_use": 2, "waiting": 1, "requests": 40, "queued": 6,
           "wait_seconds": 1.25, "timeouts": 1, "connection_errors": 0}


def _snapshot(app: stats.AppSections | None) -> dict:
    return stats.build_snapshot(stats=CacheStats(), pool=_RedisPool(), app_instance="web-1", pid=1, started_at=1.0,
                                published_at=2.0, interval=5.0, breaker_state="closed", breaker_opens=0,
                                maxmemory_policy=None, app=app)


def _layer() -> QueryLayerStats:
    layer = QueryLayerStats()
    with layer.measure_query("list_clients") as measure:
        measure.start()
    with pytest.raises(ValueError), layer.measure_query("list_clients"):
        raise ValueError("never a label")
    return layer


def test_sections_round_trip() -> None:
    snap = _snapshot({"pg_pool": PG_POOL, "query_layer": _layer().section()})
    parsed = stats.parse_snapshot(stats.dump_snapshot(snap))
    assert parsed["pg_pool"] == PG_POOL
    op = parsed["query_layer"]["queries"]["list_clients"]
    assert op["calls"] == 2 and op["errors"]["other"] == 1
    assert op["latency"]["count"] == 1, "only the query that held a connection is timed"
    assert parsed["query_layer"]["requests"] == {}


def test_old_snapshots_without_the_sections_stay_valid() -> None:
    parsed = stats.parse_snapshot(stats.dump_snapshot(_snapshot(None)))
    assert "pg_pool" not in parsed and "query_layer" not in parsed


def _broken(path: list, value: object) -> bytes:
    snap = _snapshot({"pg_pool": dict(PG_POOL), "query_layer": _layer().section()})
    target = snap
    for p in path[:-1]:
        target = target[p]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return orjson.dumps(snap)


@pytest.mark.parametrize(("path", "value", "named"), [
    (["pg_pool"], [], "pg_pool must be an object"),
    (["pg_pool", "in_use"], -1, "pg_pool.in_use"),
    (["pg_pool", "timeouts"], KeyError, "pg_pool.timeouts"),
    (["pg_pool", "wait_seconds"], float("nan"), "pg_pool.wait_seconds"),
    (["query_layer", "latency_buckets"], [0.1, 0.05], "query_layer.latency_buckets"),
    (["query_layer", "queries", "list_clients", "calls"], 1.5, "query_layer.queries.list_clients.calls"),
    (["query_layer", "queries", "list_clients", "errors", "pool_timeout"], KeyError,
     "query_layer.queries.list_clients.errors.pool_timeout"),
    (["query_layer", "queries", "list_clients", "latency", "buckets"], [0], "query_layer.queries.list_clients.latency"),
    (["query_layer", "queries", "Bad Name"], {}, "malformed operation name"),
    (["query_layer", "requests"], KeyError, "query_layer.requests"),
])
def test_bad_fields_are_named(path: list, value: object, named: str) -> None:
    with pytest.raises(stats.SnapshotError, match=named.replace(".", r"\.")):
        stats.parse_snapshot(_broken(path, value))


def test_operations_are_bounded_with_a_slot_for_other() -> None:
    layer = QueryLayerStats()
    for i in range(MAX_OPERATIONS + 10):
        with layer.measure_query(f"op_{i}"):
            pass
    with layer.measure_query("Not A Name"):
        pass
    assert len(layer.queries) == MAX_OPERATIONS
    assert layer.queries["other"].calls == 12
    stats.parse_snapshot(orjson.dumps(_snapshot({"query_layer": layer.section()})))


def test_error_kinds() -> None:
    import psycopg
    from psycopg_pool import PoolTimeout

    assert error_kind(PoolTimeout("x")) == "pool_timeout"
    assert error_kind(psycopg.errors.QueryCanceled("x")) == "statement_timeout"
    assert error_kind(psycopg.OperationalError("connection lost")) == "connection"
    assert error_kind(psycopg.errors.LockNotAvailable("x")) == "other"
    assert error_kind(ValueError("x")) == "other"
