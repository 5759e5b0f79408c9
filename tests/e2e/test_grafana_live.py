"""Every Grafana panel and variable query returns data from a real Prometheus scraping a real daemon.

Stack: sandbox PostgreSQL + Redis with traffic (statements, an index scan, sequential scans, dead rows, an invalid
index, a replication slot, an idle-in-transaction session, a running query, cache keys, a slow Lua script), the
CPA caching service publishing its stats (with the application's pool and query-layer statistics of requests made
through its query layer), a `pgwatch-cpa run` process polling both every second, and
/usr/bin/prometheus scraping it every second with alerts.yml as its rule file. The queries are
taken from grafana/dashboards/*.json, variables substituted the way Grafana does, and evaluated through
Prometheus's HTTP API: a metric renamed in the daemon leaves a panel empty and fails this test.

Panels that cannot have data in this setup are in NO_DATA_HERE with the reason; their metric names must still be
exported by some collector's source, so a rename is caught there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_tool

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
ALERTS_YML = REPO / "alerts.yml"
SCRAPE_INTERVAL = 1  # seconds
RATE_INTERVAL = f"{4 * SCRAPE_INTERVAL}s"  # what Grafana's $__rate_interval becomes: 4 x the scrape interval
SETTLE_TIMEOUT = 90.0
MONITOR_ROLE, MONITOR_PASSWORD = "pgwatch_e2e", "pgwatch-e2e-secret"
APP_INSTANCE = "grafana-e2e-1"

# (dashboard uid, panel title, refId) -> why it has no data here. Keep short; each entry needs a reason.
NO_DATA_HERE: dict[tuple[str, str, str], str] = {
    ("pgwatch-cpa-postgres", "Replication lag", "A"):
        "pg_replication_lag_seconds is exported by a standby only; the sandbox is a primary",
    ("pgwatch-cpa-postgres", "Replication lag", "B"):
        "pg_stat_replication_lag_seconds needs a connected streaming replica",
    ("pgwatch-cpa-postgres", "Replication slots: retained WAL", "B"):
        "pg_stat_replication_lag_bytes needs a connected streaming replica (the slot of query A is constructed)",
}
CACHE_METRICS = re.compile(r"\b(cpa_cache_\w+|cpa_redis_pool_\w+)")


# ---------------------------------------------------------------------------------------------------------------
# traffic


def prepare_postgres(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (MONITOR_ROLE,)).fetchone():
            conn.execute(f"CREATE ROLE {MONITOR_ROLE} LOGIN PASSWORD '{MONITOR_PASSWORD}' IN ROLE pg_monitor")
        conn.execute("DROP TABLE IF EXISTS e2e_clients, e2e_dupes")
        conn.execute("CREATE TABLE e2e_clients (id int PRIMARY KEY, org text NOT NULL, name text, n int)")
        conn.execute("INSERT INTO e2e_clients SELECT g, 'org_' || (g % 50), 'client ' || g, 0 "
                     "FROM generate_series(1, 5000) AS g")
        conn.execute("CREATE INDEX e2e_clients_org ON e2e_clients (org)")  # scanned by the workload
        conn.execute("CREATE INDEX e2e_clients_name ON e2e_clients (name)")  # never scanned: unused
        conn.execute("CREATE TABLE e2e_dupes (v int)")
        conn.execute("INSERT INTO e2e_dupes VALUES (1), (1)")
        with contextlib.suppress(psycopg.errors.UniqueViolation):  # leaves an INVALID index behind
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY e2e_dupes_v ON e2e_dupes (v)")
        conn.execute("VACUUM ANALYZE e2e_dupes")
        conn.execute("UPDATE e2e_clients SET n = 1 WHERE id <= 1000")  # dead rows
        if not conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'grafana_e2e'").fetchone():
            conn.execute("SELECT pg_create_physical_replication_slot('grafana_e2e', true)")
        conn.execute("CHECKPOINT")


def prepare_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.config_set("maxmemory", 256 * 1024 * 1024)
        client.config_set("maxmemory-policy", "volatile-lru")
        client.config_set("latency-monitor-threshold", 1)
        client.config_set("slowlog-log-slower-than", 1000)
        for i in range(20):  # the platform's legacy key layout, one family each
            client.set(f"user:{i}", "x" * 100, ex=600)
            client.set(f"client:{i}", "y" * 200, ex=1800)
            client.set(f"dashboard:{i}", "z" * 50, ex=120)
        client.set("cpa:v1:g:org_legacy", 1)  # a generation counter, no TTL by design
        for i in range(30):
            client.get(f"user:{i}")  # 20 hits, 10 misses
        # A slow script: a slow log entry and a latency-monitor event.
        client.eval("local i = 0 while i < 3000000 do i = i + 1 end return i", 0)
        publish_archive_stats(client)
    finally:
        client.close()


def publish_archive_stats(client: Any) -> None:
    """What the CPA archiver publishes after a run (its own integration tests run the real one)."""
    from pgwatch_cpa.cpa.archive import stats

    now = time.time()
    policies = {p: {**stats.empty_policy(), "last_run_at": now, "last_success_at": now - 600, "rows_archived": 10,
                    "bytes_archived": 2048, "batches": 1, "failures": 1} for p in ("audit_logs", "tasks")}
    client.set(stats.KEY, stats.dump_snapshot(stats.build_snapshot(
        published_at=now, schedule_period_seconds=86400.0, policies=policies)))


class Workload(threading.Thread):
    """Steady PostgreSQL and cache traffic while Prometheus scrapes, so rates and ratios are defined."""

    def __init__(self, dsn: str, redis_url: str) -> None:
        super().__init__(daemon=True, name="grafana-e2e-workload")
        self.dsn, self.redis_url = dsn, redis_url
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.cache_error: str | None = None
        self.cache_calls = 0

    def run(self) -> None:
        cache = threading.Thread(target=self._cache_thread, daemon=True, name="grafana-e2e-cache")
        cache.start()
        try:
            self._postgres()
        except Exception as exc:  # reported by the test
            self.errors.append(f"postgres workload: {exc!r}")
        cache.join(10)

    def _postgres(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SET enable_seqscan = off")
            i = 0
            while not self.stop.is_set():
                conn.execute("SELECT id, name FROM e2e_clients WHERE org = %s", (f"org_{i % 50}",)).fetchall()
                conn.execute("SET enable_seqscan = on")
                conn.execute("SELECT count(*) FROM e2e_dupes").fetchone()
                conn.execute("SET enable_seqscan = off")
                conn.execute("UPDATE e2e_clients SET n = n + 1 WHERE id = %s", (i % 5000 + 1,))
                i += 1
                self.stop.wait(0.05)

    def _cache_thread(self) -> None:
        try:
            asyncio.run(self._cache())
        except Exception as exc:
            self.cache_error = repr(exc)

    async def _cache(self) -> None:
        from pgwatch_cpa.cpa.cache import keys as k
        from pgwatch_cpa.cpa.cache.service import CacheService

        async def load() -> dict[str, Any]:
            return {"rows": list(range(20))}

        from pgwatch_cpa.cpa.db import create_pool
        from pgwatch_cpa.cpa.query_stats import QueryLayerStats, app_sections, recording

        stats = QueryLayerStats()
        async with create_pool(self.dsn, min_size=1, max_size=4) as pool, \
                CacheService.create(self.redis_url, app_instance=APP_INSTANCE, stats_interval=0.5,
                                    app_stats=lambda: app_sections(pool, stats)) as svc:
            i = 0
            with recording(stats):
                while not self.stop.is_set():
                    for key in (k.user_profile("org_1", f"u{i % 7}"), k.client_list("org_1", {"status": "active"}),
                                k.dashboard_metrics(f"org_{i % 3}"), k.report_data("org_1", f"r{i % 4}"),
                                k.invoice_list("org_2", {"page": i % 3})):
                        await svc.get_or_load(key, load)
                    await svc.get(k.session("org_1", f"s{i}"))  # always a miss
                    await self._app_request(pool, stats, i)
                    self.cache_calls += 6
                    i += 1
                    await asyncio.sleep(0.05)

    @staticmethod
    async def _app_request(pool: Any, stats: Any, i: int) -> None:
        """One API request of the application through its query layer (pool and latency panels)."""
        from pgwatch_cpa.cpa.queries import tenant_cursor

        async with stats.measure_request("e2e_client_page"), tenant_cursor(pool, f"org_{i % 50}", "e2e_clients") as cur:
            await cur.execute("SELECT id, name FROM e2e_clients WHERE org = %s", (f"org_{i % 50}",))
            await cur.fetchall()


@contextlib.contextmanager
def held_sessions(dsn: str):
    """An idle-in-transaction session holding a lock, and a running query (active, waiting on a timeout)."""
    import psycopg

    idle = psycopg.connect(dsn, application_name="e2e-idle")
    idle.execute("SELECT id FROM e2e_clients WHERE id = 1").fetchone()  # opens a transaction, keeps its lock
    active = psycopg.connect(dsn, autocommit=True, application_name="e2e-sleeper")
    sleeper = threading.Thread(target=_sleep, args=(active,), daemon=True)
    sleeper.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            active.cancel()
        sleeper.join(10)
        for conn in (idle, active):
            with contextlib.suppress(Exception):
                conn.close()


def _sleep(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.execute("SELECT pg_sleep(600)")


def prepare_cpa_database(pg_server: Any) -> str:
    """A migrated CPA database with a backlog planted for the business panels; the monitoring role's DSN."""
    import psycopg

    from pgwatch_cpa.cpa.schema.migrate import migrate_sync
    from tests.integration.test_cpa_business_queries import plant

    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:  # the server is shared by the Redis params
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'cpa_e2e'").fetchone():
            conn.execute("CREATE DATABASE cpa_e2e")
    migrate_sync(pg_server.dsn(dbname="cpa_e2e"))
    plant(pg_server.dsn(dbname="cpa_e2e"))
    return pg_server.dsn(user=MONITOR_ROLE, password=MONITOR_PASSWORD, dbname="cpa_e2e")


# ---------------------------------------------------------------------------------------------------------------
# Prometheus


class Prometheus:
    def __init__(self, binary: str, workdir: Path, daemon_port: int, rule_files: list[Path]) -> None:
        from pgwatch_cpa.sandbox import free_port

        self.port = free_port()
        config = {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL}s", "evaluation_interval": f"{SCRAPE_INTERVAL}s",
                       "scrape_timeout": f"{SCRAPE_INTERVAL}s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": "pgwatch", "static_configs": [{"targets": [f"127.0.0.1:{daemon_port}"]}]}],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def get(self, path: str, **params: str | list[str]) -> dict[str, Any]:
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"http://127.0.0.1:{self.port}{path}?{query}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b'{"status": "error", "error": "HTTP error"}')

    def query(self, expr: str) -> dict[str, Any]:
        return self.get("/api/v1/query", query=expr)

    def series_label_values(self, selector: str, label: str) -> list[str]:
        reply = self.get("/api/v1/series", **{"match[]": [selector], "start": str(time.time() - 300)})
        assert reply["status"] == "success", f"series {selector}: {reply}"
        return sorted({s[label] for s in reply["data"] if label in s})

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# ---------------------------------------------------------------------------------------------------------------
# dashboards -> queries


def regex_value(values: list[str]) -> str:
    """A multi-value variable as Grafana's Prometheus datasource formats it: (a|b), regex-escaped for PromQL."""
    if not values:
        return ".*"
    escaped = [re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, variables: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in variables, f"unknown variable ${name} in {expr}"
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def resolve_variables(prom: Prometheus, dash: dict[str, Any], problems: list[str],
                      cache_ready: bool) -> dict[str, str]:
    values = {"__rate_interval": RATE_INTERVAL, "__interval": f"{SCRAPE_INTERVAL}s", "__range": "5m"}
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"])
        assert m, var["query"]
        selector = substitute(m.group(1), values)
        found = prom.series_label_values(selector, m.group(2))
        if not found and (cache_ready or not CACHE_METRICS.search(selector)):
            problems.append(f"{dash['uid']}: variable ${var['name']} ({selector}) has no values")
        values[var["name"]] = regex_value(found)
    return values


def panel_queries(dash: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["refId"], t["expr"]))
    for a in dash["annotations"]["list"]:
        if a.get("expr"):
            out.append((f"annotation {a['name']}", "annotation", a["expr"]))
    return out


def has_finite_value(reply: dict[str, Any]) -> bool:
    result = reply["data"]["result"]
    if reply["data"]["resultType"] == "scalar":
        return math.isfinite(float(result[1]))
    return any(math.isfinite(float(s["value"][1])) for s in result)


def collector_sources() -> str:
    """The collectors' code, and the metric names of the shipped custom queries (<key>_<column>)."""
    root = REPO / "pgwatch_cpa"
    names = [f"{key}_{column}" for path in (root / "shipped" / "queries").glob("*.yaml")
             for key, query in yaml.safe_load(path.read_text()).items()
             for metric in query["metrics"] for column, spec in metric.items() if spec["usage"] != "LABEL"]
    return "\n".join([*(p.read_text() for p in root.rglob("*.py")), *names])


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\{", expr)) - {"by", "on", "ignoring", "without"}
    return {n for n in names if n.startswith(("pg_", "redis_", "cpa_", "pgwatch_"))}


# ---------------------------------------------------------------------------------------------------------------
# the test


def test_every_panel_and_variable_query_returns_data(pg_server, redis_server, daemon_factory, tmp_path) -> None:
    prometheus_bin, promtool = require_tool("prometheus"), require_tool("promtool")
    superuser_dsn = pg_server.dsn()
    prepare_postgres(superuser_dsn)
    prepare_redis(redis_server.url)

    cpa_dsn = prepare_cpa_database(pg_server)
    daemon = daemon_factory({
        "interval": f"{SCRAPE_INTERVAL}s",
        # On pg-e2e (no CPA schema) the business and archive queries are disabled after one warning each;
        # cpa-e2e has data.
        "custom_queries": ["builtin:cpa_business.yaml", "builtin:cpa_archive.yaml"],
        "postgres": [{"name": "cpa-e2e", "dsn": cpa_dsn}, {
            "name": "pg-e2e", "dsn": pg_server.dsn(user=MONITOR_ROLE, password=MONITOR_PASSWORD),
            "query_text": True, "slow_query_threshold": "50ms", "long_query_threshold": "1s",
            "seq_scan_min_live_rows": 0,
            "collectors": {name: {"interval": f"{SCRAPE_INTERVAL}s"} for name in ("database_size", "table_size",
                                                                                  "settings")},
        }],
        "redis": [{"name": "redis-e2e", "url": redis_server.url}],
    })
    daemon.wait_ready()

    e2e_rules = tmp_path / "e2e-rules.yml"
    e2e_rules.write_text(yaml.safe_dump({"groups": [{"name": "grafana-e2e", "rules": [
        # Facts for the "Alerts firing/pending" panels and the alert annotation: one alert of each state.
        {"alert": "GrafanaE2EFiring", "expr": "pg_up == 1 or redis_up == 1", "labels": {"severity": "info"}},
        {"alert": "GrafanaE2EPending", "expr": "pg_up == 1 or redis_up == 1", "for": "1h",
         "labels": {"severity": "info"}},
    ]}]}))
    rule_files = [ALERTS_YML, e2e_rules]
    prom = Prometheus(prometheus_bin, tmp_path, daemon.port, rule_files)
    workload = Workload(superuser_dsn, redis_server.url)
    try:
        prom.wait_ready()
        workload.start()
        with held_sessions(superuser_dsn):
            problems, unproven = _evaluate_until_settled(prom, daemon, workload)
            assert not workload.errors, workload.errors
            rule_problems = _rules_health(prom)
            metrics_text = daemon.metrics()
    finally:
        workload.stop.set()
        workload.join(15)
        prom.stop()

    for key in ("cpa_business_ocr", "cpa_business_reports", "cpa_business_quickbooks", "cpa_archive_backlog"):
        disabled = f"target pg-e2e: collector custom:{key} disabled"
        assert daemon.log().count(disabled) == 1, daemon.log()[-3000:]
    assert not problems, "panel/variable queries without data:\n" + "\n".join(problems) + f"\n{prom.log()}"
    assert not rule_problems, "rules not healthy in Prometheus:\n" + "\n".join(rule_problems)
    lint = subprocess.run([promtool, "check", "metrics"], input=metrics_text, capture_output=True, text=True,
                          timeout=60)
    assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), (
        f"promtool check metrics on the daemon's /metrics:\n{lint.stdout}{lint.stderr}")
    assert not unproven, ("caching-service panels without data: the daemon exports no cpa_cache_*/cpa_redis_pool_* "
                          f"metrics ({workload.cache_error or 'service ran'}); " + "; ".join(unproven))


def _evaluate_until_settled(prom: Prometheus, daemon: Any, workload: Workload) -> tuple[list[str], list[str]]:
    """Evaluate every query until all return data (rates need a few scrapes) or the timeout passes."""
    dashboards = [json.loads(p.read_text()) for p in DASHBOARDS]
    sources = collector_sources()
    deadline = time.monotonic() + SETTLE_TIMEOUT
    time.sleep(6 * SCRAPE_INTERVAL)
    while True:
        cache_ready = bool(re.search(r"^cpa_(cache|redis_pool)_\w+\{", daemon.metrics(), re.MULTILINE))
        problems: list[str] = []
        unproven: list[str] = []
        for dash in dashboards:
            variables = resolve_variables(prom, dash, problems, cache_ready)
            for title, ref, expr in panel_queries(dash):
                where = f"{dash['uid']} / {title} / {ref}"
                promql = substitute(expr, variables)
                reply = prom.query(promql)
                if reply.get("status") != "success":
                    problems.append(f"{where}: error {reply.get('error')}: {promql}")
                    continue
                allowed = NO_DATA_HERE.get((dash["uid"], title, ref))
                if allowed:
                    missing = {n for n in metric_names(expr) if n not in sources}
                    if missing:
                        problems.append(f"{where}: allow-listed but no collector exports {sorted(missing)}")
                    continue
                if has_finite_value(reply):
                    continue
                if not cache_ready and CACHE_METRICS.search(expr):
                    unproven.append(f"{dash['uid']} / {title} / {ref}")
                    continue
                problems.append(f"{where}: no data: {promql}")
        if not (problems or unproven) or time.monotonic() > deadline:
            if problems:
                problems.append(f"(workload errors: {workload.errors}, cache: {workload.cache_error}, "
                                f"cache calls: {workload.cache_calls})")
            return problems, unproven
        time.sleep(2 * SCRAPE_INTERVAL)


def _rules_health(prom: Prometheus) -> list[str]:
    deadline = time.monotonic() + 20
    while True:
        reply = prom.get("/api/v1/rules")
        assert reply["status"] == "success", reply
        rules = [(g["file"], r["name"], r["health"], r.get("lastError", "")) for g in reply["data"]["groups"]
                 for r in g["rules"]]
        assert any(name == "GrafanaE2EFiring" for _f, name, _h, _e in rules)
        bad = [f"{Path(f).name}: {name}: {health} {error}" for f, name, health, error in rules if health != "ok"]
        if not bad or time.monotonic() > deadline:
            return bad
        time.sleep(1)
