"""Benchmark the daemon on the PostgreSQL benchmark catalog (BENCHMARK-CATALOG.md), PG 15 and 18, large and small.

For each server and shape: build the catalog, run ``pgwatch-cpa run`` as a subprocess connected as a
pg_monitor-only role, then measure

- /metrics scrape wall time: 2 warm-ups, then 20 timed scrapes over loopback with a keep-alive HTTP client;
- database execution time per collection cycle: reset the monitoring role's pg_stat_statements rows, let the
  daemon run a window of cycles, sum total_exec_time of that role, divide by the cycles completed. The daemon
  runs with a short interval (default 3 s) so the window holds many cycles; the per-cycle cost does not depend
  on the interval. Collectors run on three default intervals (every cycle; 120 s: tables, indexes; 300 s: the
  sizes; settings keeps its 60 s throughout): three windows run 1, 2 and 3 of those classes every cycle, and
  the differences are amortised onto the default 15 s cycle (x 15/120, x 15/300);
- series in /metrics, the daemon's RSS from /proc/PID/status, and the mean evaluation time of the shipped
  alerts.yml over the catalog's series (pgwatch_alert_evaluation_duration_seconds).

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

TARGETS = {"median_ms": 5.0, "p99_ms": 15.0, "db_ms_per_cycle": 25.0, "series": 25_000, "rss_mib": 80.0,
           "eval_ms": 20.0}
MINUTE_COLLECTORS = ("tables", "indexes")  # default interval 120 s
SLOW_COLLECTORS = ("database_size", "table_size")  # default interval 300 s
CYCLE = 15.0  # the default interval the DB cost is reported for
MINUTE_EVERY, SLOW_EVERY = 120.0, 300.0
ROOT = Path(__file__).resolve().parents[1]


def scrape(conn: http.client.HTTPConnection) -> tuple[float, bytes]:
    """One timed GET /metrics; once more on a new connection if the daemon closed the idle keep-alive one."""
    try:
        return _timed_get(conn)
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        conn.close()
        return _timed_get(conn)


def _timed_get(conn: http.client.HTTPConnection) -> tuple[float, bytes]:
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
    """``pgwatch-cpa run`` with the shipped alerts.yml, some collectors forced to every cycle, some disabled."""

    def __init__(self, pg: PostgresSandbox, interval: float, workdir: Path, every_cycle: tuple[str, ...] = (),
                 disabled: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        target: dict[str, object] = {"name": "bench", "dsn": pg.dsn(MONITOR_ROLE, MONITOR_PASSWORD)}
        target["collectors"] = {**{name: {"interval": f"{interval}s"} for name in every_cycle},
                                **{name: {"enabled": False} for name in disabled}}
        config = {"listen": f"127.0.0.1:{self.port}", "interval": f"{interval}s", "log_level": "warning",
                  "postgres": [target], "alerting": {"rules": [str(ROOT / "alerts.yml")]}}
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


def window_cost(pg: PostgresSandbox, interval: float, window: float, workdir: Path, **collectors) -> float:
    daemon = DaemonProcess(pg, interval, workdir, **collectors)
    try:
        daemon.wait_cycles(2)
        return db_cost_per_cycle(pg, daemon, window)[0]
    finally:
        daemon.stop()


def bench_one(build: PgBuild, shape_name: str, window: float, interval: float, workdir: Path) -> dict[str, float]:
    pg, counts = start_catalog(build, SHAPES[shape_name])  # started: not a `with` (that would start another)
    try:
        # Scrapes, series, RSS and rule evaluation with every collector's series present.
        daemon = DaemonProcess(pg, interval, workdir, every_cycle=MINUTE_COLLECTORS + SLOW_COLLECTORS)
        try:
            daemon.wait_cycles(3)
            times, body = [], b""
            for i in range(22):
                elapsed, body = scrape(daemon.http)
                if i >= 2:
                    times.append(elapsed * 1000)
            times.sort()
            series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            all_ms, cycles = db_cost_per_cycle(pg, daemon, window)
            body = scrape(daemon.http)[1]
            rss = rss_mib(daemon.process.pid)
            render = metric_value(body, "pgwatch_render_duration_seconds_sum") / max(
                1.0, metric_value(body, "pgwatch_render_duration_seconds_count"))
            evaluation = metric_value(body, "pgwatch_alert_evaluation_duration_seconds_sum") / max(
                1.0, metric_value(body, "pgwatch_alert_evaluation_duration_seconds_count"))
        finally:
            daemon.stop()
        # Each interval class's cost from the difference of windows, amortised onto the default 15 s cycle.
        fast_ms = window_cost(pg, interval, window, workdir, disabled=MINUTE_COLLECTORS + SLOW_COLLECTORS)
        minute_ms = window_cost(pg, interval, window, workdir, every_cycle=MINUTE_COLLECTORS,
                                disabled=SLOW_COLLECTORS)
    finally:
        pg.close()
    per_cycle = (fast_ms + max(0.0, minute_ms - fast_ms) * CYCLE / MINUTE_EVERY
                 + max(0.0, all_ms - minute_ms) * CYCLE / SLOW_EVERY)
    return {
        **counts, "median_ms": statistics.median(times), "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))],
        "max_ms": times[-1], "series": series, "fast_ms": fast_ms, "minute_ms": minute_ms, "all_ms": all_ms,
        "cycles": cycles, "db_ms_per_cycle": per_cycle, "rss_mib": rss, "render_ms": render * 1000,
        "eval_ms": evaluation * 1000,
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
    print(f"pgwatch-cpa PostgreSQL benchmark: daemon interval {args.interval:g}s, DB-cost windows of "
          f"{args.window:g}s, shipped alerts.yml evaluated in-process, {os.cpu_count()} CPUs")
    print("DB ms per default 15 s cycle = fast collectors + (120 s collectors) x 15/120 + (300 s collectors) x "
          "15/300, each class measured in its own window with it run every cycle")
    header = (f"{'server':<9}{'shape':<7}{'tables':>7}{'idx':>6}{'stmts':>6}{'median ms':>10}{'p99 ms':>8}"
              f"{'series':>8}{'DB ms/cycle':>12}{'(fast':>7}{' +120s':>7}{' +300s)':>8}{'RSS MiB':>9}"
              f"{'render ms':>10}{'eval ms':>9}")
    failed = False
    with tempfile.TemporaryDirectory(prefix="pgwatch-bench-") as tmp:
        print(header)
        for major in args.majors:
            for shape in args.shapes:
                r = bench_one(builds[major], shape, args.window, args.interval, Path(tmp))
                print(f"{'PG ' + builds[major].version:<9}{shape:<7}{r['tables']:>7.0f}{r['indexes']:>6.0f}"
                      f"{r['statements']:>6.0f}{r['median_ms']:>10.2f}{r['p99_ms']:>8.2f}{r['series']:>8.0f}"
                      f"{r['db_ms_per_cycle']:>12.2f}{r['fast_ms']:>7.2f}{r['minute_ms']:>7.1f}{r['all_ms']:>8.1f}"
                      f"{r['rss_mib']:>9.1f}{r['render_ms']:>10.1f}{r['eval_ms']:>9.2f}", flush=True)
                misses = [k for k in TARGETS if verdict(k, r[k]) != "ok"]
                if misses:
                    failed = True
                    print(f"    MISSED: {', '.join(f'{k}={r[k]:.2f} (target {TARGETS[k]:g})' for k in misses)}")
    print("targets: scrape median <= 5 ms, p99 <= 15 ms; DB <= 25 ms per 15 s cycle; series <= 25,000; "
          "RSS <= 80 MiB; rule evaluation <= 20 ms per cycle")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
