"""Benchmark the daemon on the PostgreSQL benchmark catalog (BENCHMARK-CATALOG.md), PG 15 and 18, large and small.

For each server and shape: build the catalog, run ``pgwatch-cpa run`` as a subprocess connected as a
pg_monitor-only role, then measure

- /metrics scrape wall time: 2 warm-ups, then 20 timed scrapes over loopback with a keep-alive HTTP client;
- database execution time per collection cycle: reset the monitoring role's pg_stat_statements rows, let the
  daemon run a window of cycles, sum total_exec_time of that role, divide by the cycles completed. The daemon
  runs with a short interval (default 3 s) so the window holds many cycles; the per-cycle cost does not depend
  on the interval. The size collectors (every 300 s) are measured in a second window where they run every
  cycle and amortised onto a 15 s cycle (x 15/300). tables and indexes run every 60 s by default: the first
  window runs them every cycle too, so their cost is counted in full (an overestimate, x 4);
- series in /metrics, and the daemon's RSS from /proc/PID/status.

    python -m bench.bench_postgres [--shapes large small] [--window 45] [--interval 3]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import yaml

from bench.catalog import MONITOR_PASSWORD, MONITOR_ROLE, SHAPES, start_catalog
from pgwatch_cpa.sandbox import PgBuild, PostgresSandbox, find_pg_builds, free_port

TARGETS = {"median_ms": 5.0, "p99_ms": 15.0, "db_ms_per_cycle": 25.0, "series": 25_000, "rss_mib": 80.0}
SLOW_COLLECTORS = ("database_size", "table_size")  # every 300 s; settings (60 s, <1 ms) runs in both windows
CYCLE = 15.0  # the default interval the DB cost is reported for
SLOW_EVERY = 300.0  # the default interval of the size collectors


def scrape(conn: http.client.HTTPConnection) -> tuple[float, bytes]:
    started = time.perf_counter()
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    body = resp.read()
    elapsed = time.perf_counter() - started
    if resp.status != 200:
        raise RuntimeError(f"/metrics answered {resp.status}")
    return elapsed, body


def metric_value(body: bytes, name: str) -> float:
    match = re.search(rb"^" + re.escape(name.encode()) + rb"(?:\{[^}]*\})? (\S+)$", body, re.MULTILINE)
    return float(match[1]) if match else 0.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class DaemonProcess:
    def __init__(self, pg: PostgresSandbox, interval: float, slow_every_cycle: bool, workdir: Path) -> None:
        self.port = free_port()
        target: dict[str, object] = {"name": "bench", "dsn": pg.dsn(MONITOR_ROLE, MONITOR_PASSWORD)}
        every_cycle = ("tables", "indexes", *(SLOW_COLLECTORS if slow_every_cycle else ()))
        target["collectors"] = {name: {"interval": f"{interval}s"} for name in every_cycle}
        config = {"listen": f"127.0.0.1:{self.port}", "interval": f"{interval}s", "log_level": "warning",
                  "postgres": [target]}
        path = workdir / f"config-{self.port}.yaml"
        path.write_text(yaml.safe_dump(config))
        exe = Path(sys.executable).with_name("pgwatch-cpa")
        self.process = subprocess.Popen([str(exe), "run", "--config", str(path)], stdin=subprocess.DEVNULL)
        self.http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def wait_cycles(self, cycles: int, timeout: float = 120.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}")
            try:
                _elapsed, body = scrape(self.http)
                if metric_value(body, "pgwatch_connection_attempts_total") >= cycles:
                    return body
            except (OSError, http.client.HTTPException):
                self.http.close()
            time.sleep(0.2)
        raise RuntimeError("daemon did not complete its cycles in time")

    def cycles(self) -> float:
        return metric_value(scrape(self.http)[1], "pgwatch_connection_attempts_total")

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def db_cost_per_cycle(pg: PostgresSandbox, daemon: DaemonProcess, window: float) -> tuple[float, float]:
    """(milliseconds of execution per cycle, cycles in the window) for the monitoring role."""
    with psycopg.connect(pg.dsn(), autocommit=True) as su:
        oid = su.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (MONITOR_ROLE,)).fetchone()[0]
        start_cycles = daemon.cycles()
        su.execute("SELECT pg_stat_statements_reset(%s::oid)", (oid,))
        time.sleep(window)
        end_cycles = daemon.cycles()
        total_ms = su.execute("SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements WHERE userid = %s",
                              (oid,)).fetchone()[0]
    cycles = max(1.0, end_cycles - start_cycles)
    return float(total_ms) / cycles, cycles


def bench_one(build: PgBuild, shape_name: str, window: float, interval: float, workdir: Path) -> dict[str, float]:
    pg, counts = start_catalog(build, SHAPES[shape_name])  # started: not a `with` (that would start another)
    try:
        daemon = DaemonProcess(pg, interval, slow_every_cycle=False, workdir=workdir)
        try:
            daemon.wait_cycles(3)
            times, body = [], b""
            for i in range(22):
                elapsed, body = scrape(daemon.http)
                if i >= 2:
                    times.append(elapsed * 1000)
            times.sort()
            series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            fast_ms, fast_cycles = db_cost_per_cycle(pg, daemon, window)
            rss = rss_mib(daemon.process.pid)
            render = metric_value(body, "pgwatch_render_duration_seconds_sum") / max(
                1.0, metric_value(body, "pgwatch_render_duration_seconds_count"))
        finally:
            daemon.stop()
        daemon = DaemonProcess(pg, interval, slow_every_cycle=True, workdir=workdir)
        try:
            daemon.wait_cycles(2)
            all_ms, all_cycles = db_cost_per_cycle(pg, daemon, window)
            rss = max(rss, rss_mib(daemon.process.pid))
        finally:
            daemon.stop()
    finally:
        pg.close()
    slow_ms = max(0.0, all_ms - fast_ms)
    return {
        **counts, "median_ms": statistics.median(times), "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))],
        "max_ms": times[-1], "series": series, "fast_ms": fast_ms, "fast_cycles": fast_cycles, "all_ms": all_ms,
        "all_cycles": all_cycles, "db_ms_per_cycle": fast_ms + slow_ms * CYCLE / SLOW_EVERY, "rss_mib": rss,
        "render_ms": render * 1000,
    }


def verdict(key: str, value: float) -> str:
    return "ok" if value <= TARGETS[key] else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["large", "small"], choices=sorted(SHAPES))
    parser.add_argument("--majors", nargs="+", type=int, default=[15, 18])
    parser.add_argument("--window", type=float, default=45.0, help="seconds per DB-cost window (default 45)")
    parser.add_argument("--interval", type=float, default=3.0, help="daemon interval during the run (default 3)")
    args = parser.parse_args()
    builds = {b.major: b for b in find_pg_builds()}
    missing = [m for m in args.majors if m not in builds]
    if missing:
        print(f"PostgreSQL {missing} not available: {sorted(builds)}", file=sys.stderr)
        return 2
    print(f"pgwatch-cpa PostgreSQL benchmark: daemon interval {args.interval:g}s, DB-cost window {args.window:g}s "
          f"x2 per run (fast collectors; then with the slow ones every cycle), {os.cpu_count()} CPUs")
    print("DB ms/15s cycle = every collector except the sizes, each run every cycle (tables/indexes are 60 s by "
          "default: counted x4) + the sizes' cost x 15/300")
    header = (f"{'server':<8}{'shape':<7}{'tables':>7}{'idx':>6}{'stmts':>6}{'median ms':>10}{'p99 ms':>8}"
              f"{'series':>8}{'DB ms/cycle':>12}{'(fast':>7}{' all)':>7}{'RSS MiB':>9}{'render ms':>10}")
    failed = False
    with tempfile.TemporaryDirectory(prefix="pgwatch-bench-") as tmp:
        print(header)
        for major in args.majors:
            for shape in args.shapes:
                r = bench_one(builds[major], shape, args.window, args.interval, Path(tmp))
                print(f"{'PG ' + builds[major].version:<8}{shape:<7}{r['tables']:>7.0f}{r['indexes']:>6.0f}"
                      f"{r['statements']:>6.0f}{r['median_ms']:>10.2f}{r['p99_ms']:>8.2f}{r['series']:>8.0f}"
                      f"{r['db_ms_per_cycle']:>12.2f}{r['fast_ms']:>7.2f}{r['all_ms']:>7.1f}{r['rss_mib']:>9.1f}"
                      f"{r['render_ms']:>10.1f}", flush=True)
                misses = [k for k in TARGETS if verdict(k, r[k]) != "ok"]
                if misses:
                    failed = True
                    print(f"    MISSED: {', '.join(f'{k}={r[k]:.2f} (target {TARGETS[k]:g})' for k in misses)}")
    print("targets: scrape median <= 5 ms, p99 <= 15 ms; DB <= 25 ms per 15 s cycle; series <= 25,000; "
          "RSS <= 80 MiB")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
