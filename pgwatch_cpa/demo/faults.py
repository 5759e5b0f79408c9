"""Faults the demo injects into the CPA database and cache, each one a fact the daemon must see and alert on.

    stop = asyncio.Event()
    task = asyncio.create_task(slow_query(dsn, 60, stop=stop))   # ... later: stop.set(); await task
    async with running(lock_wait, dsn) as task:                   # ready on entry, cleaned up on exit
        ...

Every fault runs until ``seconds`` pass, ``stop`` is set or its task is cancelled, sets ``ready`` once its fact is
visible, and cleans up fully whichever way it ends: a running statement is cancelled on the server (closing the
socket alone would leave ``pg_sleep`` running), open transactions are rolled back, every connection is closed.
Fault connections are named ``cpa_fault_<fault>`` (``application_name``) and carry ``statement_timeout=0``,
``lock_timeout=0`` and ``idle_in_transaction_session_timeout=0`` so they last as long as asked, whatever the
server defaults.

=====================  ==========================================================================================
fault                  visible as
=====================  ==========================================================================================
slow_query             pg_stat_statements: ``SELECT $1 AS fault, pg_sleep($2)`` with mean_exec_time > 1000 ms
long_query             pg_stat_activity: one ``active`` statement whose query_start ages for ``seconds``
idle_in_transaction    pg_stat_activity: state ``idle in transaction`` with an xid (holds back the xmin horizon)
connection_spike       pg_stat_activity: client backends > fraction x (max_connections - reserved)
lock_wait              pg_locks: a row lock not granted; pg_stat_activity: wait_event_type ``Lock``
cache_cold             cache: org invalidations (``cpa_cache_invalidations_total{kind="org"}``), then misses
=====================  ==========================================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import psycopg

from pgwatch_cpa.cpa.cache import CacheService

log = logging.getLogger("pgwatch_cpa.demo.faults")

APP_PREFIX = "cpa_fault_"
SLOW_QUERY_SQL = "SELECT %s AS fault, pg_sleep(%s)"
SLOW_QUERY_SECONDS = 1.2
_CANCEL_TIMEOUT = 5.0
_POLL = 0.05


async def _connect(dsn: str, fault: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, application_name=APP_PREFIX + fault, connect_timeout=10,
        options="-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0")


async def _close(conn: psycopg.AsyncConnection[Any], statement: asyncio.Future[Any] | None = None) -> None:
    """Cancel ``statement`` on the server if it is still running, then close the connection."""
    try:
        if statement is not None and not statement.done():
            with contextlib.suppress(Exception):
                await conn.cancel_safe(timeout=_CANCEL_TIMEOUT)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(statement), _CANCEL_TIMEOUT)
        if statement is not None and statement.done() and not statement.cancelled():
            statement.exception()  # retrieved: no "exception never retrieved" warning for the expected cancel
    finally:
        await conn.close()


def _deadline(seconds: float | None) -> float | None:
    return None if seconds is None else time.monotonic() + seconds


async def _hold(stop: asyncio.Event | None, deadline: float | None,
                until: asyncio.Future[Any] | None = None) -> bool:
    """Wait for stop, the deadline or ``until``; True if ``until`` finished first."""
    waiters: set[asyncio.Future[Any]] = set()
    stop_wait = asyncio.ensure_future(stop.wait()) if stop is not None else None
    if stop_wait is not None:
        waiters.add(stop_wait)
    if until is not None:
        waiters.add(until)
    try:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not waiters:
            if timeout is None:
                await asyncio.Event().wait()  # until cancelled
            await asyncio.sleep(timeout or 0)
            return False
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return until is not None and until.done()
    finally:
        if stop_wait is not None:
            stop_wait.cancel()


def _stopped(stop: asyncio.Event | None, deadline: float | None) -> bool:
    return (stop is not None and stop.is_set()) or (deadline is not None and time.monotonic() >= deadline)


async def _wait_for_row(monitor: psycopg.AsyncConnection[Any], query: str, params: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        cur = await monitor.execute(query, params)
        if await cur.fetchone():
            return
        await asyncio.sleep(_POLL)
    raise TimeoutError(f"fault did not become visible within {timeout:.0f}s")


# ---------------------------------------------------------------- PostgreSQL faults


async def slow_query(dsn: str, seconds: float | None = None, *, stop: asyncio.Event | None = None,
                     ready: asyncio.Event | None = None, sleep: float = SLOW_QUERY_SECONDS) -> int:
    """Run ``SELECT 'cpa-fault-slow-query' AS fault, pg_sleep(sleep)`` back to back: one normalised statement
    whose mean execution time exceeds 1 s. ``ready`` is set after the first call completes (only then does
    pg_stat_statements count it). Returns the number of completed calls."""
    deadline, calls = _deadline(seconds), 0
    conn = await _connect(dsn, "slow_query")
    statement: asyncio.Future[Any] | None = None
    try:
        while not _stopped(stop, deadline):
            statement = asyncio.ensure_future(conn.execute(SLOW_QUERY_SQL, ["cpa-fault-slow-query", sleep]))
            if not await _hold(stop, deadline, statement):
                break
            statement.result()
            calls += 1
            if ready is not None:
                ready.set()
    finally:
        await _close(conn, statement)
    return calls


async def long_query(dsn: str, seconds: float | None = None, *, stop: asyncio.Event | None = None,
                     ready: asyncio.Event | None = None) -> None:
    """One statement that runs for ``seconds`` (or until stopped); ``ready`` once it is ``active``."""
    deadline = _deadline(seconds)
    conn = await _connect(dsn, "long_query")
    statement: asyncio.Future[Any] | None = None
    try:
        pid = conn.info.backend_pid
        # pg_sleep(big) and a server-side cancel at the end, so an unbounded fault is one statement too
        statement = asyncio.ensure_future(conn.execute("SELECT pg_sleep(%s)", [seconds if seconds else 86_400]))
        async with await _connect(dsn, "monitor") as monitor:
            await _wait_for_row(monitor, "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active'",
                                [pid])
        if ready is not None:
            ready.set()
        if await _hold(stop, deadline, statement):
            statement.result()
    finally:
        await _close(conn, statement)


async def idle_in_transaction(dsn: str, seconds: float | None = None, *, stop: asyncio.Event | None = None,
                              ready: asyncio.Event | None = None) -> None:
    """A session that opens a transaction, takes an xid and then sits ``idle in transaction``; rolled back at
    the end."""
    deadline = _deadline(seconds)
    conn = await _connect(dsn, "idle_in_transaction")
    try:
        await conn.execute("BEGIN")
        await conn.execute("SELECT pg_current_xact_id()")  # an xid: the open transaction holds back vacuum
        if ready is not None:
            ready.set()
        await _hold(stop, deadline)
        await conn.execute("ROLLBACK")
    finally:
        await conn.close()


async def _limits(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int, int]:
    """(max_connections, reserved slots, client backends now)."""
    cur = await conn.execute("""
        SELECT current_setting('max_connections')::int,
               current_setting('superuser_reserved_connections')::int
                 + coalesce(nullif(current_setting('reserved_connections', true), ''), '0')::int,
               (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int""")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def connection_spike(dsn: str, fraction_of_max: float = 0.9, seconds: float | None = None, *,
                           stop: asyncio.Event | None = None, ready: asyncio.Event | None = None,
                           batch: int = 10) -> int:
    """Open connections until client backends exceed ``fraction_of_max`` x (max_connections - reserved), hold
    them, close them. Never takes the last usable slot. Returns the number of connections it opened."""
    if not 0 < fraction_of_max < 1:
        raise ValueError("fraction_of_max must be within (0, 1)")
    deadline = _deadline(seconds)
    opened: list[psycopg.AsyncConnection[Any]] = []
    try:
        async with await _connect(dsn, "monitor") as monitor:
            max_conn, reserved, current = await _limits(monitor)
            usable = max_conn - reserved
            target = min(math.floor(fraction_of_max * usable) + 1, usable - 1)
            while current < target and not _stopped(stop, deadline):
                n = min(batch, target - current)
                results = await asyncio.gather(*(_connect(dsn, "connection_spike") for _ in range(n)),
                                               return_exceptions=True)
                opened += [c for c in results if isinstance(c, psycopg.AsyncConnection)]
                failures = [r for r in results if isinstance(r, BaseException)]
                if failures:
                    log.warning("connection spike stopped opening at %d connections: %s", len(opened), failures[0])
                    break
                _, _, current = await _limits(monitor)
        if ready is not None:
            ready.set()
        await _hold(stop, deadline)
    finally:
        await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)
    return len(opened)


async def lock_wait(dsn: str, seconds: float | None = None, *, stop: asyncio.Event | None = None,
                    ready: asyncio.Event | None = None) -> None:
    """One session holds a row lock on an ``organizations`` row (SELECT ... FOR UPDATE in an open transaction);
    another waits for it with the same statement. Nothing is written; both are released at the end."""
    deadline = _deadline(seconds)
    holder = await _connect(dsn, "lock_holder")
    waiter: psycopg.AsyncConnection[Any] | None = None
    statement: asyncio.Future[Any] | None = None
    try:
        cur = await holder.execute("SELECT id FROM organizations ORDER BY id LIMIT 1")
        row = await cur.fetchone()
        if row is None:
            raise ValueError("lock_wait needs a seeded CPA database (no organizations row)")
        await holder.execute("BEGIN")
        await holder.execute("SELECT id FROM organizations WHERE id = %s FOR UPDATE", [row[0]])
        waiter = await _connect(dsn, "lock_waiter")
        pid = waiter.info.backend_pid
        statement = asyncio.ensure_future(
            waiter.execute("SELECT id FROM organizations WHERE id = %s FOR UPDATE", [row[0]]))
        async with await _connect(dsn, "monitor") as monitor:
            await _wait_for_row(monitor, "SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", [pid])
        if ready is not None:
            ready.set()
        await _hold(stop, deadline, statement)
    finally:
        try:
            if waiter is not None:
                await _close(waiter, statement)  # cancel the waiter before the holder lets it through
        finally:
            with contextlib.suppress(Exception):
                await holder.execute("ROLLBACK")
            await holder.close()


# ---------------------------------------------------------------- cache fault


async def cache_cold(cache: CacheService, orgs: Iterable[str], *, rounds: int = 1, interval: float = 0.0,
                     stop: asyncio.Event | None = None, ready: asyncio.Event | None = None) -> int:
    """An invalidation storm: every org's whole cache invalidated (one INCR each), ``rounds`` times,
    ``interval`` seconds apart. Returns the number of successful invalidations."""
    orgs = list(orgs)
    done = 0
    for n in range(rounds):
        if stop is not None and stop.is_set():
            break
        results = await asyncio.gather(*(cache.invalidate_org(org) for org in orgs))
        done += sum(bool(r) for r in results)
        if ready is not None:
            ready.set()
        if interval and n + 1 < rounds:
            await _hold(stop, _deadline(interval))
    return done


# ---------------------------------------------------------------- helper


@asynccontextmanager
async def running(fault: Callable[..., Awaitable[Any]], *args: Any, ready_timeout: float = 30.0,
                  **kwargs: Any) -> AsyncIterator[asyncio.Task[Any]]:
    """Run ``fault(*args, stop=..., ready=..., **kwargs)`` in the background while the block runs: entered once
    the fault is visible (its exception, if it fails first, is raised here), stopped and awaited on exit."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(fault(*args, stop=stop, ready=ready, **kwargs))
    ready_wait = asyncio.ensure_future(ready.wait())
    try:
        await asyncio.wait({task, ready_wait}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises the fault's error
        elif not ready.is_set():
            raise TimeoutError(f"{getattr(fault, '__name__', fault)} not ready within {ready_timeout:.0f}s")
        yield task
    finally:
        ready_wait.cancel()
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
