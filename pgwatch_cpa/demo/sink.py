"""The local webhook sink: receives the daemon's Alertmanager-v4 notifications, prints one line per change.

A group notification repeats every alert of its group (firing ones until they resolve), so the sink prints an
alert only when its status changes: ``ALERT FIRING <alertname> target=... severity=...: <summary>``, later
``ALERT RESOLVED ...``. Scenarios wait on :meth:`WebhookSink.wait_for`.

The demo, the tests and the benchmarks share it: every POST (to any path) is kept in :attr:`WebhookSink.requests`
with its headers and body, :attr:`WebhookSink.status` makes it answer like a failing receiver,
:attr:`WebhookSink.delay` like a slow or hanging one, and :meth:`WebhookSink.serve_in_thread` runs it for synchronous
callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

# Labels every alert carries or that say nothing new on one line; the rest (family, queryid, ...) are shown.
_QUIET_LABELS = {"alertname", "target", "severity", "component", "instance"}


@dataclass(frozen=True)
class AlertEvent:
    at: float  # time.monotonic()
    status: str  # "firing" | "resolved"
    alertname: str
    labels: Mapping[str, str]
    summary: str


@dataclass(frozen=True)
class ReceivedRequest:
    """One POST as it arrived, whatever the sink answered."""

    at: float  # the sink's clock
    path: str
    headers: CIMultiDict[str]
    raw: bytes
    body: object  # the parsed JSON (None when the body is not JSON)
    answered: int  # the HTTP status the sink answered with


def format_line(status: str, labels: Mapping[str, str], summary: str) -> str:
    extra = " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in _QUIET_LABELS)
    parts = [f"ALERT {status.upper()}", labels.get("alertname", "?")]
    if "target" in labels:
        parts.append(f"target={labels['target']}")
    if extra:
        parts.append(extra)
    parts.append(f"severity={labels.get('severity', 'none')}:")
    return " ".join(parts) + (f" {summary}" if summary else "")


class WebhookSink:
    """An aiohttp server on a free loopback port; ``url`` is what the webhook receiver posts to.

    It accepts a POST to any path (``base_url`` + path: an Alertmanager-style client appends ``/api/v2/alerts``).
    Set ``status`` to answer with that code instead of 200 (a failing receiver); such a request is still kept in
    ``requests`` but its alerts are not recorded as events. Set ``delay`` (seconds) to answer that late (a slow or,
    longer than the client's timeout, a hanging receiver); the request is kept in ``requests`` when it arrives.
    """

    def __init__(self, printer: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> None:
        self._print = printer
        self._clock = clock
        self._alert_status: dict[tuple[tuple[str, str], ...], str] = {}
        self.events: list[AlertEvent] = []
        self.requests: list[ReceivedRequest] = []
        self.notifications = 0
        self.status = 200
        self.delay = 0.0
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.url = ""

    async def start(self) -> WebhookSink:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._receive)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self.url = self.base_url + "/hook"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextlib.contextmanager
    def serve_in_thread(self) -> Iterator[WebhookSink]:
        """Run the sink on its own event loop in a daemon thread, for synchronous callers; closed on exit.

        ``requests`` and ``events`` only grow, so the caller's thread may read them (or :meth:`alerts`) meanwhile.
        """
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True, name="webhook-sink")
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(30)
            yield self
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.close(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()

    async def _receive(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if self.status != 200:
            answer, text = self.status, "as configured"
        elif payload is None:
            answer, text = 400, "not JSON"
        else:
            answer, text = 200, "ok"
        self.requests.append(ReceivedRequest(self._clock(), request.path, CIMultiDict(request.headers), raw, payload,
                                             answer))
        self._changed.set()
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        if answer != 200:
            return web.Response(status=answer, text=text)
        self.notifications += 1
        for alert in payload.get("alerts", []) if isinstance(payload, dict) else []:
            self.record(alert)
        return web.Response(text=text)

    def alerts(self, alertname: str | None = None, status: str | None = None) -> list[dict]:
        """Every alert of every accepted webhook notification as received (repeats included), oldest first."""
        bodies = [r.body for r in list(self.requests) if r.answered == 200 and isinstance(r.body, dict)]
        return [a for body in bodies for a in body.get("alerts") or [] if isinstance(a, dict)
                if (alertname is None or a.get("labels", {}).get("alertname") == alertname)
                and (status is None or a.get("status") == status)]

    def record(self, alert: Mapping[str, object]) -> AlertEvent | None:
        """Print and remember one alert of a notification if its status changed; return the event."""
        labels = {str(k): str(v) for k, v in dict(alert.get("labels") or {}).items()}  # type: ignore[call-overload]
        status = str(alert.get("status", "firing"))
        key = tuple(sorted(labels.items()))
        if self._alert_status.get(key) == status or (status == "resolved" and key not in self._alert_status):
            return None
        self._alert_status[key] = status
        annotations = alert.get("annotations") or {}
        summary = str(annotations.get("summary", "")) if isinstance(annotations, Mapping) else ""
        event = AlertEvent(self._clock(), status, labels.get("alertname", "?"), labels, summary)
        self.events.append(event)
        self._print(format_line(status, labels, summary))
        self._changed.set()
        return event

    def firing(self, alertname: str) -> bool:
        return any(s == "firing" and dict(k).get("alertname") == alertname for k, s in list(self._alert_status.items()))

    def first(self, alertname: str, status: str, since: float) -> AlertEvent | None:
        return next((e for e in self.events if e.alertname == alertname and e.status == status and e.at >= since),
                    None)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (checked after every change) or ``timeout`` passes."""
        deadline = self._clock() + timeout
        while not predicate():
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True
