"""Runs alerting inside the daemon: evaluate the rules over our own snapshots, keep state, notify on-call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pgwatch_cpa.alerts.delivery import Endpoint, wait_event
from pgwatch_cpa.alerts.engine import (
    FIRING,
    PENDING,
    Alert,
    AlertEngine,
    AlertStateError,
    CorruptStateError,
    quarantine,
)
from pgwatch_cpa.alerts.history import History
from pgwatch_cpa.alerts.notify import (
    DEFAULT_INHIBIT,
    AlertmanagerReceiver,
    GroupingPolicy,
    NotifyMetrics,
    OutgoingAlert,
    WebhookReceiver,
    apply_inhibition,
)
from pgwatch_cpa.alerts.rules import RuleGroup, RuleSet, load_rules
from pgwatch_cpa.config.alerting import AlertingSettings, AlertmanagerReceiverSettings, WebhookReceiverSettings
from pgwatch_cpa.daemon.snapshot import SnapshotStore

log = logging.getLogger(__name__)

MIN_SPACING = 1.0  # evaluations triggered by new snapshots are at least this far apart


def load_rule_files(paths: Sequence[Path], default_interval: float) -> RuleSet:
    """One RuleSet from several files; a RuleError lists every problem of the first bad file."""
    groups: list[RuleGroup] = []
    for path in paths:
        groups.extend(load_rules(path, default_interval=default_interval).groups)
    return RuleSet(source=", ".join(str(p) for p in paths), groups=tuple(groups))


class AlertingService:
    def __init__(self, settings: AlertingSettings, store: SnapshotStore, interval: float,
                 registry: CollectorRegistry) -> None:
        self.settings = settings
        self.store = store
        self.interval = settings.evaluation_interval or interval
        self.rules = load_rule_files(settings.rules, self.interval)
        self.history = History.for_rules(self.rules)
        self.engine = AlertEngine(self.rules, self.history)
        self._for = {rule.name: rule.for_ for rule in self.rules.rules()}
        notify_metrics = NotifyMetrics(registry)
        self.receivers = [_build_receiver(r, settings.external_url, notify_metrics, self.interval)
                          for r in settings.receivers]
        self._restore_state()
        self._alerts = Gauge("pgwatch_alerts", "Alerts of the in-process rule engine, by state.",
                             ["alertname", "state"], registry=registry)
        self._eval_seconds = Histogram("pgwatch_alert_evaluation_duration_seconds",
                                       "Time to evaluate every alert rule once.",
                                       buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1), registry=registry)
        self._eval_failures = Counter("pgwatch_alert_rule_evaluation_failures_total",
                                      "Rule evaluations that failed (the rule keeps its previous alerts).",
                                      ["rule_group"], registry=registry)
        self._reported_failures: dict[str, int] = {}
        self._save_failures = Counter("pgwatch_alert_state_save_failures_total",
                                      "Times the alert state could not be written to alerting.state_file.",
                                      registry=registry)
        self._save_error: str | None = None  # the last save failure logged, until a save succeeds

    def replace_rules(self, rules: RuleSet) -> None:
        """Evaluate a reloaded rule set; the engine keeps the state of the rules that remain."""
        self.rules = rules
        self.history.rewindow(History.for_rules(rules))
        self.engine.replace_rules(rules)
        self._for = {rule.name: rule.for_ for rule in rules.rules()}

    def _restore_state(self) -> None:
        path = self.settings.state_file
        if path is None or not path.exists():
            return
        try:
            restored = self.engine.load(path)
            for receiver in self.receivers:
                if isinstance(receiver, WebhookReceiver):
                    receiver.restore_delivery_state(self.engine.restored_notifier_state.get(receiver.name))
            log.info("restored %d alert(s) from %s", restored, path)
        except CorruptStateError as exc:
            # Nothing of it was restored: start clean, and keep the file for a post-mortem instead of overwriting it.
            try:
                aside = f"moved it to {quarantine(path)}"
            except OSError as move_error:
                aside = f"could not move it aside ({move_error.strerror or move_error}); it will be overwritten"
            log.error("%s; starting with no alerts, %s", exc, aside)
        except AlertStateError as exc:
            log.error("%s; starting with no alerts", exc)

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(r.run(session, stop), name=f"receiver:{r.name}") for r in self.receivers]
            try:
                await self._evaluate_forever(stop)
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _evaluate_forever(self, stop: asyncio.Event) -> None:
        """Evaluate soon after every new snapshot (fast detection), when a pending alert's `for` elapses (so
        firing does not wait for the next poll), and at least every interval."""
        seen = self.store.version
        while not stop.is_set():
            changed = asyncio.create_task(self.store.wait_changed(seen))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({changed, stopped}, timeout=self._next_wait(time.time()),
                               return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            stopped.cancel()
            if stop.is_set():
                return
            await asyncio.sleep(0.1)  # let the rest of a poll cycle land
            seen = self.store.version
            self.evaluate(time.time())
            await wait_event(stop, MIN_SPACING)

    def _next_wait(self, now: float) -> float:
        deadlines = [a.active_at + self._for[a.rule] for a in self.engine.alerts() if a.state == PENDING]
        return max(0.0, min([self.interval, *(d - now for d in deadlines)]))

    def evaluate(self, now: float) -> list[Alert]:
        self.history.ingest(self.store.samples(), now)
        alerts = self.engine.evaluate(now, all_groups=True)
        stats = self.engine.stats()
        self._eval_seconds.observe(stats.last_duration)
        self._record(alerts, stats.failures_by_group)
        outgoing = self._outgoing(alerts)
        for receiver in self.receivers:
            receiver.update(outgoing, now)
        if self.settings.state_file is not None:
            self._save(self.settings.state_file, now)
        return alerts

    def _save(self, path: Path, now: float) -> None:
        """Save the state; a failure is counted every time and logged once until it changes or a save succeeds."""
        try:
            self.engine.save(path, now, self._delivery_state())
        except (OSError, AlertStateError) as exc:
            self._save_failures.inc()
            message = str(exc) if isinstance(exc, AlertStateError) else f"cannot save alert state to {path}: {exc}"
            if message != self._save_error:
                log.warning("%s (logged once; pgwatch_alert_state_save_failures_total counts them)", message)
                self._save_error = message
            return
        if self._save_error is not None:
            log.info("alert state saved to %s again", path)
            self._save_error = None

    def _delivery_state(self) -> dict[str, object]:
        # Alertmanager replicas deduplicate a re-sent alert themselves; only webhook groups need remembering.
        return {r.name: r.delivery_state() for r in self.receivers if isinstance(r, WebhookReceiver)}

    def _outgoing(self, alerts: Sequence[Alert]) -> list[OutgoingAlert]:
        base = self.settings.external_url.rstrip("/")
        out = [OutgoingAlert(a.labels, a.annotations, a.fired_at or a.active_at, a.resolved_at,
                             f"{base}/alerts" if base else "")
               for a in alerts if a.state == FIRING or a.resolved_at is not None]
        return apply_inhibition(out, DEFAULT_INHIBIT) if self.settings.inhibit_when_target_down else out

    def _record(self, alerts: Sequence[Alert], failures: dict[str, int]) -> None:
        self._alerts.clear()
        for rule in self.rules.rules():
            for state in ("pending", "firing"):
                self._alerts.labels(rule.name, state).set(0)
        for alert in alerts:
            if alert.state in ("pending", "firing"):
                self._alerts.labels(alert.rule, alert.state).inc()
        for group, count in failures.items():
            new = count - self._reported_failures.get(group, 0)
            if new > 0:
                self._eval_failures.labels(group).inc(new)
                log.warning("rule group %s: %d evaluation failure(s): %s", group, new,
                            "; ".join(f"{k}: {v}" for k, v in self.engine.stats().rule_errors.items()))
            self._reported_failures[group] = count


def receiver_endpoint(url: str, receiver: WebhookReceiverSettings | AlertmanagerReceiverSettings) -> Endpoint:
    """Where and how to POST for a configured receiver (auth, HMAC, timeout, attempts); reports use it too."""
    basic = (receiver.basic_auth.username, receiver.basic_auth.password) if receiver.basic_auth else None
    hmac_secret = receiver.hmac_secret if isinstance(receiver, WebhookReceiverSettings) else None
    return Endpoint(url, bearer_token=receiver.bearer_token, basic_auth=basic, hmac_secret=hmac_secret,
                    timeout=receiver.timeout, max_attempts=receiver.max_attempts)


def _build_receiver(receiver: WebhookReceiverSettings | AlertmanagerReceiverSettings, external_url: str,
                    metrics: NotifyMetrics, interval: float) -> WebhookReceiver | AlertmanagerReceiver:
    if isinstance(receiver, WebhookReceiverSettings):
        policy = GroupingPolicy(tuple(receiver.group_by), receiver.group_wait, receiver.group_interval,
                                receiver.repeat_interval, receiver.send_resolved)
        return WebhookReceiver(receiver.name, receiver_endpoint(receiver.url, receiver), policy, external_url, metrics)
    return AlertmanagerReceiver(receiver.name, [receiver_endpoint(u, receiver) for u in receiver.urls], metrics,
                                resend_delay=receiver.resend_delay, eval_interval=interval)
