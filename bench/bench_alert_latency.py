"""Time from a threshold crossing in PostgreSQL to the webhook request arriving, over repeated trials.

A sandbox PostgreSQL with max_connections = 20 is watched by a real `pgwatch-cpa run` (interval 2 s) with the
shipped PostgresConnectionsHigh rule and `for` set to 5 s (the shipped 5 m would make 20 trials take hours; the
bound scales with it). Each trial opens connections past 80% of the usable slots and waits for the firing
notification at a local webhook receiver, then closes them and waits for the resolve. Bound per the issue:
one collection interval + for + 1 s.

    python -m bench.bench_alert_latency [--trials 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg
import yaml

from pgwatch_cpa.demo.sink import WebhookSink
from pgwatch_cpa.sandbox import PostgresSandbox, free_port

ROOT = Path(__file__).resolve().parents[1]
INTERVAL, FOR = 2.0, 5.0
RULE = "PostgresConnectionsHigh"


def _wait(sink: WebhookSink, status: str, after: float, timeout: float = 120.0) -> float:
    """Arrival time (time.time()) of the first `status` notification of RULE at or after `after`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event := sink.first(RULE, status, after):
            return event.at
        time.sleep(0.02)
    raise RuntimeError(f"no {status} notification within {timeout}s")


def rules_file(workdir: Path) -> Path:
    doc = yaml.safe_load((ROOT / "alerts.yml").read_text())
    rule = next(dict(r, **{"for": f"{FOR:g}s"}) for g in doc["groups"] for r in g["rules"] if r["alert"] == RULE)
    path = workdir / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "bench", "rules": [rule]}]}))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    # The demo's webhook sink, quiet, stamping arrivals with the wall clock the trials use.
    with WebhookSink(printer=lambda line: None, clock=time.time).serve_in_thread() as sink, \
            tempfile.TemporaryDirectory(prefix="pgwatch-bench-") as tmp, \
            PostgresSandbox(settings={"max_connections": "20"}) as pg:
        port = free_port()
        receiver = {"name": "oncall", "type": "webhook", "url": sink.url, "group_wait": "0s",
                    "group_interval": "1s", "repeat_interval": "1h"}
        config = {"listen": f"127.0.0.1:{port}", "interval": f"{INTERVAL:g}s", "log_level": "warning",
                  "postgres": [{"name": "cpa", "dsn": pg.dsn()}],
                  "alerting": {"rules": [str(rules_file(Path(tmp)))], "receivers": [receiver]}}
        (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(config))
        daemon = subprocess.Popen([sys.executable, "-m", "pgwatch_cpa", "run", "--config", f"{tmp}/config.yaml"])
        try:
            _wait_ready(port)
            latencies = [_trial(pg, sink) for _ in range(args.trials)]
        finally:
            daemon.terminate()
            daemon.wait(10)
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    bound = INTERVAL + FOR + 1.0
    print(f"threshold crossing -> webhook request, {len(latencies)} trials (interval {INTERVAL:g} s, for {FOR:g} s)")
    print(f"  median {statistics.median(latencies):.2f} s   p95 {p95:.2f} s   min {latencies[0]:.2f} s   "
          f"max {latencies[-1]:.2f} s")
    print(f"  bound: interval + for + 1 s = {bound:.1f} s -> {'ok' if p95 <= bound else 'MISSED'}")
    return 0 if p95 <= bound else 1


def _trial(pg: PostgresSandbox, sink: WebhookSink) -> float:
    # The rule's ratio is client backends / (max_connections - reserved); find the connection that crosses 80%.
    with psycopg.connect(pg.dsn()) as conn:
        others, usable = conn.execute(
            "SELECT count(*) FILTER (WHERE pid <> pg_backend_pid()), current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int FROM pg_stat_activity"
            " WHERE backend_type = 'client backend'").fetchone()
    crossing = next(k for k in range(1, usable) if (others + k) / usable > 0.8)
    spike = [psycopg.connect(pg.dsn()) for _ in range(crossing - 1)]
    time.sleep(INTERVAL)  # at least one poll sees the ratio just under the threshold
    spike.append(psycopg.connect(pg.dsn()))
    crossed = time.time()
    spike += [psycopg.connect(pg.dsn()) for _ in range(2)]
    try:
        fired = _wait(sink, "firing", crossed)
    finally:
        for conn in spike:
            conn.close()
    _wait(sink, "resolved", fired)
    return fired - crossed


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("daemon not ready")


if __name__ == "__main__":
    sys.exit(main())
