"""Reloading the configuration at run time: on SIGHUP, and when a targets file (postgres_files, redis_files)
changes. The new config is read and validated whole (targets files and alert rule files included); a config
with any problem is refused, each problem logged with its path, and the running one stays. A valid one has
its targets applied as a difference (daemon.fleet) and its alert rules replaced (the engine keeps the state of
the rules that remain). Settings listed in RESTART_ONLY keep their running value, with a WARNING that they
need a restart. Metric names follow Prometheus's own reload metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from pgwatch_cpa.alerts.rules import RuleError, RuleSet
from pgwatch_cpa.config import Settings
from pgwatch_cpa.config.target_files import fingerprint
from pgwatch_cpa.daemon.alerting import load_rule_files
from pgwatch_cpa.errors import ConfigError
from pgwatch_cpa.secrets import describe

log = logging.getLogger(__name__)

# Owned by what is built once at start: the HTTP site, logging, alerting (receivers, state file, intervals: all
# of its keys but the rule files), the report schedule, and this replica's shard of the targets.
RESTART_ONLY = ("listen", "log_level", "log_format", "alerting", "report", "shard", "max_concurrent_cycles")
MAX_LOGGED_PROBLEMS = 50


class ConfigReloader:
    def __init__(self, load: Callable[[], Settings], apply: Callable[[Settings, RuleSet], Awaitable[str]],
                 running: Settings, registry: CollectorRegistry) -> None:
        """``load`` reads and validates the config as at start; ``apply`` runs a new config's targets and rules."""
        self.load = load
        self.apply = apply
        self.running = running
        self._requested = asyncio.Event()
        self._seen = fingerprint(self._patterns())  # the targets files as (about) when ``running`` read them
        self._reloads = Counter("pgwatch_config_reloads_total", "Configuration reloads (SIGHUP or a targets file "
                                "changed), by result; a refused config changes nothing.", ["result"], registry=registry)
        for result in ("success", "failure"):
            self._reloads.labels(result)
        self._last_ok = Gauge("pgwatch_config_last_reload_successful",
                              "1 if the last configuration reload succeeded, 0 if it was refused.", registry=registry)
        self._last_ok.set(1)
        self._last_ok_time = Gauge("pgwatch_config_last_reload_success_timestamp_seconds",
                                   "Time of the last successful configuration reload (or of the start).",
                                   registry=registry)
        self._last_ok_time.set(time.time())

    def request(self) -> None:
        """Ask for a reload (the SIGHUP handler); run() performs it."""
        self._requested.set()

    async def run(self) -> None:
        """Reload on request, and whenever a targets file's path, mtime or size changes."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.running.target_files_check_interval):
                    await self._requested.wait()
            if self._requested.is_set():
                self._requested.clear()
                await self._reload_watching("SIGHUP")
            elif fingerprint(self._patterns()) != self._seen:
                await self._reload_watching("a targets file changed")

    async def _reload_watching(self, why: str) -> None:
        """Reload, remembering the targets files as they were read (a change during the reload is seen next)."""
        patterns = self._patterns()
        self._seen = fingerprint(patterns)
        await self.reload(why)
        if self._patterns() != patterns:  # the new config names other files
            self._seen = fingerprint(self._patterns())

    def _patterns(self) -> list[str]:
        return [*self.running.postgres_files, *self.running.redis_files]

    async def reload(self, why: str) -> bool:
        log.info("%s: reloading the configuration", why)
        try:
            loaded, rules = await asyncio.to_thread(self._load_checked)
        except (ConfigError, RuleError) as exc:
            source = exc.source if isinstance(exc, ConfigError) else "alert rules"
            self._refuse(why, [f"{source}: {p}" for p in exc.problems])
            return False
        except Exception as exc:  # task boundary: a loader bug must not end the daemon
            self._refuse(why, [f"could not be loaded: {describe(exc)}"])
            return False
        settings = self._keep_restart_only(loaded)
        try:
            summary = await self.apply(settings, rules)
        except Exception as exc:  # task boundary: the reloader outlives a bug in applying a valid config
            self._reloads.labels("failure").inc()
            self._last_ok.set(0)
            log.error("%s: applying the new configuration failed part-way: %s", why, describe(exc))
            return False
        self.running = settings
        self._reloads.labels("success").inc()
        self._last_ok.set(1)
        self._last_ok_time.set(time.time())
        log.info("configuration reloaded (%s): %s", why, summary)
        return True

    def _load_checked(self) -> tuple[Settings, RuleSet]:
        settings = self.load()
        return settings, load_rule_files(settings.alerting.rules,
                                         settings.alerting.evaluation_interval or settings.interval)

    def _keep_restart_only(self, loaded: Settings) -> Settings:
        """``loaded`` with the running value of every RESTART_ONLY key (alerting: all but its rule files)."""
        running = self.running.model_copy(update={
            "alerting": self.running.alerting.model_copy(update={"rules": loaded.alerting.rules})})
        changed = [key for key in RESTART_ONLY if getattr(loaded, key) != getattr(running, key)]
        for key in changed:
            log.warning("reload: %s changed: this needs a restart; the running value stays until then", key)
        return loaded.model_copy(update={key: getattr(running, key) for key in changed})

    def _refuse(self, why: str, problems: list[str]) -> None:
        self._reloads.labels("failure").inc()
        self._last_ok.set(0)
        log.error("%s: new configuration refused (%d problem(s)); the running configuration stays", why,
                  len(problems))
        for problem in problems[:MAX_LOGGED_PROBLEMS]:
            log.error("  %s", problem)
        if len(problems) > MAX_LOGGED_PROBLEMS:
            log.error("  ... and %d more", len(problems) - MAX_LOGGED_PROBLEMS)
