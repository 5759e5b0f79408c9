"""``pgwatch-cpa demo``: the whole product on throwaway servers.

A sandbox PostgreSQL (pg_stat_statements, max_connections 40) and Redis; a ``cpa`` database migrated and seeded;
a pg_monitor-only role the daemon connects as; the CPA workload (with its Redis caching service, so cpa_cache_*
statistics are published); the daemon with the shipped alerts.yml (``for`` shortened to ``--alert-for``) and a
local webhook sink that prints one line per alert change; optional fault scenarios (demo_scenarios.py).
Ctrl-C, SIGTERM or ``--duration`` stop everything: no server process and no temp dir is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

import pgwatch_cpa
from pgwatch_cpa import shipped
from pgwatch_cpa.alerts.rules import parse_prometheus_duration
from pgwatch_cpa.config import settings_from_mapping
from pgwatch_cpa.cpa.schema.migrate import migrate
from pgwatch_cpa.cpa.seed import seed
from pgwatch_cpa.cpa.workload import run_workload
from pgwatch_cpa.daemon.lifecycle import Daemon
from pgwatch_cpa.demo.archiving import DemoArchiver
from pgwatch_cpa.demo.scenarios import SCENARIOS, SCHEDULE, DemoContext, ScenarioResult, run_scenario
from pgwatch_cpa.demo.sink import WebhookSink
from pgwatch_cpa.demo.status import Sample, firing_alerts, read_sample, status_line
from pgwatch_cpa.errors import PgwatchError
from pgwatch_cpa.sandbox import PostgresSandbox, RedisSandbox
from pgwatch_cpa.secrets import mask_dsn

log = logging.getLogger(__name__)

DEMO_DB = "cpa"
MONITOR_ROLE = "pgwatch_monitor"
PG_SETTINGS = {"max_connections": "40"}  # small, so a connection spike is cheap
INTERVAL = "3s"
THRESHOLDS = {"long_query_threshold": "20s", "idle_in_transaction_threshold": "20s"}
WORKLOAD_POOL = 8  # the application's pool (the guide's 20 would be half of the demo's max_connections)
APP_INSTANCE = "demo-app"
# A healthy baseline: few writes (each write invalidates a family of its organization), and a cache warmed before
# the daemon starts, so CpaCacheHitRateLow (10-minute windows) is quiet until the cache-cold scenario.
WRITE_RATIO = 0.002
# 3,000 reads fill the small scale's hot keys: at 1,000/s in 3 s as well as at 250/s in 12 s (same hit ratio after).
WARMUP_RATE, WARMUP_SECONDS = 1000.0, 3.0
FULL_SCRAPE = ("pg_stat_statements_calls_total", "cpa_cache_requests_total", "redis_key_family_keys")
STATUS_EVERY = 10.0  # seconds between two status lines


class DemoError(PgwatchError):
    """The demo cannot start (alerts.yml missing from the install, unusable data directory)."""


@dataclass(frozen=True)
class DemoOptions:
    listen: str = "127.0.0.1:9188"
    duration: float | None = None
    scale: str = "small"
    rate: float = 20.0
    keep_data: Path | None = None
    scenarios: tuple[str, ...] = ()
    alert_for: float = 10.0


def shipped_rules() -> Path:
    """The alerts.yml shipped in the package (a wheel or a checkout alike): what ``builtin:alerts.yml`` names."""
    try:
        return shipped.rules_path()
    except shipped.MissingAssetError as exc:
        raise DemoError(f"{exc} (a broken install: reinstall pgwatch-cpa)") from None


def shorten_rules(source: Path, dest: Path, cap: float) -> int:
    """Copy a rule file with every ``for`` and ``keep_firing_for`` set to min(value, cap); return how many
    changed. Expressions, thresholds, labels and annotations are copied unchanged."""
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    changed = 0
    for group in data.get("groups", []):
        for rule in group.get("rules", []):
            for key in ("for", "keep_firing_for"):
                if key in rule and parse_prometheus_duration(str(rule[key])) > cap:
                    rule[key] = f"{cap:g}s" if cap == int(cap) else f"{int(cap * 1000)}ms"
                    changed += 1
    dest.write_text(yaml.safe_dump(data, sort_keys=False, width=1000), encoding="utf-8")
    return changed


# ---------------------------------------------------------------- database preparation


async def prepare_database(pg: PostgresSandbox, scale: str, say: Callable[[str], None]) -> tuple[str, str]:
    """Create the cpa database, migrate, seed (unless already seeded), create the monitoring role.
    Returns (owner DSN, monitoring DSN), both on the cpa database."""
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DEMO_DB])
        if await cur.fetchone() is None:
            await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DB)))
        password = secrets.token_hex(12)
        cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [MONITOR_ROLE])
        verb = "ALTER" if await cur.fetchone() else "CREATE"
        # Least privilege: pg_monitor only (reads pg_stat_* of every session, never writes, no table access).
        await conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
            sql.Identifier(MONITOR_ROLE), sql.Literal(password)))
        await conn.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(MONITOR_ROLE)))
    owner = pg.dsn(dbname=DEMO_DB)
    async with await psycopg.AsyncConnection.connect(owner, autocommit=True) as conn:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    applied = await migrate(owner)
    async with await psycopg.AsyncConnection.connect(owner, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM organizations")
        row = await cur.fetchone()
        seeded = int(row[0]) if row else 0
    if seeded:
        say(f"  reusing the seeded cpa database ({seeded} organizations; --scale ignored)")
    else:
        started = time.monotonic()
        counts = await seed(owner, scale=scale, progress=False)
        say(f"  seeded {sum(counts.values()):,} rows ({scale}) in {time.monotonic() - started:.1f}s"
            + (f" after {len(applied)} migrations" if applied else ""))
    return owner, pg.dsn(user=MONITOR_ROLE, password=password, dbname=DEMO_DB)


def daemon_settings(listen: str, monitor_dsn: str, redis_url: str, rules: Path, sink_url: str) -> Any:
    return settings_from_mapping({
        "listen": listen,
        "interval": INTERVAL,
        "postgres": [{"name": DEMO_DB, "dsn": monitor_dsn, **THRESHOLDS}],
        "redis": [{"name": "cache", "url": redis_url}],
        # the guide's OCR, report and QuickBooks targets; the rows due for archiving per policy
        "custom_queries": ["builtin:cpa_business.yaml", "builtin:cpa_archive.yaml"],
        "alerting": {
            "rules": [str(rules)],
            "external_url": f"http://{listen}",
            "receivers": [{"name": "demo-sink", "type": "webhook", "url": sink_url, "group_wait": "1s",
                           "group_interval": "2s", "repeat_interval": "1h", "max_attempts": 2, "timeout": "2s"}],
        },
    }, environ={})


def banner(opts: DemoOptions, pg: PostgresSandbox, rd: RedisSandbox, monitor_dsn: str, owner_dsn: str,
           sink: WebhookSink, changed_rules: int, rules_source: Path) -> str:
    host = opts.listen
    return f"""
pgwatch-cpa demo (pgwatch-cpa {pgwatch_cpa.__version__})
  metrics      http://{host}/metrics
  alerts       http://{host}/alerts        readiness http://{host}/readyz
  report       http://{host}/report?format=html   (performance review with recommendations; also ?format=json|md)
  postgres     {mask_dsn(owner_dsn)}   (PostgreSQL {pg.build.version if pg.build else '?'}, pid {pg.pid}, \
max_connections {PG_SETTINGS['max_connections']}{', data kept in ' + str(pg.datadir) if opts.keep_data else ''})
  monitoring   {mask_dsn(monitor_dsn)}   (pg_monitor only: what the daemon connects as)
  redis        {rd.url}   (pid {rd.pid})
  workload     {opts.rate:g} req/s through the Redis caching service (app_instance {APP_INSTANCE})
  webhook sink {sink.url}   (alert notifications are printed below, one line each)
  DEMO TIME SCALE: alert rules are {rules_source} with every `for`/keep_firing_for shortened to \
<= {opts.alert_for:g}s ({changed_rules} changed; expressions, thresholds and labels unchanged); collector \
thresholds long_query {THRESHOLDS['long_query_threshold']}, idle_in_transaction \
{THRESHOLDS['idle_in_transaction_threshold']}; poll interval {INTERVAL}.

Prometheus (prometheus.yml):
  rule_files: [{rules_source}]
  scrape_configs:
    - job_name: pgwatch-cpa
      scrape_interval: 15s
      static_configs: [{{targets: ['{host}']}}]
Grafana: import grafana/dashboards/*.json, or provision them with grafana/provisioning/ (see grafana/README.md,
  "Provisioning"); PROMETHEUS_URL is the Prometheus above. `pgwatch-cpa export-assets --to DIR` writes the
  rules and both grafana/ folders out, from this installation.
Ctrl-C stops everything (servers and temp dirs included).
"""


# ---------------------------------------------------------------- the run


async def wait_full_scrape(listen: str, timeout: float, stop: asyncio.Event) -> float | None:
    """Seconds until /readyz is 200 and /metrics holds the three families of a full scrape; None on timeout."""
    import aiohttp

    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() - started < timeout and not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with session.get(f"http://{listen}/readyz") as ready:
                    if ready.status == 200:
                        async with session.get(f"http://{listen}/metrics") as resp:
                            text = await resp.text()
                        if all(_has_sample(text, name) for name in FULL_SCRAPE):
                            return time.monotonic() - started
            await asyncio.sleep(0.5)
    return None


def _has_sample(text: str, name: str) -> bool:
    return any(line.startswith((name + "{", name + " ")) for line in text.splitlines())


async def run_demo(opts: DemoOptions) -> int:
    t0 = time.monotonic()
    say = _printer(t0)
    rules_source = shipped_rules()
    unknown = [s for s in opts.scenarios if s not in SCENARIOS]
    if unknown:
        raise DemoError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    workdir = Path(tempfile.mkdtemp(prefix="pgwatch-cpa-demo-"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if opts.duration:
        loop.call_later(opts.duration, stop.set)
    try:
        # Started from the main thread, so the servers die with us even if we are SIGKILLed (setpriv pdeathsig).
        say("starting PostgreSQL and Redis sandboxes ...")
        with PostgresSandbox(settings=dict(PG_SETTINGS), datadir=opts.keep_data) as pg, RedisSandbox() as rd:
            pids = [p for p in (pg.pid, rd.pid) if p]
            say(f"  server pids: postgres {pg.pid}, redis {rd.pid}" + (" (data dir reused)" if pg.reused else ""))
            owner_dsn, monitor_dsn = await prepare_database(pg, opts.scale, say)
            rules = workdir / "alerts-demo.yml"
            changed = shorten_rules(rules_source, rules, opts.alert_for)
            sink = await WebhookSink(printer=say).start()
            try:
                settings = daemon_settings(opts.listen, monitor_dsn, rd.url, rules, sink.url)
                ctx = DemoContext(rd, owner_dsn, sink, say, pids,
                                  archiver=DemoArchiver(owner_dsn, rd.url, workdir / "archive", say))
                print(banner(opts, pg, rd, monitor_dsn, owner_dsn, sink, changed, rules_source), flush=True)
                await _serve(opts, settings, ctx, stop, t0)
            finally:
                await sink.close()
        say("stopped: servers shut down, temp dirs removed")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


async def warm_cache(owner_dsn: str, redis_url: str, stop: asyncio.Event, say: Callable[[str], None]) -> None:
    """Fill the cache with read traffic before the daemon watches (its misses never enter the alert windows)."""
    started = time.monotonic()
    report = await run_workload(owner_dsn, redis_url, rate=WARMUP_RATE, duration=WARMUP_SECONDS, stop=stop,
                                write_ratio=0.0, pool_size=WORKLOAD_POOL, app_instance="demo-warmup")
    say(f"  cache warmed with {report.offered} reads in {time.monotonic() - started:.1f}s")


async def _serve(opts: DemoOptions, settings: Any, ctx: DemoContext, stop: asyncio.Event, t0: float) -> None:
    await warm_cache(ctx.owner_dsn, ctx.rd.url, stop, ctx.say)
    if stop.is_set():
        return
    workload_stop = asyncio.Event()
    workload = asyncio.create_task(run_workload(
        ctx.owner_dsn, ctx.rd.url, rate=opts.rate, duration=None, stop=workload_stop, pool_size=WORKLOAD_POOL,
        write_ratio=WRITE_RATIO, app_instance=APP_INSTANCE, cache_options={"stats_interval": 2.0},
        background_jobs=True),
        name="demo:workload")
    if ctx.archiver is not None:
        ctx.archiver.start()
    daemon_stop = asyncio.Event()
    daemon = asyncio.create_task(Daemon(settings).serve(daemon_stop), name="demo:daemon")
    scenarios = asyncio.create_task(_scenarios(opts, ctx, stop, t0), name="demo:scenarios")
    try:
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopped, daemon, workload}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        for task in (daemon, workload):
            failure = task.exception() if task in done else None
            if failure is not None:
                raise failure
    finally:
        ctx.say("stopping ...")
        scenarios.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(scenarios, 25)
        if ctx.archiver is not None:
            await ctx.archiver.stop()
        workload_stop.set()
        try:
            report = await asyncio.wait_for(workload, 20)
            ctx.say(f"  workload: {report.offered} requests offered")
        except BaseException as exc:  # report and go on stopping
            if not isinstance(exc, asyncio.CancelledError):
                log.warning("workload ended with %r", exc)
        daemon_stop.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(daemon, 10)


async def _scenarios(opts: DemoOptions, ctx: DemoContext, stop: asyncio.Event, t0: float) -> list[ScenarioResult]:
    ready = await wait_full_scrape(opts.listen, 120, stop)
    if ready is None:
        ctx.say("first full scrape NOT ready after 120s (see the log)")
        return []
    ctx.say(f"first full scrape ready {time.monotonic() - t0:.1f}s after start")
    status = asyncio.create_task(print_status(opts.listen, ctx.say, stop), name="demo:status")
    results = []
    try:
        for name in opts.scenarios:
            results.append(await run_scenario(ctx, SCENARIOS[name]))
        if results:
            ctx.say("scenarios done: " + "; ".join(
                f"{r.name} fire {_secs(r.fired_after)} resolve {_secs(r.resolved_after)}" for r in results))
        await status  # status lines until the demo stops
    finally:
        status.cancel()
    return results


async def print_status(listen: str, say: Callable[[str], None], stop: asyncio.Event) -> None:
    """Every STATUS_EVERY seconds until stopped: one line of what the daemon exports (demo/status.py)."""
    import aiohttp

    previous: Sample | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while not stop.is_set():
            try:
                async with session.get(f"http://{listen}/metrics") as resp:
                    sample = read_sample(await resp.text(), time.monotonic())
                async with session.get(f"http://{listen}/alerts") as resp:
                    firing = firing_alerts(await resp.json())
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                say(f"status: the daemon did not answer ({type(exc).__name__})")
            else:
                if previous is not None:
                    say(status_line(sample, previous, firing))
                previous = sample
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_EVERY)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}s"


def _printer(t0: float) -> Callable[[str], None]:
    def say(line: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {line}", flush=True)
        sys.stdout.flush()
    return say


def scenario_names(requested: Sequence[str], schedule: bool) -> tuple[str, ...]:
    return tuple(SCHEDULE) if schedule else tuple(requested)
