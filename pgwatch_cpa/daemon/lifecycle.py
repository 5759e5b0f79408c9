"""Builds targets, pollers and the HTTP app from the settings, and owns the daemon's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import Counter, Gauge

from pgwatch_cpa.alerts.rules import RuleSet
from pgwatch_cpa.config import Settings
from pgwatch_cpa.daemon.alerting import AlertingService
from pgwatch_cpa.daemon.exposition import Exposition
from pgwatch_cpa.daemon.fleet import Fleet
from pgwatch_cpa.daemon.http import build_app
from pgwatch_cpa.daemon.http_guard import GuardedSite, ThrottledLog, server_args
from pgwatch_cpa.daemon.poller import TargetPoller
from pgwatch_cpa.daemon.reload import ConfigReloader
from pgwatch_cpa.daemon.reporting import ReportingService
from pgwatch_cpa.daemon.sharding import settings_for_shard, shard_summary
from pgwatch_cpa.daemon.snapshot import SnapshotStore
from pgwatch_cpa.daemon.web_config import BasicAuth, WebConfig
from pgwatch_cpa.errors import PgwatchError

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 4.0


class ListenError(PgwatchError):
    """The HTTP address cannot be bound."""


class Daemon:
    def __init__(self, settings: Settings, web_config: WebConfig | None = None,
                 reload: Callable[[], Settings] | None = None) -> None:
        """``reload`` reads the config again (SIGHUP, a targets file changed); without it there is no reload."""
        self.settings = settings_for_shard(settings)  # from here on, only this replica's targets
        self.shard_summary = shard_summary(settings, self.settings)
        self.web_config = web_config or WebConfig("defaults")
        self.auth = BasicAuth(self.web_config.users) if self.web_config.users else None
        self.store = SnapshotStore()
        self.exposition = Exposition(self.store)
        self.fleet = Fleet(self.settings, self.store)
        self._was_ready = False
        self._export_shard()
        self.reloader = (ConfigReloader(reload, self.apply, settings, self.exposition.live_registry)
                         if reload is not None else None)
        self.alerting = (AlertingService(settings.alerting, self.store, settings.interval,
                                         self.exposition.live_registry) if settings.alerting.rules else None)
        # Always there for /report; it builds on a schedule only when report.schedule is set.
        self.reporting = ReportingService(self.settings, self.exposition.live_registry)
        self.app = build_app(self.exposition, self, self.alerting.engine if self.alerting else None, self.reporting,
                             self.auth)
        self._http_closed = Counter("pgwatch_http_connections_closed_early_total",
                                    "HTTP connections closed before a request was served: reason=limit (at the cap "
                                    "of open connections), header_timeout (request headers too slow).",
                                    ["reason"], registry=self.exposition.live_registry)
        for reason in ("limit", "header_timeout"):
            self._http_closed.labels(reason)
        self.app.cleanup_ctx.append(self._background)

    @property
    def pollers(self) -> list[TargetPoller]:
        return list(self.fleet.pollers.values())

    async def apply(self, settings: Settings, rules: RuleSet) -> str:
        """Run the targets (this replica's shard of them) and alert rules of a new, valid config; say what
        changed."""
        mine = settings_for_shard(settings)
        change = await self.fleet.apply(mine)
        if self.alerting is not None:
            self.alerting.replace_rules(rules)
        elif settings.alerting.rules:
            log.warning("reload: alerting.rules: the daemon started without alert rules; a restart starts them")
        self.settings = mine
        self.reporting.settings = mine  # the next report covers the new targets
        self._shard_targets.set(len(self.fleet.pollers))
        self.shard_summary = shard_summary(settings, mine)
        return f"{change}; {sum(1 for _ in self.alerting.rules.rules()) if self.alerting else 0} alert rules"

    def _export_shard(self) -> None:
        shard = self.settings.shard
        self._shard_targets = Gauge("pgwatch_shard_targets", "Targets this replica watches (its shard's share of "
                                    "the config's).", registry=self.exposition.live_registry)
        self._shard_targets.set(len(self.fleet.pollers))
        Gauge("pgwatch_shard_info", "This replica's shard: number `shard` of `shards` (always 1; 1 of 1 unsharded).",
              ["shard", "shards"], registry=self.exposition.live_registry).labels(
            str(shard.number), str(shard.count)).set(1)

    def _web_summary(self) -> str:
        if self.web_config.source == "defaults":
            return ""
        features = [name for name, on in (("TLS", self.web_config.ssl_context is not None),
                                          (f"basic auth for {len(self.web_config.users)} user(s)", bool(self.auth)))
                    if on]
        return f"; {self.web_config.source}: {' and '.join(features) or 'neither TLS nor basic auth'}"

    def ready(self) -> tuple[bool, list[str]]:
        """Ready once every target has completed one poll (whatever its outcome); targets a reload adds later
        are listed while they wait, but do not take readiness back (a probe would drop a serving replica)."""
        waiting = [p.name for p in self.pollers if p.cycles_completed == 0]
        self._was_ready = self._was_ready or not waiting
        return self._was_ready, waiting

    async def _background(self, _app: web.Application) -> AsyncIterator[None]:
        await self.fleet.start()
        tasks = [asyncio.create_task(self.exposition.refresh_forever(), name="exposition")]
        tasks.append(asyncio.create_task(self.reporting.run(), name="reporting"))
        alerting_stop = asyncio.Event()
        if self.alerting is not None:
            tasks.append(asyncio.create_task(self.alerting.run(alerting_stop), name="alerting"))
        if self.reloader is not None:
            tasks.append(asyncio.create_task(self.reloader.run(), name="reloader"))
        try:
            yield
        finally:
            alerting_stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE / 2)
            await self.fleet.stop()

    async def serve(self, stop: asyncio.Event) -> None:
        throttled = ThrottledLog(logging.getLogger("pgwatch_cpa.daemon.http"))
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                               **server_args(throttled))
        await runner.setup()
        host, port = self.settings.listen_host_port
        site = GuardedSite(runner, host, port, throttled, ssl_context=self.web_config.ssl_context,
                           closed=lambda reason: self._http_closed.labels(reason).inc())
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ListenError(f"cannot listen on {self.settings.listen}: {exc.strerror or exc}") from None
        log.info("pgwatch-cpa listening on %s://%s/metrics (%d postgres, %d redis targets%s)", self.web_config.scheme,
                 self.settings.listen, len(self.settings.postgres), len(self.settings.redis), self._web_summary())
        if self.settings.shard.count > 1:
            log.info("%s", self.shard_summary)
        if self.auth and not self.web_config.ssl_context:
            log.warning("%s: basic auth without tls_server_config: passwords cross the network in clear text",
                        self.web_config.source)
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            await runner.cleanup()
            if self.auth is not None:
                self.auth.close()


def share_the_gil_finely(seconds: float = 0.0005) -> None:
    """Let a thread holding the GIL hand it over every 0.5 ms instead of Python's 5 ms: while the render thread
    works, the event loop (scrapes, collectors' I/O) waits at most this long for each of its turns.
    bench_cycle_cpu: scrape p99 during cycles 67 ms -> 10 ms on the large catalog, CPU per cycle unchanged."""
    sys.setswitchinterval(seconds)


async def run_daemon(settings: Settings, web: WebConfig | None, reload: Callable[[], Settings]) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the config that ``reload`` reads."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    daemon = Daemon(settings, web, reload)
    assert daemon.reloader is not None
    handlers = {signal.SIGTERM: stop.set, signal.SIGINT: stop.set, signal.SIGHUP: daemon.reloader.request}
    for sig, handler in handlers.items():
        loop.add_signal_handler(sig, handler)
    try:
        await daemon.serve(stop)
    finally:
        for sig in handlers:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
