"""Archiver throughput (rows/s) and the workload's p95 while it runs, against the same workload without it.

    .venv/bin/python bench/bench_archive.py [--old-audit-rows 200000] [--rate 100] [--batch-size 1000]

Sandbox PostgreSQL (newest build found; fsync off) seeded ``small`` plus ``--old-audit-rows`` audit logs 100-400
days old (due for archiving), and a sandbox Redis for the caching service. In one process, the open-loop workload
(Poisson arrivals at ``--rate``, 5 % writes, cache on) warms up, runs alone for ``--baseline-seconds``, then runs
again while the archiver archives every policy to a local directory (file://, gzip exports fsynced); it stops when
the archiver is done. p95 is over every read request of each window (latency from the scheduled arrival, queueing
included). PostgreSQL, Redis and this process share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import psycopg

from pgwatch_cpa.cpa.archive.archiver import archive
from pgwatch_cpa.cpa.seed import seed
from pgwatch_cpa.cpa.workload import load_inventory, run_workload
from pgwatch_cpa.cpa.workload_stats import LatencyHistogram, WorkloadReport
from pgwatch_cpa.sandbox import PostgresSandbox, RedisSandbox


def reads(report: WorkloadReport) -> LatencyHistogram:
    merged = LatencyHistogram()
    for s in report.scenarios.values():
        if s.kind == "read":
            merged.buckets.update(s.latency.buckets)
            merged.count += s.latency.count
            merged.sum += s.latency.sum
            merged.max = max(merged.max, s.latency.max)
    return merged


def p95_ms(report: WorkloadReport) -> float:
    value = reads(report).quantile(0.95)
    return float("nan") if value is None else value * 1000


def plant_old_audit_logs(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO audit_logs (id, organization_id, entity_type, entity_id, action, changes, ip_address,
                                    created_at)
            SELECT 'bench_audit_' || g, 'org_' || (1 + g %% 20), 'client', 'client_' || (1 + g %% 1000), 'update',
                   jsonb_build_object('field', 'status', 'old', 'active', 'new', 'inactive'), '10.0.0.1',
                   now() - interval '100 days' - (g %% 300) * interval '1 day'
              FROM generate_series(1, %s) g""", [rows])
        conn.execute("VACUUM (ANALYZE) audit_logs")


async def main(args: argparse.Namespace) -> None:
    with PostgresSandbox() as pg, RedisSandbox() as rd, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE cpa")
        dsn = pg.dsn(dbname="cpa")
        counts = await seed(dsn, "small", seed=42, progress=False)
        plant_old_audit_logs(dsn, args.old_audit_rows)
        inventory = await load_inventory(dsn)
        print(f"PostgreSQL {pg.build.version if pg.build else '?'} (fsync off), {os.cpu_count()} CPUs; seeded small "
              f"({sum(counts.values()):,} rows) + {args.old_audit_rows:,} audit logs due for archiving; workload "
              f"{args.rate:g} req/s, 5 % writes, cache on; batch size {args.batch_size}", flush=True)

        async def workload(seconds: float | None, stop: asyncio.Event | None, seed_: int) -> WorkloadReport:
            return await run_workload(dsn, rd.url, rate=args.rate, duration=seconds, stop=stop, seed=seed_,
                                      inventory=inventory, app_instance="bench-archive", drain_timeout=30.0)

        await workload(args.warmup_seconds, None, 1)
        baseline = await workload(args.baseline_seconds, None, 2)

        stop = asyncio.Event()
        during_task = asyncio.create_task(workload(None, stop, 3))
        started = time.monotonic()
        report = await archive(dsn, Path(tmp).as_uri(), batch_size=args.batch_size)
        elapsed = time.monotonic() - started
        stop.set()
        during = await during_task

        rows = sum(r.rows for r in report.results)
        size = sum(r.bytes for r in report.results)
        print(f"\n{'policy':<11} {'rows':>9} {'batches':>8} {'export bytes':>13}")
        for r in report.results:
            print(f"{r.policy:<11} {r.rows:>9,} {r.batches:>8,} {r.bytes:>13,}")
        print(f"\narchived {rows:,} rows in {elapsed:.1f} s: {rows / elapsed:,.0f} rows/s "
              f"({size / elapsed / 1e6:.2f} MB/s of gzip exports), failures: {report.failed}")
        print(f"workload read p95: {p95_ms(baseline):.1f} ms alone ({args.baseline_seconds:g} s, "
              f"{baseline.achieved_rate:.0f} req/s achieved), {p95_ms(during):.1f} ms while archiving "
              f"({elapsed:.0f} s, {during.achieved_rate:.0f} req/s achieved); ratio "
              f"{p95_ms(during) / p95_ms(baseline):.2f}; drops {baseline.dropped}/{during.dropped}, "
              f"failures {baseline.failed}/{during.failed}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-audit-rows", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--warmup-seconds", type=float, default=10.0)
    parser.add_argument("--baseline-seconds", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))
