"""The cache stats snapshot each application instance publishes to Redis, and its validating parser.

Where (both keys written in one pipeline every ``stats_interval`` seconds):

    cpa:stats:instance:<app_instance>   the JSON snapshot below, PX = 3 x interval: a dead instance's key expires
    cpa:stats:instances                 sorted set, member app_instance, score published_at; lets a collector find
                                        instances without SCAN (a score range, then MGET; the daemon's collector
                                        reads the last hour's members and skips snapshot keys that expired).
                                        Members older than 10 x interval are pruned by every publisher. No TTL,
                                        so volatile-* eviction never drops it.

Snapshot schema, version 1 (every counter is cumulative since ``started_at``; a smaller value or a new
``started_at`` means the instance restarted, like a Prometheus counter reset):

    {
      "schema": "cpa-cache-stats",
      "version": 1,
      "app_instance": "web-1",              [A-Za-z0-9][A-Za-z0-9_.-]{0,127}
      "pid": 1234,
      "started_at": 1732590000.0,           unix seconds
      "published_at": 1732590042.5,         unix seconds
      "interval_seconds": 5.0,
      "breaker": {"state": "closed" | "open" | "half_open", "opens": 0},
      "maxmemory_policy": "volatile-lru" | null,   as last read from the server (null: unknown)
      "latency_buckets": [0.0001, ..., 1.0],       upper bounds (seconds); +Inf implied
      "families": {
        "<family>": {                       every family of families.FAMILIES, always present
          "requests": {"hit": 0, "miss": 0, "stale": 0, "error": 0},
          "loads": 0, "load_errors": 0, "fail_opens": 0, "tenant_mismatches": 0,
          "latency": {"sum": 0.0, "count": 0, "buckets": [c0, ..., cN]},   cumulative, len = len(latency_buckets)+1,
                                                                         last == count
          "value_bytes": {"sum": 0, "count": 0}
        }, ...
      },
      "invalidations": {"org": 0, "family": 0, "event": 0, "key": 0, "scan": 0, "failed": 0},
      "pool": {"in_use": 0, "idle": 0, "max": 50, "waits": 0, "exhausted": 0},

      -- optional sections (a minor addition: older snapshots lack them, older readers ignore them); present
         when the application gives the service its PostgreSQL pool and query-layer statistics
         (pgwatch_cpa.cpa.query_stats.app_sections):
      "pg_pool": {                          psycopg_pool's get_stats(), counters cumulative since the pool opened
        "min": 2, "max": 20, "size": 20,    configured bounds; connections open now (in use + idle)
        "idle": 18, "in_use": 2, "waiting": 0,       requests waiting for a connection now
        "requests": 0, "queued": 0,         connection requests; those that had to wait
        "wait_seconds": 0.0,                total time requests waited
        "timeouts": 0,                      waits that failed (PoolTimeout, or cancelled while waiting)
        "connection_errors": 0              failed attempts to open a connection
      },
      "query_layer": {
        "latency_buckets": [0.005, ..., 10.0],       upper bounds (seconds); +Inf implied
        "requests": {"<operation>": OP, ...},        API requests (handler runs), by operation
        "queries": {"<operation>": OP, ...}          query-layer transactions, by operation (timed from the
                                                      moment they hold a connection)
      }
      where OP = {"calls": 0, "errors": {"pool_timeout": 0, "statement_timeout": 0, "connection": 0, "other": 0},
                  "latency": {"sum": 0.0, "count": 0, "buckets": [c0, ..., cN]}}   as the families' latency
      and <operation> matches [a-z][a-z0-9_]{0,63}, at most 64 per table.

Readers must ignore unknown fields (later minor additions) and reject another ``version``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from typing import Any, TypedDict

import orjson

from pgwatch_cpa.cpa.cache.metrics import INVALIDATION_KINDS, LATENCY_BUCKETS, RESULTS, CacheStats, PoolView
from pgwatch_cpa.cpa.snapshot_envelope import open_envelope

SCHEMA = "cpa-cache-stats"
VERSION = 1
INSTANCE_KEY_PREFIX = "cpa:stats:instance:"
INDEX_KEY = "cpa:stats:instances"
TTL_PERIODS = 3  # a snapshot outlives its publisher by this many periods
PRUNE_PERIODS = 10  # index members older than this many periods are removed

_INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_FAMILY_COUNTERS = ("loads", "load_errors", "fail_opens", "tenant_mismatches")
_POOL_FIELDS = ("in_use", "idle", "max", "waits", "exhausted")
_BREAKER_STATES = ("closed", "open", "half_open")
_PG_POOL_COUNTS = ("min", "max", "size", "idle", "in_use", "waiting", "requests", "queued", "timeouts",
                   "connection_errors")
ERROR_KINDS = ("pool_timeout", "statement_timeout", "connection", "other")
OPERATION_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_OPERATIONS = 64



class AppSections(TypedDict, total=False):
    """The application's optional sections, as documented above (built by pgwatch_cpa.cpa.query_stats)."""

    pg_pool: dict[str, float]
    query_layer: dict[str, Any]


AppStatsProvider = Callable[[], AppSections]  # called at every publish; must not block (no I/O)


class SnapshotError(ValueError):
    """The bytes are not a valid version-1 snapshot; the message says which field."""


def validate_instance(app_instance: str) -> str:
    if not isinstance(app_instance, str) or not _INSTANCE.fullmatch(app_instance):
        raise ValueError(f"app_instance must match {_INSTANCE.pattern}")
    return app_instance


def instance_key(app_instance: str) -> str:
    return INSTANCE_KEY_PREFIX + validate_instance(app_instance)


# ---------------------------------------------------------------- build


def build_snapshot(*, stats: CacheStats, pool: PoolView, app_instance: str, pid: int, started_at: float,
                   published_at: float, interval: float, breaker_state: str, breaker_opens: int,
                   maxmemory_policy: str | None, app: AppSections | None = None) -> dict[str, Any]:
    families = {}
    for name, fs in stats.families.items():
        families[name] = {
            "requests": dict(fs.requests),
            "loads": fs.loads, "load_errors": fs.load_errors, "fail_opens": fs.fail_opens,
            "tenant_mismatches": fs.tenant_mismatches,
            "latency": {"sum": fs.latency.sum, "count": fs.latency.count, "buckets": fs.latency.cumulative()},
            "value_bytes": {"sum": int(fs.value_bytes.sum), "count": fs.value_bytes.count},
        }
    return {
        "schema": SCHEMA, "version": VERSION, "app_instance": app_instance, "pid": pid,
        "started_at": started_at, "published_at": published_at, "interval_seconds": interval,
        "breaker": {"state": breaker_state, "opens": breaker_opens},
        "maxmemory_policy": maxmemory_policy,
        "latency_buckets": list(LATENCY_BUCKETS),
        "families": families,
        "invalidations": dict(stats.invalidations),
        "pool": {"in_use": pool.in_use, "idle": pool.idle, "max": pool.max_connections, "waits": pool.waits,
                 "exhausted": pool.exhausted},
        **(app or {}),
    }


def dump_snapshot(snapshot: dict[str, Any]) -> bytes:
    return orjson.dumps(snapshot)


# ---------------------------------------------------------------- parse


def parse_snapshot(data: bytes | str) -> dict[str, Any]:
    """Decode and validate a snapshot; returns a dict holding exactly the schema's fields.

    Raises SnapshotError naming the first bad field. Unknown extra fields are dropped, not rejected.
    """
    doc = open_envelope(data, SCHEMA, VERSION, SnapshotError)
    instance = doc.get("app_instance")
    if not isinstance(instance, str) or not _INSTANCE.fullmatch(instance):
        raise SnapshotError("app_instance is missing or malformed")
    bounds = _float_list(doc, "latency_buckets")
    families, invalidations, pool = _obj(doc, "families"), _obj(doc, "invalidations"), _obj(doc, "pool")
    return {
        "schema": SCHEMA, "version": VERSION, "app_instance": instance,
        "pid": _count(doc, "pid"),
        "started_at": _time(doc, "started_at"), "published_at": _time(doc, "published_at"),
        "interval_seconds": _positive(doc, "interval_seconds"),
        "breaker": _breaker(_obj(doc, "breaker")),
        "maxmemory_policy": _optional_str(doc, "maxmemory_policy"),
        "latency_buckets": bounds,
        "families": {name: _family(_obj(families, name, "families"), f"families.{name}", len(bounds))
                     for name in families},
        "invalidations": {k: _count(invalidations, k, "invalidations") for k in INVALIDATION_KINDS},
        "pool": {k: _count(pool, k, "pool") for k in _POOL_FIELDS},
        **_optional_sections(doc),
    }


def _optional_sections(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "pg_pool" in doc:
        pg_pool = _obj(doc, "pg_pool")
        out["pg_pool"] = {**{k: _count(pg_pool, k, "pg_pool") for k in _PG_POOL_COUNTS},
                          "wait_seconds": _nonneg(pg_pool, "wait_seconds", "pg_pool")}
    if "query_layer" in doc:
        layer = _obj(doc, "query_layer")
        bounds = _float_list(layer, "latency_buckets", "query_layer")
        out["query_layer"] = {"latency_buckets": bounds,
                              **{table: _operations(_obj(layer, table, "query_layer"), f"query_layer.{table}",
                                                    len(bounds)) for table in ("requests", "queries")}}
    return out


def _operations(doc: dict[str, Any], path: str, n_bounds: int) -> dict[str, Any]:
    if len(doc) > MAX_OPERATIONS:
        raise SnapshotError(f"{path} has more than {MAX_OPERATIONS} operations")
    out = {}
    for name in doc:
        if not OPERATION_NAME.fullmatch(name):
            raise SnapshotError(f"{path} has a malformed operation name")
        where = f"{path}.{name}"
        op = _obj(doc, name, path)
        errors = _obj(op, "errors", where)
        out[name] = {"calls": _count(op, "calls", where),
                     "errors": {k: _count(errors, k, f"{where}.errors") for k in ERROR_KINDS},
                     "latency": _latency(_obj(op, "latency", where), f"{where}.latency", n_bounds)}
    return out


def _family(doc: dict[str, Any], path: str, n_bounds: int) -> dict[str, Any]:
    requests = _obj(doc, "requests", path)
    latency = _latency(_obj(doc, "latency", path), f"{path}.latency", n_bounds)
    sizes = _obj(doc, "value_bytes", path)
    return {
        "requests": {r: _count(requests, r, f"{path}.requests") for r in RESULTS},
        **{c: _count(doc, c, path) for c in _FAMILY_COUNTERS},
        "latency": latency,
        "value_bytes": {"sum": _count(sizes, "sum", f"{path}.value_bytes"),
                        "count": _count(sizes, "count", f"{path}.value_bytes")},
    }


def _latency(doc: dict[str, Any], path: str, n_bounds: int) -> dict[str, Any]:
    buckets = doc.get("buckets")
    if (not isinstance(buckets, list) or len(buckets) != n_bounds + 1
            or not all(type(b) is int and b >= 0 for b in buckets)
            or any(a > b for a, b in itertools.pairwise(buckets))):
        raise SnapshotError(f"{path}.buckets must be {n_bounds + 1} non-decreasing counts")
    count = _count(doc, "count", path)
    if buckets[-1] != count:
        raise SnapshotError(f"{path}.buckets[-1] must equal {path}.count")
    return {"sum": _nonneg(doc, "sum", path), "count": count, "buckets": buckets}


def _breaker(doc: dict[str, Any]) -> dict[str, Any]:
    if doc.get("state") not in _BREAKER_STATES:
        raise SnapshotError(f"breaker.state must be one of {_BREAKER_STATES}")
    return {"state": doc["state"], "opens": _count(doc, "opens", "breaker")}


def _where(key: str, path: str) -> str:
    return f"{path}.{key}" if path else key


def _obj(doc: dict[str, Any], key: str, path: str = "") -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise SnapshotError(f"{_where(key, path)} must be an object")
    return value


def _count(doc: dict[str, Any], key: str, path: str = "") -> int:
    value = doc.get(key)
    if type(value) is not int or value < 0:
        raise SnapshotError(f"{_where(key, path)} must be a non-negative integer")
    return value


def _nonneg(doc: dict[str, Any], key: str, path: str = "") -> float:
    value = doc.get(key)
    if (type(value) is not int and type(value) is not float) or not math.isfinite(value) or value < 0:
        raise SnapshotError(f"{_where(key, path)} must be a non-negative number")
    return float(value)


def _time(doc: dict[str, Any], key: str) -> float:
    return _nonneg(doc, key)


def _positive(doc: dict[str, Any], key: str) -> float:
    value = _nonneg(doc, key)
    if value <= 0:
        raise SnapshotError(f"{key} must be positive")
    return value


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise SnapshotError(f"{key} must be a string or null")
    return value


def _float_list(doc: dict[str, Any], key: str, path: str = "") -> list[float]:
    value = doc.get(key)
    if (not isinstance(value, list) or not value
            or not all(type(v) in (int, float) and math.isfinite(v) and v > 0 for v in value)
            or any(a >= b for a, b in itertools.pairwise(value))):
        raise SnapshotError(f"{_where(key, path)} must be a non-empty increasing list of positive numbers")
    return [float(v) for v in value]
