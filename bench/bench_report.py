"""Benchmark the PostgreSQL side of the performance report on the benchmark catalog (BENCHMARK-CATALOG.md).

Builds the catalog (``python -m bench.catalog large`` shape by default: 2,000 tables, 6,000 indexes, ~4,850
statements) on the newest PostgreSQL found (or ``--pg-major``), then runs ``postgres_target_report`` as the
catalog's pg_monitor-only role, once to warm up and ``--runs`` times measured, and prints

- wall time per report (median, min, max), from the call to the returned TargetReport;
- database time per report: the monitoring role's rows of pg_stat_statements are reset before the measured
  runs and summed after them (total_exec_time of top-level statements; the role runs nothing else here),
  divided by the runs; also the number of statements one report runs;
- the findings of the last report, in all and per kind.

Figures only, no assertion.

    python -m bench.bench_report [--shape large|small] [--pg-major 18] [--runs 5] [--query-text]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter

import psycopg

from bench.catalog import MONITOR_PASSWORD, MONITOR_ROLE, SHAPES, start_catalog
from pgwatch_cpa.config import PostgresTarget, settings_from_mapping
from pgwatch_cpa.report.model import TargetReport
from pgwatch_cpa.report.postgres import postgres_target_report
from pgwatch_cpa.sandbox import PostgresSandbox, find_pg_builds

HOST_MEMORY = 16 * 1024**3  # a typical database host, for the size-based setting advice

_ROLE_STATS = """
SELECT coalesce(sum(s.total_exec_time) FILTER (WHERE s.toplevel), 0),
       coalesce(sum(s.calls) FILTER (WHERE s.toplevel), 0)
FROM pg_stat_statements AS s JOIN pg_roles AS r ON r.oid = s.userid WHERE r.rolname = %s
"""


def role_stats(pg: PostgresSandbox) -> tuple[float, float]:
    """(total execution ms, calls) of the monitoring role's top-level statements."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        ms, calls = conn.execute(_ROLE_STATS, (MONITOR_ROLE,)).fetchone()
    return float(ms), float(calls)


def reset_role(pg: PostgresSandbox) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset(userid => (SELECT oid FROM pg_roles WHERE rolname = %s))",
                     (MONITOR_ROLE,))


def measure(target: PostgresTarget, runs: int) -> tuple[list[float], TargetReport]:
    walls = []
    last = None
    for _ in range(runs):
        started = time.perf_counter()
        last = asyncio.run(postgres_target_report(target, host_memory_bytes=HOST_MEMORY))
        walls.append(time.perf_counter() - started)
    assert last is not None
    return walls, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="large", choices=sorted(SHAPES))
    parser.add_argument("--pg-major", type=int, default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--query-text", action="store_true", help="also read statement text (query_text: true)")
    args = parser.parse_args()
    builds = [b for b in find_pg_builds() if args.pg_major in (None, b.major)]
    if not builds:
        print(f"no PostgreSQL build{f' {args.pg_major}' if args.pg_major else ''} found", file=sys.stderr)
        return 2
    pg, counts = start_catalog(builds[0], SHAPES[args.shape])
    try:
        raw = {"name": "bench", "dsn": pg.dsn(MONITOR_ROLE, MONITOR_PASSWORD), "query_text": args.query_text}
        target = settings_from_mapping({"postgres": [raw]}, {}).postgres[0]
        print(f"PostgreSQL {pg.build.version if pg.build else '?'}, {args.shape} catalog: {counts['tables']:.0f} "
              f"tables, {counts['indexes']:.0f} indexes, {counts['statements']:.0f} statements "
              f"(built in {counts['build_seconds']:.1f} s); query_text {'on' if args.query_text else 'off'}")
        measure(target, 1)  # warm-up: catalog caches, connection set-up paths
        reset_role(pg)
        before_ms, before_calls = role_stats(pg)
        walls, report = measure(target, args.runs)
        after_ms, after_calls = role_stats(pg)
        db_ms = (after_ms - before_ms) / args.runs
        per_report = (after_calls - before_calls) / args.runs
        kinds = Counter(f.kind for f in report.findings)
        print(f"wall per report: median {statistics.median(walls) * 1000:.0f} ms, min {min(walls) * 1000:.0f} ms, "
              f"max {max(walls) * 1000:.0f} ms ({args.runs} runs)")
        print(f"database time per report: {db_ms:.1f} ms over {per_report:.0f} statements "
              "(pg_stat_statements, the monitoring role's top-level statements)")
        print(f"findings: {len(report.findings)} ({report.status}): "
              + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        print(f"summary: total_queries {report.summary['total_queries']}, slow_query_count "
              f"{report.summary['slow_query_count']}, cache_hit_ratio {report.summary['cache_hit_ratio']}, "
              f"tables {report.summary['tables']}, indexes {report.summary['indexes']}, "
              f"databases_failed {report.summary['databases_failed']}")
    finally:
        pg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
