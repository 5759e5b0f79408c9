"""How fast the daemon notices a fault of a monitored server and its recovery: the figures of the README's
"Reliability and security" section.

A real `pgwatch-cpa run` (interval 1 s, statement_timeout 1 s, Redis timeout 1 s) watches a sandbox PostgreSQL
and Redis. Each fault is repeated and timed from the moment it is made to the moment /metrics shows it
(polled every 50 ms): PostgreSQL frozen (SIGSTOP of every process of the cluster) and thawed (SIGCONT),
PostgreSQL stopped and started again, Redis stopped and started again.

    python -m bench.bench_recovery [--trials 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from pgwatch_cpa.sandbox import PostgresSandbox, RedisSandbox, free_port

INTERVAL = 1.0


class Daemon:
    def __init__(self, pg: PostgresSandbox, rd: RedisSandbox, workdir: Path) -> None:
        self.port = free_port()
        config = {"listen": f"127.0.0.1:{self.port}", "interval": f"{INTERVAL:g}s",
                  "postgres": [{"name": "pg", "dsn": pg.dsn(), "statement_timeout": "1s", "connect_timeout": "1s"}],
                  "redis": [{"name": "rd", "url": rd.url, "timeout": "1s"}]}
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = (workdir / "daemon.log").open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "pgwatch_cpa", "run", "--config", str(path)],
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def up(self, metric: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return None
        return next((s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == metric),
                    None)

    def seconds_until(self, metric: str, value: float, started: float, timeout: float = 60.0) -> float:
        while time.monotonic() - started < timeout:
            if self.up(metric) == value:
                return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"{metric} did not become {value:g} within {timeout:g} s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)
        self.log.close()


def cluster_pids(postmaster: int) -> list[int]:
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def trial(daemon: Daemon, metric: str, fault: Callable[[], object],
          repair: Callable[[], object]) -> tuple[float, float]:
    daemon.seconds_until(metric, 1.0, time.monotonic())
    time.sleep(INTERVAL * 1.5)  # connections reused, as in steady state
    started = time.monotonic()
    fault()
    try:
        detected = daemon.seconds_until(metric, 0.0, started)
    finally:
        started = time.monotonic()
        repair()  # even when the fault went unnoticed: never leave a frozen or stopped server behind
    recovered = daemon.seconds_until(metric, 1.0, started)
    print(f"  {metric}: 0 after {detected:.2f} s, 1 again after {recovered:.2f} s", flush=True)
    return detected, recovered


def freeze(pg: PostgresSandbox, into: list[int]) -> list[int]:
    assert pg.pid is not None
    into[:] = cluster_pids(pg.pid)
    return into


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        os.kill(pid, sig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"PostgreSQL frozen (SIGSTOP/SIGCONT)": [],
                                                     "PostgreSQL stopped/started": [], "Redis stopped/started": []}
    with PostgresSandbox() as pg, RedisSandbox() as rd, tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(pg, rd, Path(tmp))
        try:
            for _ in range(args.trials):
                frozen: list[int] = []  # every process of the cluster at the time of the fault (backends included)
                results["PostgreSQL frozen (SIGSTOP/SIGCONT)"].append(trial(
                    daemon, "pg_up", lambda f=frozen: signal_all(freeze(pg, f), signal.SIGSTOP),
                    lambda f=frozen: signal_all(f, signal.SIGCONT)))
                results["PostgreSQL stopped/started"].append(trial(daemon, "pg_up", pg.stop, pg.start_again))
                results["Redis stopped/started"].append(trial(daemon, "redis_up", rd.stop, rd.start_again))
        finally:
            daemon.stop()
    print(f"interval {INTERVAL:g} s, {args.trials} trials each; seconds from the fault (or the repair) to /metrics")
    for name, pairs in results.items():
        down, up = [p[0] for p in pairs], [p[1] for p in pairs]
        print(f"{name}: down after median {statistics.median(down):.2f} s (max {max(down):.2f}), "
              f"up again after median {statistics.median(up):.2f} s (max {max(up):.2f})")


if __name__ == "__main__":
    main()
