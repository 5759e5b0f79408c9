"""The application's request and query statistics, per operation, and its PostgreSQL pool's, for the stats snapshot.

    stats = QueryLayerStats()
    with recording(stats):                       # tasks created inside inherit it (a context variable)
        async with stats.measure_request("client_list"):      # one API request
            await queries.list_clients(pool, org_id)           # its queries record themselves (tenant_cursor)
    sections = app_sections(pool, stats)         # what the cache service publishes beside its own statistics

An API request is one handler run (the workload's scenarios); a query is one tenant-scoped transaction of the query
layer (:func:`pgwatch_cpa.cpa.queries.tenant_cursor`), timed from the moment it holds a connection, so pool waits
show in the pool's statistics and in the request's latency, not in the query's. Operations are names written in
the code (query functions, loaders, scenarios), never user input; past ``MAX_OPERATIONS`` (or not a valid
name) they count as ``other``. Errors are counted by kind only (ERROR_KINDS), never with their message.

The hot path bumps ints and one histogram bucket; no I/O, no lock (one event loop).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from pgwatch_cpa.cpa.cache.metrics import Histogram
from pgwatch_cpa.cpa.cache.stats import ERROR_KINDS, MAX_OPERATIONS, OPERATION_NAME, AppSections

# Resolve the guide's targets (query p95 100 ms, API p95 200 ms) with a bucket bound on each.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER_OPERATION = "other"

_CONNECTION_SQLSTATES = ("57P01", "57P02", "57P03")  # admin/crash shutdown, cannot connect now


def error_kind(exc: BaseException) -> str:
    """The bounded kind of a failed request or query (PoolTimeout and QueryCanceled are OperationalErrors too)."""
    if isinstance(exc, PoolTimeout):
        return "pool_timeout"
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return "statement_timeout"
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        if state is None or state.startswith("08") or state in _CONNECTION_SQLSTATES:
            return "connection"
    return "other"


class OperationStats:
    """One operation: calls started, errors by kind, latency of the calls that ran (failed ones included)."""

    __slots__ = ("calls", "errors", "latency")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.latency = Histogram(LATENCY_BUCKETS)

    def section(self) -> dict[str, Any]:
        return {"calls": self.calls, "errors": dict(self.errors),
                "latency": {"sum": self.latency.sum, "count": self.latency.count,
                            "buckets": self.latency.cumulative()}}


class QueryMeasure:
    """One query: counted when created; ``start()`` once it holds a connection (only started queries are timed)."""

    __slots__ = ("ops", "started_at")

    def __init__(self, ops: OperationStats | None) -> None:
        self.ops = ops
        self.started_at: float | None = None
        if ops is not None:
            ops.calls += 1

    def start(self) -> None:
        self.started_at = time.perf_counter()


class QueryLayerStats:
    """Requests and queries by operation, of one application instance."""

    def __init__(self) -> None:
        self.requests: dict[str, OperationStats] = {}
        self.queries: dict[str, OperationStats] = {}

    @asynccontextmanager
    async def measure_request(self, operation: str) -> AsyncIterator[None]:
        ops = _operation(self.requests, operation)
        ops.calls += 1
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            ops.errors[error_kind(exc)] += 1
            raise
        finally:
            ops.latency.observe(time.perf_counter() - started)

    @contextmanager
    def measure_query(self, operation: str) -> Iterator[QueryMeasure]:
        measure = QueryMeasure(_operation(self.queries, operation))
        try:
            yield measure
        except Exception as exc:
            _record_error(measure, exc)
            raise
        finally:
            _observe(measure)

    def section(self) -> dict[str, Any]:
        return {"latency_buckets": list(LATENCY_BUCKETS),
                "requests": {op: s.section() for op, s in self.requests.items()},
                "queries": {op: s.section() for op, s in self.queries.items()}}


def _operation(table: dict[str, OperationStats], operation: str) -> OperationStats:
    ops = table.get(operation)
    if ops is None:
        if len(table) >= MAX_OPERATIONS - 1 or not OPERATION_NAME.fullmatch(operation):
            operation = OTHER_OPERATION
        ops = table.setdefault(operation, OperationStats())
    return ops


def _record_error(measure: QueryMeasure, exc: Exception) -> None:
    if measure.ops is not None:
        measure.ops.errors[error_kind(exc)] += 1


def _observe(measure: QueryMeasure) -> None:
    if measure.ops is not None and measure.started_at is not None:
        measure.ops.latency.observe(time.perf_counter() - measure.started_at)


_CURRENT: ContextVar[QueryLayerStats | None] = ContextVar("cpa_query_layer_stats", default=None)


@contextmanager
def recording(stats: QueryLayerStats) -> Iterator[QueryLayerStats]:
    """Queries of this task, and of every task it creates inside the block, record into ``stats``."""
    token = _CURRENT.set(stats)
    try:
        yield stats
    finally:
        _CURRENT.reset(token)


@contextmanager
def measure_query(operation: str) -> Iterator[QueryMeasure]:
    """The query layer's hook: records into the current stats, or counts nothing when none is recording."""
    stats = _CURRENT.get()
    if stats is None:
        yield QueryMeasure(None)
        return
    with stats.measure_query(operation) as measure:
        yield measure


def pool_section(pool: AsyncConnectionPool) -> dict[str, float]:
    """psycopg_pool's get_stats() as the snapshot's ``pg_pool`` section (counters cumulative since the pool opened).

    ``timeouts`` is psycopg_pool's ``requests_errors``: waits that failed, i.e. timeouts (and cancelled waits;
    ``max_waiting`` is not set, so no request is refused for a full queue).
    """
    raw = pool.get_stats()
    size, idle = raw.get("pool_size", 0), raw.get("pool_available", 0)
    return {"min": raw.get("pool_min", 0), "max": raw.get("pool_max", 0), "size": size, "idle": idle,
            "in_use": max(0, size - idle), "waiting": raw.get("requests_waiting", 0),
            "requests": raw.get("requests_num", 0), "queued": raw.get("requests_queued", 0),
            "wait_seconds": raw.get("requests_wait_ms", 0) / 1000, "timeouts": raw.get("requests_errors", 0),
            "connection_errors": raw.get("connections_errors", 0)}


def app_sections(pool: AsyncConnectionPool, stats: QueryLayerStats) -> AppSections:
    """The snapshot sections of one application instance (see cpa.cache.stats): pool and query layer."""
    return {"pg_pool": pool_section(pool), "query_layer": stats.section()}
