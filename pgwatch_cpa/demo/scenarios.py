"""The demo's fault scenarios: each makes one shipped alert fire, ends the fault and waits for the resolve.

A run: inject the fault (pgwatch_cpa.demo.faults, app_faults, or stop Redis), hold it until the alert's FIRING line
arrives at the webhook sink (or ``max_fault`` seconds pass), end it, then wait for the RESOLVED line (up to
``max_resolve``). The alert rules are the shipped ones with ``for`` shortened (see run.py, shorten_rules), so "fires"
means the expression held for the shortened ``for``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from pgwatch_cpa.cpa.cache import CacheService
from pgwatch_cpa.demo import app_faults, faults
from pgwatch_cpa.demo.archiving import DemoArchiver
from pgwatch_cpa.demo.sink import WebhookSink
from pgwatch_cpa.sandbox import RedisSandbox

log = logging.getLogger(__name__)


@dataclass
class DemoContext:
    rd: RedisSandbox
    owner_dsn: str  # schema owner on the cpa database (the faults' and the workload's connection)
    sink: WebhookSink
    say: Callable[[str], None]
    pids: list[int] = field(default_factory=list)  # every server pid the demo started (printed as they start)
    archiver: DemoArchiver | None = None  # the CPA archiver on its demo schedule (archive-stalled stops it)


FaultBody = Callable[[DemoContext, asyncio.Event, asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    alert: str
    body: FaultBody  # runs the fault until its stop event is set; sets ready once the fault is in place
    describe: str
    max_fault: float = 90.0
    max_resolve: float = 60.0
    after: Callable[[DemoContext], Awaitable[None]] | None = None  # runs once the fault has ended
    also: tuple[str, ...] = ()  # further alerts the scenario may raise (reported, not awaited)


@dataclass
class ScenarioResult:
    name: str
    alert: str
    fired_after: float | None  # seconds from fault start
    resolved_after: float | None  # seconds from fault end

    def line(self) -> str:
        fired = f"fired after {self.fired_after:.0f}s" if self.fired_after is not None else "did NOT fire"
        resolved = (f"resolved {self.resolved_after:.0f}s after the fault ended" if self.resolved_after is not None
                    else "did NOT resolve in time")
        return f"SCENARIO {self.name}: {self.alert} {fired}, {resolved}"


# ---------------------------------------------------------------- fault bodies


async def _pg_fault(fn: Callable[..., Awaitable[Any]], ctx: DemoContext, stop: asyncio.Event,
                    ready: asyncio.Event, **kwargs: Any) -> None:
    await fn(ctx.owner_dsn, stop=stop, ready=ready, **kwargs)


async def _slow_query(ctx: DemoContext, stop: asyncio.Event, ready: asyncio.Event) -> None:
    await _pg_fault(faults.slow_query, ctx, stop, ready)


async def _statement_fast_again(ctx: DemoContext) -> None:
    """The statement gets fixed: PostgresSlowQueries is a 5-minute mean, and a vanished series still has its
    samples in the window (in Prometheus too), so stopping the slow calls alone keeps the alert firing for 5
    more minutes. Running the *same* statement fast (pg_sleep(0)) brings its 5-minute mean under 1 s at once."""
    async with await psycopg.AsyncConnection.connect(ctx.owner_dsn, autocommit=True) as conn:
        cur = await conn.execute("""
            SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements WHERE query LIKE '%AS fault, pg_sleep%'""")
        row = await cur.fetchone()
        total_ms = float(row[0]) if row else 0.0
        for _ in range(max(20, int(total_ms / 200) + 1)):  # mean well under 1 s (~0.2 s)
            await conn.execute(faults.SLOW_QUERY_SQL, ["cpa-fault-slow-query", 0.0])


async def _idle_in_transaction(ctx: DemoContext, stop: asyncio.Event, ready: asyncio.Event) -> None:
    await _pg_fault(faults.idle_in_transaction, ctx, stop, ready)


async def _long_query(ctx: DemoContext, stop: asyncio.Event, ready: asyncio.Event) -> None:
    await _pg_fault(faults.long_query, ctx, stop, ready)


async def _connection_spike(ctx: DemoContext, stop: asyncio.Event, ready: asyncio.Event) -> None:
    await _pg_fault(faults.connection_spike, ctx, stop, ready, fraction_of_max=0.9)


async def _lock_wait(ctx: DemoContext, stop: asyncio.Event, ready: asyncio.Event) -> None:
    await _pg_fault(faults.lock_wait, ctx, stop, ready)


async def _cache_cold(ctx: DemoContext, stop: asyncio.Event, ready: asyncio.Event) -> None:
    """A short invalidation storm (every organization's cache invalidated 3 times, 2 s apart), then wait: the
    re-fill misses stay in CpaCacheHitRateLow's 10-minute windows, so the fewer, the sooner it resolves."""
    async with await psycopg.AsyncConnection.connect(ctx.owner_dsn) as conn:
        cur = await conn.execute("SELECT id::text FROM organizations ORDER BY id")
        orgs = [row[0] for row in await cur.fetchall()]
    async with CacheService.create(ctx.rd.url, app_instance="demo-faults",
                                   registry=CollectorRegistry()) as cache:
        await faults.cache_cold(cache, orgs, rounds=3, interval=2.0, stop=stop, ready=ready)
    await stop.wait()


async def _redis_down(ctx: DemoContext, stop: asyncio.Event, ready: asyncio.Event) -> None:
    old = ctx.rd.pid
    await asyncio.to_thread(ctx.rd.stop)
    ctx.say(f"  redis stopped (pid {old})")
    ready.set()
    try:
        await stop.wait()
    finally:
        ctx.rd.start_again()  # main thread: the restarted server dies with us as well
        if ctx.rd.pid:
            ctx.pids.append(ctx.rd.pid)
        ctx.say(f"  redis restarted on the same port (pid {ctx.rd.pid})")


async def _pool_exhaustion(ctx: DemoContext, stop: asyncio.Event, ready: asyncio.Event) -> None:
    await app_faults.pool_exhaustion(ctx.owner_dsn, ctx.rd.url, stop=stop, ready=ready)


async def _slow_api(ctx: DemoContext, stop: asyncio.Event, ready: asyncio.Event) -> None:
    await app_faults.slow_api(ctx.owner_dsn, ctx.rd.url, stop=stop, ready=ready)


async def _slow_api_fixed(ctx: DemoContext) -> None:
    """The lock is gone: the instance keeps serving until its slow requests leave the p95 (CpaApiLatencyHigh's
    5-minute window holds them, so it takes about as long as the fault did)."""
    await app_faults.slow_api_fixed(ctx.owner_dsn, ctx.rd.url, max_seconds=150.0,
                                    resolved=lambda: not ctx.sink.firing("CpaApiLatencyHigh"))


async def _archive_stalled(ctx: DemoContext, stop: asyncio.Event, ready: asyncio.Event) -> None:
    archiver = ctx.archiver
    if archiver is None or not archiver.running:
        raise RuntimeError("the demo's archiver is not running")
    await archiver.stop()
    ctx.say(f"  archiver stopped (schedule period {archiver.period:g}s; no success from now on)")
    ready.set()
    try:
        await stop.wait()
    finally:
        archiver.start()
        ctx.say("  archiver started again (runs at once)")


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("lock-wait", "PostgresBlockedQueries", _lock_wait,
             "one session holds a row lock on organizations, another waits for it"),
    Scenario("connection-spike", "PostgresConnectionsHigh", _connection_spike,
             "opens connections until 90% of max_connections (40 in the demo) are in use"),
    Scenario("slow-query", "PostgresSlowQueries", _slow_query,
             "runs a 1.2 s statement back to back (mean > 1 s)", after=_statement_fast_again),
    Scenario("long-query", "PostgresLongRunningQueries", _long_query,
             "one statement runs longer than the demo's long_query_threshold"),
    Scenario("idle-in-transaction", "PostgresIdleInTransaction", _idle_in_transaction,
             "a session sits idle inside an open transaction past the demo's threshold"),
    Scenario("redis-down", "RedisDown", _redis_down,
             "stops Redis (the cache fails open), then starts it again on the same port",
             also=("CpaCacheFailOpen",)),
    Scenario("cache-cold", "CpaCacheHitRateLow", _cache_cold,
             "an invalidation storm: every organization's cache invalidated 3 times, 2 s apart",
             max_fault=60.0, max_resolve=300.0),
    Scenario("pool-exhaustion", "CpaPgPoolSaturated", _pool_exhaustion,
             f"application instance demo-batch holds all {app_faults.POOL_SIZE} connections of its pool; its "
             f"requests time out after {app_faults.POOL_TIMEOUT:g} s (the server's connections stay low)",
             also=("CpaPgPoolTimeouts",)),
    Scenario("slow-api", "CpaApiLatencyHigh", _slow_api,
             "a session locks the engagements table again and again; 1 request in 10 of application instance "
             "demo-api waits behind it, then the lock is gone", after=_slow_api_fixed, max_resolve=60.0,
             also=("CpaQueryLatencyHigh", "PostgresBlockedQueries")),
    Scenario("archive-stalled", "CpaArchivalStale", _archive_stalled,
             "stops the CPA archiver, whose last success then ages past 1.5 schedule periods",
             max_fault=120.0),
)}
SCHEDULE = tuple(SCENARIOS)  # --schedule runs them in this order


async def run_scenario(ctx: DemoContext, scenario: Scenario) -> ScenarioResult:
    sink = ctx.sink
    ctx.say(f"SCENARIO {scenario.name}: start ({scenario.describe}); expecting {scenario.alert}")
    stop, ready = asyncio.Event(), asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(scenario.body(ctx, stop, ready), name=f"scenario:{scenario.name}")
    fired_after = resolved_after = None
    ended = started
    try:
        done = await sink.wait_for(lambda: task.done() or sink.first(scenario.alert, "firing", started) is not None,
                                   scenario.max_fault)
        event = sink.first(scenario.alert, "firing", started)
        if event is not None:
            fired_after = event.at - started
            ctx.say(f"SCENARIO {scenario.name}: {scenario.alert} FIRED after {fired_after:.0f}s; ending the fault")
        elif task.done() and task.exception() is not None:
            ctx.say(f"SCENARIO {scenario.name}: the fault failed: {task.exception()!r}")
        elif not done:
            ctx.say(f"SCENARIO {scenario.name}: {scenario.alert} did not fire within {scenario.max_fault:.0f}s")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(task), 20)
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        ended = time.monotonic()
    ctx.say(f"SCENARIO {scenario.name}: fault ended after {ended - started:.0f}s; waiting for the resolve")
    if scenario.after is not None:
        try:
            await scenario.after(ctx)
        except Exception as exc:  # the demo goes on; the resolve may just take longer
            log.warning("scenario %s: clean-up step failed: %s", scenario.name, exc)
    if fired_after is not None:
        await sink.wait_for(lambda: sink.first(scenario.alert, "resolved", ended) is not None
                            and not sink.firing(scenario.alert), scenario.max_resolve)
        resolved = sink.first(scenario.alert, "resolved", ended)
        if resolved is not None and not sink.firing(scenario.alert):
            resolved_after = resolved.at - ended
    result = ScenarioResult(scenario.name, scenario.alert, fired_after, resolved_after)
    ctx.say(result.line())
    for other in scenario.also:
        if sink.first(other, "firing", started) is not None:
            ctx.say(f"SCENARIO {scenario.name}: {other} fired too"
                    + (" (it resolves when its 5-minute increase() window has passed)" if sink.firing(other) else ""))
    return result
