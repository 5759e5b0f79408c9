"""Daemon CPU per collection cycle on one large PostgreSQL target, against postgres_exporter's CPU per scrape.

A background collector's cost is per cycle, scraped or not. The daemon (`pgwatch-cpa run`, a subprocess) watches
the benchmark catalog (bench/catalog.py, large: 2,000 tables, 6,000 indexes, ~4,850 statements) as a
pg_monitor-only role. It runs at a short interval with every collector's interval scaled by the same factor, so
each cycle carries the default 15 s mix (tables and indexes one cycle in 8, sizes one in 20, settings one in 4),
and Prometheus's one scrape per cycle is made. CPU is utime + stime of the process (/proc/PID/stat) over a
window, divided by the cycles it completed. A second window scrapes every 0.2 s while the cycles run and reports
the scrape latency. The reference in the same run: postgres_exporter (Debian's prometheus-postgres-exporter,
default collectors) scraped the same number of times on the same catalog, its CPU per scrape.

    python -m bench.bench_cycle_cpu [--window 60] [--interval 3]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.catalog import MONITOR_PASSWORD, MONITOR_ROLE, SHAPES, start_catalog
from pgwatch_cpa.collectors import POSTGRES_COLLECTORS
from pgwatch_cpa.sandbox import find_pg_builds, free_port

DEFAULT_INTERVAL = 15.0
TARGETS = {"cpu_ms_per_cycle": 40.0, "scrape_p99_ms": 10.0, "scrape_max_ms": 25.0}
EXPORTER = "/usr/bin/prometheus-postgres-exporter"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class Client:
    """Keep-alive HTTP; reconnects when the server closed an idle connection (the daemon does, after a while)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str) -> tuple[float, bytes]:
        try:
            return self._get(path)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return self._get(path)

    def _get(self, path: str) -> tuple[float, bytes]:
        started = time.perf_counter()
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path} answered {resp.status}")
        return time.perf_counter() - started, body


def metric(body: bytes, name: str) -> float:
    match = re.search(rb"^" + re.escape(name.encode()) + rb"(?:\{[^}]*\})? (\S+)$", body, re.MULTILINE)
    return float(match[1]) if match else 0.0


def wait_http(port: int, path: str, timeout: float = 60.0) -> Client:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = Client(port)
            client.get(path)
            return client
        except (OSError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def daemon_config(dsn: str, port: int, interval: float) -> dict:
    scale = interval / DEFAULT_INTERVAL
    collectors = {c.name: {"interval": f"{c.default_interval * scale:g}s"}
                  for c in POSTGRES_COLLECTORS if c.default_interval}
    return {"listen": f"127.0.0.1:{port}", "interval": f"{interval:g}s",
            "postgres": [{"name": "large", "dsn": dsn, "collectors": collectors}]}


def measure_daemon(dsn: str, interval: float, window: float, workdir: Path) -> dict[str, float]:
    port = free_port()
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(daemon_config(dsn, port, interval)))
    proc = subprocess.Popen([sys.executable, "-m", "pgwatch_cpa", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=(workdir / "daemon.log").open("w"))
    try:
        conn = wait_http(port, "/readyz")
        time.sleep(max(interval * 21, 10))  # every collector ran at least once: the slowest are 20 cycles apart
        _, body = conn.get("/metrics")
        cycles0, cpu0, t0 = metric(body, "pgwatch_connection_attempts_total"), cpu_seconds(proc.pid), time.monotonic()
        while time.monotonic() - t0 < window:  # one scrape per cycle, as Prometheus at the default interval
            time.sleep(interval)
            conn.get("/metrics")
        _, body = conn.get("/metrics")
        cycles = metric(body, "pgwatch_connection_attempts_total") - cycles0
        cpu = cpu_seconds(proc.pid) - cpu0
        latencies = []
        t1 = time.monotonic()
        while time.monotonic() - t1 < window / 2:
            latencies.append(conn.get("/metrics")[0])
            time.sleep(0.2)
        rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{proc.pid}/status").read_text())[1]) / 1024
        latencies.sort()
        return {"cycles": cycles, "cpu_ms_per_cycle": 1000 * cpu / max(cycles, 1), "rss_mib": rss,
                "series": float(sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))),
                "scrape_median_ms": 1000 * statistics.median(latencies),
                "scrape_p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
                "scrape_max_ms": 1000 * latencies[-1], "scrapes": float(len(latencies))}
    finally:
        proc.terminate()
        proc.wait(15)


def measure_exporter(dsn: str, scrapes: int) -> dict[str, float] | None:
    if not shutil.which(EXPORTER):
        return None
    port = free_port()
    env = {**os.environ, "DATA_SOURCE_NAME": dsn + ("&" if "?" in dsn else "?") + "sslmode=disable"}
    proc = subprocess.Popen([EXPORTER, f"--web.listen-address=127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = wait_http(port, "/metrics")
        conn.get("/metrics")
        cpu0 = cpu_seconds(proc.pid)
        walls = [conn.get("/metrics")[0] for _ in range(scrapes)]
        return {"cpu_ms_per_scrape": 1000 * (cpu_seconds(proc.pid) - cpu0) / scrapes,
                "scrape_median_ms": 1000 * statistics.median(walls)}
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=60.0, help="seconds of cycles measured")
    parser.add_argument("--interval", type=float, default=3.0, help="the daemon's interval (mix kept)")
    args = parser.parse_args()
    builds = find_pg_builds()
    pg, counts = start_catalog(builds[-1] if builds else None, SHAPES["large"])
    try:
        dsn = pg.dsn(MONITOR_ROLE, MONITOR_PASSWORD)
        print(f"PostgreSQL {pg.build.version if pg.build else '?'} large catalog: {counts}", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-cycle-") as tmp:
            ours = measure_daemon(dsn, args.interval, args.window, Path(tmp))
        theirs = measure_exporter(dsn, max(int(ours["cycles"]), 10))
    finally:
        pg.close()
    print(f"pgwatch-cpa: {ours['cpu_ms_per_cycle']:.1f} ms CPU per cycle over {ours['cycles']:.0f} cycles "
          f"(target <= {TARGETS['cpu_ms_per_cycle']:g}); {ours['series']:.0f} series; RSS {ours['rss_mib']:.0f} MiB")
    print(f"  scrapes while cycles run ({ours['scrapes']:.0f}): median {ours['scrape_median_ms']:.1f} ms, "
          f"p99 {ours['scrape_p99_ms']:.1f} ms (target <= {TARGETS['scrape_p99_ms']:g}), "
          f"worst {ours['scrape_max_ms']:.1f} ms (target <= {TARGETS['scrape_max_ms']:g})")
    if theirs is None:
        print(f"postgres_exporter: not installed ({EXPORTER}); no reference")
    else:
        print(f"postgres_exporter (default collectors): {theirs['cpu_ms_per_scrape']:.1f} ms CPU per scrape, "
              f"scrape median {theirs['scrape_median_ms']:.1f} ms; ratio ours/theirs "
              f"{ours['cpu_ms_per_cycle'] / max(theirs['cpu_ms_per_scrape'], 1e-9):.1f}x")


if __name__ == "__main__":
    main()
