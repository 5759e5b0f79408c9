"""One daemon carrying a fleet: 100 PostgreSQL databases and 10 Redis targets at the default 15 s interval.

Fleet: two PostgreSQL sandbox clusters, each holding 50 databases with the CPA schema at the small seed scale (a seeded
template, cloned), watched as one target per cluster that discovers its databases (the instance-wide
collectors run once per cluster, the per-database ones database by database); ten Redis sandboxes with cache
keys of every family. The daemon (`pgwatch-cpa run`, a subprocess, pg_monitor-only role) runs for a window
after every collector ran once; a Prometheus-like client scrapes every second meanwhile.

Printed: the daemon's CPU as a share of one core over the window, its RSS, the most connections it held on
each cluster (pg_stat_activity), the cycle time of each target (pgwatch_cycle_duration_seconds, sampled at
every scrape: p50/p99 per target, then the worst of those), cycles that overran their interval
(pgwatch_cycle_overruns_total) and the /metrics latency while cycles run.

    python -m bench.bench_fleet [--window 120] [--databases 50] [--redis 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

import psycopg
import redis
import yaml
from psycopg import sql

from bench.bench_cycle_cpu import cpu_seconds, wait_http
from pgwatch_cpa.cpa.schema.migrate import migrate_sync
from pgwatch_cpa.cpa.seed import seed
from pgwatch_cpa.sandbox import PostgresSandbox, RedisSandbox, find_pg_builds, free_port

TARGETS = {"cpu_share": 0.25, "rss_mib": 150.0, "connections_per_cluster": 2, "scrape_median_ms": 20.0}
INTERVAL = 15.0
CLUSTERS = 2
MONITOR_ROLE, MONITOR_PASSWORD = "fleet_monitor", "fleet-monitor-pw"
TEMPLATE = "cpa_template"


def prepare_cluster(pg: PostgresSandbox, databases: int, offset: int) -> None:
    """A migrated CPA template seeded at the small scale (~30k rows), cloned into ``databases`` databases."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(MONITOR_ROLE), sql.Literal(MONITOR_PASSWORD)))
        conn.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(MONITOR_ROLE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    migrate_sync(pg.dsn(dbname=TEMPLATE))
    asyncio.run(seed(pg.dsn(dbname=TEMPLATE), scale="small", progress=False))
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for i in range(databases):
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(f"cpa_{offset + i:03d}"), sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(TEMPLATE)))


def prepare_redis(url: str) -> None:
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"cpa:org:{i % 20}:dashboard:{i}", b"x" * 64, ex=3600)
    pipe.execute()


def daemon_config(port: int, clusters: list[PostgresSandbox], redis_urls: list[str]) -> dict:
    return {
        "listen": f"127.0.0.1:{port}", "interval": f"{INTERVAL:g}s",
        "postgres": [{"name": f"cluster{n + 1}", "dsn": pg.dsn(MONITOR_ROLE, MONITOR_PASSWORD),
                      "discover": {"include": "cpa_.*"}} for n, pg in enumerate(clusters)],
        "redis": [{"name": f"redis{n + 1}", "url": url} for n, url in enumerate(redis_urls)],
    }


def connections(pg: PostgresSandbox) -> int:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", [MONITOR_ROLE]).fetchone()
    return int(row[0]) if row else 0


def samples(body: bytes, name: str) -> dict[str, float]:
    """target label -> value of a per-target metric."""
    found = {}
    for match in re.finditer(rb"^" + re.escape(name.encode()) + rb"\{([^}]*)\} (\S+)$", body, re.MULTILINE):
        target = re.search(rb'target="([^"]*)"', match[1])
        if target:
            found[target[1].decode()] = float(match[2])
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(clusters: list[PostgresSandbox], redis_urls: list[str], window: float, workdir: Path) -> dict:
    port = free_port()
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(daemon_config(port, clusters, redis_urls)))
    proc = subprocess.Popen([sys.executable, "-m", "pgwatch_cpa", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=(workdir / "daemon.log").open("w"))
    try:
        client = wait_http(port, "/readyz", timeout=120)
        time.sleep(INTERVAL * 2)  # the first cycles (discovery, first connections) are behind us
        _, body = client.get("/metrics")
        overruns0 = samples(body, "pgwatch_cycle_overruns_total")
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        cycle_times: dict[str, list[float]] = defaultdict(list)
        scrapes: list[float] = []
        peak = [0] * len(clusters)
        while time.monotonic() - t0 < window:
            elapsed, body = client.get("/metrics")
            scrapes.append(elapsed)
            for target, seconds in samples(body, "pgwatch_cycle_duration_seconds").items():
                cycle_times[target].append(seconds)
            if len(scrapes) % 5 == 0:
                peak = [max(p, connections(pg)) for p, pg in zip(peak, clusters, strict=True)]
            time.sleep(1.0)
        wall, cpu = time.monotonic() - t0, cpu_seconds(proc.pid) - cpu0
        overruns = samples(body, "pgwatch_cycle_overruns_total")
        rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{proc.pid}/status").read_text())[1]) / 1024
        return {"cpu_share": cpu / wall, "rss_mib": rss, "connections": peak, "cycle_times": cycle_times,
                "overruns": sum(overruns.values()) - sum(overruns0.values()), "scrapes": scrapes,
                "series": sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))}
    finally:
        proc.terminate()
        proc.wait(30)


def report(result: dict, databases: int) -> None:
    scrapes = sorted(result["scrapes"])
    print(f"daemon CPU {100 * result['cpu_share']:.1f}% of one core (target <= {100 * TARGETS['cpu_share']:.0f}%), "
          f"RSS {result['rss_mib']:.0f} MiB (target <= {TARGETS['rss_mib']:.0f}) with {result['series']:,} series")
    print(f"connections held per cluster (peak): {result['connections']} "
          f"(target <= {TARGETS['connections_per_cluster']}); {databases} databases per cluster")
    print("cycle time per target (s, sampled at each scrape):")
    worst_p99 = 0.0
    for target, values in sorted(result["cycle_times"].items()):
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        worst_p99 = max(worst_p99, p99)
        print(f"  {target:10s} p50 {p50:7.3f}  p99 {p99:7.3f}")
    print(f"worst target p99 {worst_p99:.3f} s against the {INTERVAL:g} s interval; overruns in the window: "
          f"{result['overruns']:.0f}")
    print(f"/metrics while cycles run ({len(scrapes)} scrapes): median {1000 * statistics.median(scrapes):.1f} ms "
          f"(target <= {TARGETS['scrape_median_ms']:g}), p99 {1000 * percentile(scrapes, 0.99):.1f} ms, "
          f"worst {1000 * scrapes[-1]:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=120.0)
    parser.add_argument("--databases", type=int, default=50, help="databases per cluster (2 clusters)")
    parser.add_argument("--redis", type=int, default=10)
    args = parser.parse_args()
    builds = find_pg_builds()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        started = time.monotonic()
        clusters = [stack.enter_context(PostgresSandbox(build=builds[0] if builds else None,
                                                        settings={"max_connections": "50"}))
                    for _ in range(CLUSTERS)]
        for n, pg in enumerate(clusters):
            prepare_cluster(pg, args.databases, n * args.databases)
        redis_urls = [stack.enter_context(RedisSandbox()).url for _ in range(args.redis)]
        for url in redis_urls:
            prepare_redis(url)
        print(f"fleet: {CLUSTERS} PostgreSQL clusters x {args.databases} CPA databases, {args.redis} Redis "
              f"(built in {time.monotonic() - started:.0f} s); window {args.window:g} s at {INTERVAL:g} s; "
              f"{os.cpu_count()} CPUs", flush=True)
        result = measure(clusters, redis_urls, args.window, Path(tmp))
    report(result, args.databases)


if __name__ == "__main__":
    main()
