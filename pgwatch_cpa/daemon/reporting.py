"""The performance report inside the daemon: on the configured cron schedule, and for ``/report``.

A scheduled run builds a report (previous = the latest saved one, so it carries the diff), saves it as JSON in
``report.directory`` (atomically, pruning beyond ``keep``), keeps it in memory and POSTs it to the configured
webhook receivers:

    {"version": "1", "kind": "pgwatch-cpa-report", "report": <the report's JSON, pgwatch_cpa.report.model>}

with the receiver's bearer token or basic auth and its Standard Webhooks HMAC signature, retried like alert
notifications. ``/report`` serves a report at most CACHE_SECONDS old: the latest one, or one built for the
request. At most one build runs at a time; concurrent requests (and a schedule firing meanwhile) share it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import datetime

import aiohttp
import orjson
from croniter import croniter
from prometheus_client import CollectorRegistry, Counter, Gauge

from pgwatch_cpa.alerts.delivery import DeliveryFailed, Endpoint, PermanentFailure, post_with_retries
from pgwatch_cpa.config import Settings
from pgwatch_cpa.config.alerting import WebhookReceiverSettings
from pgwatch_cpa.daemon.alerting import receiver_endpoint
from pgwatch_cpa.daemon.http import ReportFormat
from pgwatch_cpa.report.build import build_report
from pgwatch_cpa.report.html import render_html
from pgwatch_cpa.report.markdown import render_markdown
from pgwatch_cpa.report.model import Report
from pgwatch_cpa.report.store import load_reports, save_report
from pgwatch_cpa.secrets import describe

log = logging.getLogger(__name__)

PAYLOAD_VERSION = "1"
PAYLOAD_KIND = "pgwatch-cpa-report"
CACHE_SECONDS = 60.0  # /report reuses a report this young: a refresh storm does not reach the databases
MAX_SLEEP = 60.0  # the schedule is re-checked against the wall clock at least this often
CONTENT_TYPES: dict[ReportFormat, str] = {"json": "application/json", "html": "text/html; charset=utf-8",
                                          "md": "text/markdown; charset=utf-8"}


def payload(report: Report) -> bytes:
    return orjson.dumps({"version": PAYLOAD_VERSION, "kind": PAYLOAD_KIND, "report": report.to_dict()})


class ReportingService:
    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.config = settings.report
        webhooks = {r.name: r for r in settings.alerting.receivers if isinstance(r, WebhookReceiverSettings)}
        # The config refuses a name that is not a webhook receiver (report.receivers[i]).
        self.receivers: list[tuple[str, Endpoint]] = [(name, receiver_endpoint(webhooks[name].url, webhooks[name]))
                                                      for name in self.config.receivers if name in webhooks]
        self.saved: deque[Report] = deque(maxlen=self.config.keep)  # scheduled reports, oldest first
        self.latest: Report | None = None
        self._build: asyncio.Task[Report] | None = None
        self._load: asyncio.Task[None] | None = None
        self._last_success = Gauge("pgwatch_report_last_success_timestamp_seconds",
                                   "Unix time of the last performance report built (scheduled or for /report).",
                                   registry=registry)
        self._failures = Counter("pgwatch_report_failures",
                                 "Performance report runs that failed: a build, a save, or a delivery to a receiver.",
                                 registry=registry)

    # -- the schedule

    async def run(self) -> None:
        """Load the saved reports, then build on the schedule until cancelled (without a schedule: only wait)."""
        try:
            await self.loaded()
            if self.config.schedule is None:
                await asyncio.Event().wait()
            async with aiohttp.ClientSession() as session:
                due = self.next_run(time.time())
                log.info("reports scheduled %r (%s): the first at %s", self.config.schedule, self.config.timezone,
                         datetime.fromtimestamp(due, self.config.zone).isoformat())
                while True:
                    while (left := due - time.time()) > 0:
                        await asyncio.sleep(min(left, MAX_SLEEP))
                    await self.run_scheduled(session)
                    due = self.next_run(time.time())
        finally:
            if self._build is not None:
                self._build.cancel()

    def next_run(self, after: float) -> float:
        """The first scheduled time after ``after`` (unix seconds), the cron expression read in the timezone."""
        start = datetime.fromtimestamp(after, self.config.zone)
        return float(croniter(self.config.schedule, start).get_next(datetime).timestamp())

    async def run_scheduled(self, session: aiohttp.ClientSession) -> Report | None:
        try:
            report = await self.build()
        except Exception:  # counted and logged by build(); the next run is on schedule
            return None
        self.saved.append(report)
        saved_to = ""
        if self.config.directory is not None:
            try:
                path = await asyncio.to_thread(save_report, self.config.directory, report, self.config.keep)
                saved_to = f", saved to {path}"
            except OSError as exc:
                self._failures.inc()
                log.warning("cannot save the report in %s: %s", self.config.directory, exc.strerror or exc)
        counts = {s: sum(1 for f in report.findings if f.severity == s) for s in ("critical", "warning", "info")}
        log.info("scheduled report: %d target(s), %d finding(s) (%s)%s", len(report.targets), len(report.findings),
                 ", ".join(f"{n} {s}" for s, n in counts.items()), saved_to)
        if self.receivers:
            body = payload(report)
            await asyncio.gather(*(self._deliver(session, name, endpoint, body)
                                   for name, endpoint in self.receivers))
        return report

    async def _deliver(self, session: aiohttp.ClientSession, name: str, endpoint: Endpoint, body: bytes) -> None:
        try:
            await post_with_retries(session, endpoint, body)
            log.info("report sent to receiver %s", name)
        except (PermanentFailure, DeliveryFailed) as exc:
            self._failures.inc()
            log.warning("cannot send the report to receiver %s: %s", name, exc)

    async def loaded(self) -> None:
        """The saved reports are read once, before the first build needs the previous one."""
        if self._load is None:
            self._load = asyncio.create_task(self._load_saved(), name="report:load")
        await asyncio.shield(self._load)

    async def _load_saved(self) -> None:
        if self.config.directory is None:
            return
        try:
            found = await asyncio.to_thread(load_reports, self.config.directory, self.config.keep)
        except OSError as exc:
            log.warning("cannot read the saved reports in %s: %s", self.config.directory, exc.strerror or exc)
            return
        self.saved.extend(found)  # builds wait for this: nothing newer is in memory yet
        if found:
            log.info("%d saved report(s) in %s; the newest is the next report's previous", len(found),
                     self.config.directory)

    # -- building, shared by the schedule and /report

    async def build(self) -> Report:
        """A new report; joins the build in progress if there is one (so at most one runs at a time)."""
        if self._build is None or self._build.done():
            self._build = asyncio.create_task(self._build_once(), name="report:build")
            self._build.add_done_callback(_retrieve)
        return await asyncio.shield(self._build)

    async def _build_once(self) -> Report:
        await self.loaded()  # the saved reports hold the previous one
        started = time.monotonic()
        try:
            report = await build_report(self.settings, previous=self.saved[-1] if self.saved else None)
        except Exception as exc:
            self._failures.inc()
            log.warning("cannot build the report: %s", describe(exc))
            raise
        self.latest = report
        self._last_success.set(report.generated_at)
        log.debug("report built in %.2fs", time.monotonic() - started)
        return report

    async def current(self) -> Report:
        """For /report: the latest report if younger than CACHE_SECONDS, else a new one."""
        latest = self.latest
        if latest is not None and time.time() - latest.generated_at < CACHE_SECONDS:
            return latest
        return await self.build()

    async def render(self, fmt: ReportFormat) -> tuple[bytes, str]:
        """The current report in ``fmt`` and its content type; HTML and Markdown render in a worker thread."""
        report = await self.current()
        if fmt == "html":
            body = (await asyncio.to_thread(render_html, report, tuple(self.saved))).encode()
        elif fmt == "md":
            body = (await asyncio.to_thread(render_markdown, report)).encode()
        else:
            body = report.to_json()
        return body, CONTENT_TYPES[fmt]


def _retrieve(task: asyncio.Task[Report]) -> None:
    """A build nobody awaits any more (its requester went away) must not log 'exception never retrieved'."""
    if not task.cancelled():
        task.exception()
