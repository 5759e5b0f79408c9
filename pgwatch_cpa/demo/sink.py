"""The demo's local webhook sink: receives the daemon's Alertmanager-v4 notifications, prints one line per change.

A group notification repeats every alert of its group (firing ones until they resolve), so the sink prints an
alert only when its status changes: ``ALERT FIRING <alertname> target=... severity=...: <summary>``, later
``ALERT RESOLVED ...``. Scenarios wait on :meth:`WebhookSink.wait_for`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

# Labels every alert carries or that say nothing new on one line; the rest (family, queryid, ...) are shown.
_QUIET_LABELS = {"alertname", "target", "severity", "component", "instance"}


@dataclass(frozen=True)
class AlertEvent:
    at: float  # time.monotonic()
    status: str  # "firing" | "resolved"
    alertname: str
    labels: Mapping[str, str]
    summary: str


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
    """An aiohttp server on a free loopback port; ``url`` is what the webhook receiver posts to."""

    def __init__(self, printer: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> None:
        self._print = printer
        self._clock = clock
        self._status: dict[tuple[tuple[str, str], ...], str] = {}
        self.events: list[AlertEvent] = []
        self.notifications = 0
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> WebhookSink:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except ValueError:
            return web.Response(status=400, text="not JSON")
        self.notifications += 1
        for alert in payload.get("alerts", []) if isinstance(payload, dict) else []:
            self.record(alert)
        return web.Response(text="ok")

    def record(self, alert: Mapping[str, object]) -> AlertEvent | None:
        """Print and remember one alert of a notification if its status changed; return the event."""
        labels = {str(k): str(v) for k, v in dict(alert.get("labels") or {}).items()}  # type: ignore[call-overload]
        status = str(alert.get("status", "firing"))
        key = tuple(sorted(labels.items()))
        if self._status.get(key) == status or (status == "resolved" and key not in self._status):
            return None
        self._status[key] = status
        annotations = alert.get("annotations") or {}
        summary = str(annotations.get("summary", "")) if isinstance(annotations, Mapping) else ""
        event = AlertEvent(self._clock(), status, labels.get("alertname", "?"), labels, summary)
        self.events.append(event)
        self._print(format_line(status, labels, summary))
        self._changed.set()
        return event

    def firing(self, alertname: str) -> bool:
        return any(s == "firing" and dict(k).get("alertname") == alertname for k, s in self._status.items())

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
