"""The sustained request rate the workload holds with every scenario's p95 under the guide's 200 ms API target,
with the cache and without it.

    .venv/bin/python bench/bench_workload.py [--scale small] [--step-seconds 15] [--rates 50,100,200,...]

Sandbox PostgreSQL (newest build found; fsync off) seeded at ``--scale`` + sandbox Redis, on this machine. For
cache off, then cache on, the open-loop workload (Poisson arrivals, 5 % writes with their invalidations, pool of
20 connections, at most 256 requests in flight) runs each rate for ``--step-seconds``; latency counts from the
scheduled arrival (queueing included). A step passes when nothing is dropped or failed and every scenario's p95 is
under 200 ms. A mode stops after two failing steps in a row, then bisects (``--refine`` steps) between its highest
passing and lowest failing rate. "gen lag" is the generator's worst lateness against its schedule (the process
itself saturating; latency still counts from the schedule). The application tier (one asyncio process: generator,
query layer, cache client), PostgreSQL and Redis share the machine's cores, as in a one-box deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import psycopg

from pgwatch_cpa.cpa.seed import seed
from pgwatch_cpa.cpa.workload import READ_MIX, load_inventory, run_workload
from pgwatch_cpa.cpa.workload_stats import LatencyHistogram, WorkloadReport
from pgwatch_cpa.sandbox import PostgresSandbox, RedisSandbox

TARGET_MS = 200.0
DEFAULT_RATES = (50, 100, 200, 400, 800, 1200, 1600, 2000, 2500, 3000, 4000)


def _triple(h: LatencyHistogram) -> str:
    if not h.count:
        return f"{'-':>17}"
    p50, p95, p99 = (h.quantile(q) * 1000 for q in (0.5, 0.95, 0.99))  # type: ignore[operator]
    return f"{p50:5.1f}/{p95:5.1f}/{p99:5.0f}"


def _writes(report: WorkloadReport) -> LatencyHistogram:
    merged = LatencyHistogram()
    for s in report.scenarios.values():
        if s.kind == "write":
            merged.buckets.update(s.latency.buckets)
            merged.count += s.latency.count
            merged.sum += s.latency.sum
            merged.max = max(merged.max, s.latency.max)
    return merged


def _row(report: WorkloadReport) -> str:
    cells = [_triple(report.scenarios[name].latency) for name in READ_MIX]
    hit = report.cache.hit_ratio if report.cache else None
    return (f"{'on' if report.cache_enabled else 'off':>5} {report.rate:>6g} {report.offered_rate:>8.1f} "
            f"{report.achieved_rate:>8.1f} {report.dropped:>6} {report.failed:>5} "
            + " ".join(f"{c:>17}" for c in cells) + f" {_triple(_writes(report)):>17}"
            + f" {'-' if hit is None else f'{hit:.2f}':>5} {report.max_dispatch_lag * 1000:>6.0f}"
            + f" {'PASS' if report.meets(TARGET_MS) else 'fail':>5}")


def _header() -> str:
    names = [*READ_MIX, "writes (all 4)"]
    return (f"{'cache':>5} {'target':>6} {'offered':>8} {'achieved':>8} {'drops':>6} {'fail':>5} "
            + " ".join(f"{n[:17]:>17}" for n in names) + f" {'hit':>5} {'gen':>6} {'p95<':>5}\n"
            + f"{'':>5} {'req/s':>6} {'req/s':>8} {'req/s':>8} {'':>6} {'':>5} "
            + " ".join(f"{'p50/p95/p99 ms':>17}" for _ in names) + f" {'ratio':>5} {'lag ms':>6} {'200ms':>5}")


async def _mode(dsn: str, redis_url: str, cache: bool, rates: list[float], seconds: float,
                inventory, refine: int) -> list[WorkloadReport]:
    reports: list[WorkloadReport] = []

    async def step(rate: float) -> bool:
        report = await run_workload(dsn, redis_url, rate=rate, duration=seconds, cache=cache, seed=int(rate),
                                    app_instance=f"bench-{'cache' if cache else 'nocache'}", inventory=inventory,
                                    drain_timeout=30.0)
        reports.append(report)
        print(_row(report), flush=True)
        return report.meets(TARGET_MS)

    failures = 0
    for rate in rates:
        failures = 0 if await step(rate) else failures + 1
        if failures >= 2:
            break
    # bisect between the highest passing and the lowest failing rate above it (rounded to 50 req/s)
    for _ in range(refine):
        low = _best(reports)
        high = min((r.rate for r in reports if not r.meets(TARGET_MS) and (low is None or r.rate > low)),
                   default=None)
        if low is None or high is None:
            break
        mid = round((low + high) / 2 / 50) * 50
        if mid in (low, high):
            break
        await step(float(mid))
    return reports


def _best(reports: list[WorkloadReport]) -> float | None:
    passing = [r.rate for r in reports if r.meets(TARGET_MS)]
    return max(passing) if passing else None


async def main(args: argparse.Namespace) -> None:
    rates = [float(r) for r in args.rates.split(",")] if args.rates else list(DEFAULT_RATES)
    with PostgresSandbox() as pg, RedisSandbox() as rd:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE cpa")
        dsn = pg.dsn(dbname="cpa")
        started = time.monotonic()
        counts = await seed(dsn, args.scale, seed=42, progress=False)
        print(f"PostgreSQL {pg.build.version if pg.build else '?'} (fsync off), Redis-protocol server "
              f"{os.path.basename(str(rd.server))} {rd.version()}, {os.cpu_count()} CPUs; seeded {args.scale}: "
              f"{sum(counts.values()):,} rows in {time.monotonic() - started:.1f} s")
        inventory = await load_inventory(dsn)
        print(f"{len(inventory.orgs)} organizations; {args.step_seconds:g} s per step; 5 % writes; pool 20; "
              f"max in flight 256; target: every scenario p95 < {TARGET_MS:g} ms, no drops, no errors\n")
        print(_header(), flush=True)
        results = {}
        for cache in (False, True):
            results[cache] = await _mode(dsn, rd.url, cache, rates, args.step_seconds, inventory, args.refine)
        print()
        best_off, best_on = _best(results[False]), _best(results[True])
        for label, best in (("cache off", best_off), ("cache on", best_on)):
            print(f"highest sustained rate meeting the target, {label}: "
                  + (f"{best:g} req/s" if best else f"none of the tested rates (from {rates[0]:g})"))
        if best_off and best_on:
            print(f"cache effect: x{best_on / best_off:.2f} sustained rate")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="small", choices=("small", "medium"))
    parser.add_argument("--step-seconds", type=float, default=15.0)
    parser.add_argument("--refine", type=int, default=2, help="bisection steps after the ladder")
    parser.add_argument("--rates", default="", help="comma-separated req/s steps (default: 50..4000)")
    asyncio.run(main(parser.parse_args()))
