"""A small connection cache for one PostgreSQL target that may poll several databases.

At most ``max_size`` connections are open at any time, across all databases; idle ones are kept for reuse in
the next cycle. When a database needs a connection and the limit is reached, the least recently used idle
connection of another database is closed first. Every connection is opened with
``application_name=pgwatch-cpa`` and server-side ``statement_timeout`` / ``lock_timeout``, in autocommit mode,
with client_encoding UTF8 (a SQL_ASCII database's bytes as they are) and lenient text decoding
(collectors/postgres/encoding.py): a value that is not valid UTF-8 arrives with U+FFFD replacement characters,
never as an error or as ``bytes``.
A connection that failed in a way that leaves its state unknown (broken, cancelled, inside a transaction) is
closed, never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pgwatch_cpa.collectors.postgres.encoding import CLIENT_ENCODING, use_lenient_text

log = logging.getLogger(__name__)

APPLICATION_NAME = "pgwatch-cpa"
DEADLINE_BACKSTOP = 1.0  # seconds after a client deadline before the task is cancelled outright
# TCP keepalives and tcp_user_timeout (libpq): a peer gone without a FIN (partition, dead host) is noticed in
# about 30 s instead of the kernel's ~15 minutes of retransmissions.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
              "tcp_user_timeout": 30_000}


@dataclass
class _Idle:
    conn: Any
    since: float


class PgConnections:
    def __init__(self, conninfo: str, *, max_size: int, connect_timeout: float, statement_timeout: float,
                 lock_timeout: float, max_idle: float = 300.0) -> None:
        self._conninfo = conninfo
        self.max_size = max_size
        self._connect_timeout = connect_timeout
        self._options = (f"-c statement_timeout={int(statement_timeout * 1000)} "
                         f"-c lock_timeout={int(lock_timeout * 1000)}")
        self._max_idle = max_idle
        self._slots = asyncio.Semaphore(max_size)
        # The DSN's database (instance-wide collectors) may use all but one connection; the last one is left to
        # the per-database collectors, which run database by database: both keep their connections across
        # cycles instead of evicting each other's.
        self._primary_slots = asyncio.Semaphore(max(1, max_size - 1))
        self._idle: dict[str, list[_Idle]] = {}
        self._busy = 0
        self.opened = 0  # connections ever opened (for tests and debugging)
        self._closed = False

    @property
    def open_count(self) -> int:
        return self._busy + sum(len(v) for v in self._idle.values())

    @asynccontextmanager
    async def connection(self, dbname: str | None = None,
                         deadline: float | None = None) -> AsyncIterator[tuple[Any, bool]]:
        """Yield ``(conn, reused)`` for ``dbname`` (None: the database of the DSN, for instance-wide work).

        Connections are cached per ``dbname`` as given: None and the DSN's own database name are two keys.
        ``deadline``: seconds the caller may use the connection; past it the connection is cut (client_deadline).
        """
        key = dbname or ""
        primary = self._primary_slots if not key else None
        async with asyncio.timeout(self._connect_timeout):
            if primary is not None:
                await primary.acquire()
            try:
                await self._slots.acquire()
            except BaseException:
                if primary is not None:
                    primary.release()
                raise
        self._busy += 1  # reserve before any await, so concurrent users never over-count the room left
        try:
            try:
                conn, reused = await self._take_idle(key), True
                if conn is None:
                    await self._make_room()
                    conn, reused = await self._connect(dbname), False
            except BaseException:
                self._busy -= 1  # never got a connection
                raise
            keep = False
            try:
                async with client_deadline(conn, deadline):
                    yield conn, reused
                keep = True
            except Exception as exc:
                import psycopg

                # A server-side error (statement or lock timeout, privilege) leaves an autocommit connection
                # usable; a lost connection, a client deadline or a cancelled query (BaseException) does not.
                keep = not isinstance(exc, psycopg.Error | TimeoutError) or getattr(exc, "sqlstate", None) is not None
                raise
            finally:
                self._busy -= 1
                if keep and self._usable(conn) and not self._closed:
                    self._idle.setdefault(key, []).append(_Idle(conn, time.monotonic()))
                else:
                    await _close(conn)
        finally:
            self._slots.release()
            if primary is not None:
                primary.release()

    async def _take_idle(self, key: str) -> Any:
        entries = self._idle.get(key)
        while entries:
            conn = entries.pop().conn
            if self._usable(conn):
                return conn
            await _close(conn)
        return None

    @staticmethod
    def _usable(conn: Any) -> bool:
        from psycopg.pq import TransactionStatus

        return not conn.closed and not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE

    async def _make_room(self) -> None:
        while self.open_count > self.max_size:  # open_count includes the reservation of the caller
            oldest_key = min((k for k, v in self._idle.items() if v), key=lambda k: self._idle[k][0].since,
                             default=None)
            if oldest_key is None:
                return  # cannot happen while the semaphore holds: busy < max_size
            await _close(self._idle[oldest_key].pop(0).conn)

    async def _connect(self, dbname: str | None) -> Any:
        import psycopg

        kwargs: dict[str, Any] = {"autocommit": True, "application_name": APPLICATION_NAME,
                                  "client_encoding": CLIENT_ENCODING, "options": self._options,
                                  "connect_timeout": max(1, int(self._connect_timeout)), **KEEPALIVES}
        if dbname:
            kwargs["dbname"] = dbname
        conn = await psycopg.AsyncConnection.connect(self._conninfo, **kwargs)
        self.opened += 1
        try:
            async with client_deadline(conn, self._connect_timeout):
                await use_lenient_text(conn)
        except BaseException:
            await _close(conn)
            raise
        return conn

    async def retain(self, databases: Iterable[str]) -> None:
        """Close idle connections to databases no longer polled, and any idle for longer than max_idle."""
        keep = {""} | set(databases)
        now = time.monotonic()
        for key in list(self._idle):
            entries = self._idle[key]
            stale = entries if key not in keep else [e for e in entries if now - e.since > self._max_idle]
            for entry in stale:
                entries.remove(entry)
                await _close(entry.conn)
            if not entries:
                del self._idle[key]

    async def discard_idle(self, dbname: str | None = None) -> None:
        """Close every idle connection (of one database, or all): after the server went away."""
        keys = [dbname or ""] if dbname is not None else list(self._idle)
        for key in keys:
            for entry in self._idle.pop(key, []):
                await _close(entry.conn)

    async def close(self) -> None:
        self._closed = True
        await self.discard_idle()


@asynccontextmanager
async def client_deadline(conn: Any, seconds: float | None) -> AsyncIterator[None]:
    """Fail the connection's round trips that are still waiting after ``seconds``.

    A server-side statement_timeout cannot fire on a frozen server, and cancelling the waiting coroutine is no
    better: psycopg then sends a cancel request the frozen server never answers either and waits 10 s for it.
    Shutting the socket down makes the pending read return at once; what it raises then becomes a TimeoutError
    (a hung server, not a restarted one: nothing to retry). asyncio.timeout stays as a backstop.
    """
    if seconds is None:
        yield
        return
    expired = asyncio.Event()

    def expire() -> None:
        expired.set()
        _shut_down_socket(conn)

    handle = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        async with asyncio.timeout(seconds + DEADLINE_BACKSTOP):
            yield
    except Exception as exc:
        if expired.is_set() and not isinstance(exc, TimeoutError):
            raise TimeoutError(f"no answer within {seconds:g} s") from exc
        raise
    finally:
        handle.cancel()


def _shut_down_socket(conn: Any) -> None:
    # suppress: a connection closed already has nothing waiting on it
    with contextlib.suppress(Exception), socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


async def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await conn.close()
