"""The server the app runs in, hardened against slow and hostile clients:

- at most MAX_CONNECTIONS connections at once; at the cap a new connection takes the place of the oldest one still
  waiting for its request headers, or is closed at once when every connection has sent its request;
- a connection whose first request's headers are not complete HEADER_TIMEOUT seconds after it was accepted (TLS
  handshake included) is closed; later requests on a kept-alive connection get aiohttp's KEEPALIVE_TIMEOUT;
- a malformed request is one log line, not a traceback, and every kind of server-side line is rate-limited.

aiohttp (3.9 to 3.14) has no header-read timeout and no connection limit, and its transports are created by
asyncio, so both live in a protocol factory around aiohttp's: ``_Guarded`` passes every callback through to
aiohttp's RequestHandler and only watches the bytes for the end of the first request's headers.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

MAX_CONNECTIONS = 256
HEADER_TIMEOUT = 10.0
KEEPALIVE_TIMEOUT = 30.0  # idle between two requests; Prometheus scraping every 15 s keeps its connection
LOG_INTERVAL = 10.0  # at most one line per kind of server event per this many seconds


class ThrottledLog:
    """At most one line per kind every LOG_INTERVAL seconds: the first event of a quiet period is logged at once;
    the ones after it are counted and summed up in one line at the end of the period."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL) -> None:
        self._log, self._interval = logger, interval
        self._quiet_until: dict[str, float] = {}
        self._held: dict[str, tuple[int, int, str]] = {}  # kind -> (count, level, last message)

    def event(self, kind: str, level: int, message: str, exc_info: BaseException | None = None) -> None:
        now = time.monotonic()
        if now >= self._quiet_until.get(kind, 0.0):
            self._log.log(level, message, exc_info=exc_info)
            self._quiet_until[kind] = now + self._interval
            asyncio.get_running_loop().call_later(self._interval, self._flush, kind)
        else:
            count = self._held.get(kind, (0, level, ""))[0]
            self._held[kind] = (count + 1, level, message)

    def _flush(self, kind: str) -> None:
        count, level, message = self._held.pop(kind, (0, 0, ""))
        if count:
            self._log.log(level, "%d more in the last %g s, the last: %s", count, self._interval, message)
            self._quiet_until[kind] = time.monotonic() + self._interval
            asyncio.get_running_loop().call_later(self._interval, self._flush, kind)


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger (``handler_args={"logger": ...}``): a malformed request is one line without a
    traceback; an error in a handler keeps its traceback; both through a ThrottledLog."""

    def __init__(self, throttled: ThrottledLog) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._throttled = throttled

    def log(self, level: int, msg: object, *args: object, exc_info: Any = None, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        exc = exc_info if isinstance(exc_info, BaseException) else None
        if isinstance(exc, HttpProcessingError):  # aiohttp answered 400 (or 413, 431) and closed the connection
            detail = " ".join(str(exc.message).split())[:200]
            self._throttled.event("malformed", min(level, logging.WARNING),
                                  f"HTTP: malformed request ({text}): {exc.code} {detail}")
        elif level >= logging.WARNING:
            self._throttled.event("error", level, f"HTTP: {text}", exc if exc is not None else None)


class ConnectionGuard:
    """The protocol factory around aiohttp's: counts connections, makes room at the cap, enforces the deadline."""

    def __init__(self, server: web.Server, throttled: ThrottledLog, *, limit: int = MAX_CONNECTIONS,
                 header_timeout: float = HEADER_TIMEOUT, closed: Callable[[str], None] | None = None) -> None:
        self.server, self.throttled = server, throttled
        self.limit, self.header_timeout = limit, header_timeout
        self.live: dict[_Guarded, None] = {}  # insertion-ordered: the oldest first
        self._closed = closed

    def __call__(self) -> asyncio.Protocol:
        if len(self.live) >= self.limit:
            victim = next((c for c in self.live if c.waiting and c.transport is not None), None)
            self.close_early("limit", f"HTTP: {self.limit} connections open (the limit): "
                             + ("closed the oldest one still waiting for its request headers" if victim else
                                "refused a new one"))
            if victim is None:
                return _Refused()
            victim.abort()
        conn = _Guarded(self, self.server())
        self.live[conn] = None
        return conn

    def close_early(self, reason: str, message: str) -> None:
        if self._closed is not None:
            self._closed(reason)
        self.throttled.event(reason, logging.WARNING, message)


class _Guarded(asyncio.Protocol):
    """aiohttp's RequestHandler behind a watch on the first request's headers; every callback is passed on."""

    def __init__(self, guard: ConnectionGuard, handler: asyncio.Protocol) -> None:
        self.guard, self.handler = guard, handler
        self.transport: asyncio.Transport | None = None
        self.waiting = True  # the first request's headers are not complete yet
        self._made = False
        self._tail = b""
        self._deadline = asyncio.get_running_loop().call_later(guard.header_timeout, self._expire)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self not in self.guard.live:  # expired during a TLS handshake that then finished
            transport.abort()  # type: ignore[attr-defined]
            return
        self.transport = transport  # type: ignore[assignment]
        self._made = True
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.waiting:
            seen = self._tail + data
            if b"\n\r\n" in seen or b"\n\n" in seen:  # the empty line that ends the headers
                self.waiting = False
                self._deadline.cancel()
            self._tail = seen[-2:]
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.cancel()
        self.guard.live.pop(self, None)
        if self._made:
            self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def abort(self) -> None:
        self.guard.live.pop(self, None)
        self._deadline.cancel()
        if self.transport is not None:
            self.transport.abort()

    def _expire(self) -> None:
        if not self.waiting:
            return
        self.guard.close_early("header_timeout", f"HTTP: closed a connection whose request headers were not "
                               f"complete {self.guard.header_timeout:g} s after it was accepted")
        # Before connection_made (a TLS handshake under way), asyncio's ssl_handshake_timeout closes it.
        self.abort()


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


class GuardedSite(web.BaseSite):
    """web.TCPSite with the ConnectionGuard as protocol factory and the TLS handshake inside the header deadline."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, throttled: ThrottledLog, *,
                 ssl_context: ssl.SSLContext | None = None, closed: Callable[[str], None] | None = None,
                 limit: int = MAX_CONNECTIONS, header_timeout: float = HEADER_TIMEOUT) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port = host, port
        self._throttled, self._closed_cb = throttled, closed
        self._limit, self._header_timeout = limit, header_timeout
        self.guard: ConnectionGuard | None = None

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self.guard = ConnectionGuard(server, self._throttled, limit=self._limit,
                                     header_timeout=self._header_timeout, closed=self._closed_cb)
        self._server = await asyncio.get_running_loop().create_server(
            self.guard, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            ssl_handshake_timeout=self._header_timeout if self._ssl_context else None)


def server_args(throttled: ThrottledLog) -> MutableMapping[str, Any]:
    """aiohttp's RequestHandler settings (AppRunner's handler_args): idle keep-alive, limits, the logger."""
    return {"keepalive_timeout": KEEPALIVE_TIMEOUT, "max_line_size": 8190, "max_field_size": 8190,
            "lingering_time": 5.0, "logger": ServerLog(throttled)}
