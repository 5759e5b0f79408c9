"""`pgwatch-cpa demo` end to end: every fault scenario makes its shipped alert fire and resolve, the metrics are
plausible, and nothing the demo started survives it.

Two demo processes run side by side to stay within ~4 minutes on 2 cores: the PostgreSQL scenarios in one, the
Redis and cache scenarios in the other. Each is stopped with SIGINT (Ctrl-C) once its scenarios are done.
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgwatch_cpa.sandbox import TEMP_PREFIX, free_port
from tests.conftest import PG_BUILDS, REDIS_SERVERS, require

pytestmark = pytest.mark.e2e

# Scenario -> alert. redis-down runs last in the first demo; cache-cold runs in the second (its 10-minute windows
# would otherwise carry the misses of the Redis outage's fail-open requests), after archive-stalled, which touches
# neither the cache nor PostgreSQL's statistics.
PG_SCENARIOS = {"lock-wait": "PostgresBlockedQueries", "connection-spike": "PostgresConnectionsHigh",
                "slow-query": "PostgresSlowQueries", "long-query": "PostgresLongRunningQueries",
                "idle-in-transaction": "PostgresIdleInTransaction", "redis-down": "RedisDown"}
CACHE_SCENARIOS = {"archive-stalled": "CpaArchivalStale", "cache-cold": "CpaCacheHitRateLow"}
# The application's scenarios run in the second demo, before cache-cold (their instances make no cache lookups).
APP_SCENARIOS = {"pool-exhaustion": "CpaPgPoolSaturated", "slow-api": "CpaApiLatencyHigh"}
LIMIT = 230.0  # seconds each demo may take before it is stopped regardless


class Demo:
    def __init__(self, scenarios: list[str]) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "pgwatch_cpa", "demo", "--listen", f"127.0.0.1:{self.port}",
                "--duration", str(LIMIT + 30)]
        for name in scenarios:
            args += ["--scenario", name]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     cwd=Path(__file__).resolve().parents[2])
        self.lines: list[str] = []
        self.sandbox_dirs: set[Path] = set()
        self.metrics_text = ""
        self.report: dict = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "first full scrape ready" in line:
                self._observe()

    def _observe(self) -> None:
        """While running: note our sandbox dirs (owner.pid is our pid) and take a /metrics sample."""
        for path in Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
            try:
                if int((path / "owner.pid").read_text()) == self.proc.pid:
                    self.sandbox_dirs.add(path)
            except (OSError, ValueError):
                pass
        time.sleep(4)  # a few more cycles: rates and cache counters have moved
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            self.metrics_text = response.read().decode()

    def output(self) -> str:
        return "\n".join(self.lines)

    def finish(self) -> int:
        """Wait for the scenarios (or the limit), then Ctrl-C and wait for a clean exit."""
        while time.monotonic() - self.started < LIMIT and self.proc.poll() is None:
            if any("scenarios done" in line for line in self.lines):
                break
            time.sleep(0.5)
        if self.proc.poll() is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/report?format=json", timeout=120) as response:
                self.report = orjson.loads(response.read())
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the demo did not stop within 60s of Ctrl-C:\n" + self.output()) from None
        self._reader.join(10)
        return code

    def pids(self) -> set[int]:
        found: set[int] = set()
        for line in self.lines:
            for groups in re.findall(r"\bpid (\d+)|postgres (\d+)|redis (\d+)", line):
                found.update(int(g) for g in groups if g)
        return found

    def events(self, alert: str, status: str) -> list[float]:
        pattern = re.compile(rf"^\[\s*([\d.]+)s\] ALERT {status} {alert} ")
        return [float(m[1]) for line in self.lines if (m := pattern.match(line))]

    def scenario_line(self, name: str) -> str:
        return next((line for line in self.lines if re.search(rf"SCENARIO {name}: \w+ (fired|did NOT fire)", line)),
                    "")


def _sample(text: str, name: str, **labels: str) -> list[float]:
    return [s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def demos():
    if not PG_BUILDS:
        require("a PostgreSQL server build")
    if not REDIS_SERVERS:
        require("a Redis server")
    pg_demo = Demo(list(PG_SCENARIOS))
    cache_demo = Demo(list(APP_SCENARIOS) + list(CACHE_SCENARIOS))
    codes = {}
    try:
        codes["pg"] = pg_demo.finish()
        codes["cache"] = cache_demo.finish()
    finally:
        for demo in (pg_demo, cache_demo):
            if demo.proc.poll() is None:
                demo.proc.kill()
                demo.proc.wait()
    return pg_demo, cache_demo, codes


def test_banner_and_clean_exit(demos):
    for demo, code in zip(demos[:2], demos[2].values(), strict=True):
        out = demo.output()
        assert code == 0, out[-3000:]
        assert f"http://127.0.0.1:{demo.port}/metrics" in out and "/alerts" in out
        assert "postgresql://postgres:****@" in out and "pgwatch_monitor:****@" in out, "DSNs shown, masked"
        assert "scrape_configs" in out and "grafana/README.md" in out
        assert "DEMO TIME SCALE" in out
        assert "stopped: servers shut down" in out


@pytest.mark.parametrize("scenario", list(PG_SCENARIOS))
def test_scenario_fires_and_resolves(demos, scenario):
    demo = demos[0]
    alert = PG_SCENARIOS[scenario]
    line = demo.scenario_line(scenario)
    assert f"{alert} fired after" in line and "resolved" in line and "NOT" not in line, demo.output()[-4000:]
    assert demo.events(alert, "FIRING") and demo.events(alert, "RESOLVED")


@pytest.mark.parametrize("scenario", list(APP_SCENARIOS))
def test_application_scenario_fires_and_resolves(demos, scenario):
    demo = demos[1]
    alert = APP_SCENARIOS[scenario]
    line = demo.scenario_line(scenario)
    assert f"{alert} fired after" in line and "resolved" in line and "NOT" not in line, demo.output()[-4000:]
    assert demo.events(alert, "FIRING") and demo.events(alert, "RESOLVED")
    assert not demo.events("PostgresConnectionsHigh", "FIRING"), "one instance's pool, not the server's connections"


def test_cache_cold_fires(demos):
    # CpaCacheHitRateLow is a ratio of 10-minute rates: the storm's misses stay in the window after it ends, so
    # the resolve needs about 9 hits for every storm miss (at 20 req/s over 4 families: ~2-4 minutes), which
    # does not fit the test's budget beside the fire. The demo waits up to 5 minutes for it; here only the fire
    # is asserted.
    demo = demos[1]
    assert "CpaCacheHitRateLow FIRED after" in demo.output(), demo.output()[-4000:]
    assert demo.events("CpaCacheHitRateLow", "FIRING")


def test_archive_stalled_fires_and_resolves(demos):
    """The demo's archiver (every 15 s) is stopped: its last success ages past 1.5 periods and the shipped rule
    fires; started again, it succeeds at once and the alert resolves."""
    demo = demos[1]
    line = demo.scenario_line("archive-stalled")
    assert "CpaArchivalStale fired after" in line and "resolved" in line and "NOT" not in line, demo.output()[-4000:]
    assert demo.events("CpaArchivalStale", "FIRING") and demo.events("CpaArchivalStale", "RESOLVED")
    assert "rows archived to file://" in demo.output()  # the seeded data had rows old enough in every policy


def test_metrics_are_plausible(demos):
    text = demos[0].metrics_text
    assert text, "no /metrics sample was taken"
    hits = _sample(text, "cpa_cache_requests_total", result="hit")
    assert hits and sum(hits) > 0
    utilisation = _sample(text, "pg_connections_utilization_ratio")
    assert utilisation and all(0 < u <= 1 for u in utilisation)
    calls = _sample(text, "pg_stat_statements_calls_total")
    assert calls and sum(calls) > 0


def test_status_lines_sum_up_what_the_daemon_exports(demos):
    """A plain run is not silent: a status line every 10 s, read from the daemon, with the workload's traffic."""
    lines = [line for line in demos[0].lines if "] status: " in line]
    assert len(lines) >= 3, demos[0].output()[-4000:]
    stamps = [float(re.match(r"^\[\s*([\d.]+)s\]", line)[1]) for line in lines]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 9.5, gaps
    rates = [float(m[1]) for line in lines if (m := re.search(r"status: ([\d.]+) req/s", line))]
    assert rates and max(rates) > 1, lines
    # While redis-down runs, the application's published statistics cannot be read: "-", not a made-up figure.
    shape = (r"p95 api (-|\d+ ms) \(<200\) query (-|\d+ ms) \(<100\) \| cache hit (-|[\d.]+%) \(>90%\) "
             r"\| pg pool (-|\d+/\d+) \| firing: ")
    assert all(re.search(shape, line) for line in lines), lines
    assert any(re.search(r"p95 api \d+ ms .* cache hit [\d.]+% .* pg pool \d+/\d+ ", line) for line in lines), lines


def test_the_report_shows_what_the_scenarios_did(demos):
    """/report (the banner points at it) reads the demo's databases with its least-privilege role after the
    scenarios: the slow and long statements they ran are among its findings, and nothing is unreachable."""
    report = demos[0].report
    assert report.get("schema_version") == 1, report
    postgres = [t for t in report["targets"] if t["kind"] == "postgres"]
    assert postgres and all(t["status"] != "unreachable" for t in report["targets"]), report["targets"]
    kinds = {f["kind"] for t in postgres for f in t["findings"]}
    assert "slow_statement" in kinds, kinds
    assert postgres[0]["summary"]["total_queries"] > 0
    assert f"http://127.0.0.1:{demos[0].port}/report" in demos[0].output()


def test_nothing_survives(demos):
    for demo in demos[:2]:
        pids = demo.pids()
        assert len(pids) >= 2, demo.output()[:2000]
        assert not [p for p in pids if _alive(p)], f"server processes survive: {pids}"
        assert demo.sandbox_dirs, "the demo's sandbox dirs were not observed"
        assert not [d for d in demo.sandbox_dirs if d.exists()]
