"""Notification dispatch: Alertmanager-style grouping for webhooks, and direct push to Alertmanager replicas.

Receivers never queue one message per event: each keeps the *current* state of its groups and sends that, so a
receiver that was down gets what is still relevant when it returns, and a slow receiver never blocks evaluation.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from pgwatch_cpa.alerts.delivery import DeliveryFailed, Endpoint, PermanentFailure, post_with_retries, wait_event

log = logging.getLogger(__name__)

RESOLVED_RETENTION = 15 * 60.0  # Prometheus keeps re-sending resolved alerts this long
TICK = 0.25
MAX_IN_FLIGHT = 8  # groups a webhook receiver delivers at once: one hanging group does not hold up the others


@dataclass(frozen=True)
class OutgoingAlert:
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    ends_at: float | None = None  # set once resolved
    generator_url: str = ""

    @property
    def resolved(self) -> bool:
        return self.ends_at is not None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)


def fingerprint(labels: Mapping[str, str]) -> str:
    canonical = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def rfc3339_millis(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        kw = {"registry": registry} if registry is not None else {"registry": None}
        self.sent = Counter("pgwatch_notifications_total", "Notifications delivered, by receiver.",
                            ["receiver"], **kw)
        self.failed = Counter("pgwatch_notifications_failed_total",
                              "Notifications that could not be delivered (after retries), by receiver.",
                              ["receiver", "reason"], **kw)
        self.pending = Gauge("pgwatch_notification_groups_pending",
                             "Alert groups waiting to be delivered, by receiver.", ["receiver"], **kw)


# ------------------------------------------------------------------ inhibition


@dataclass(frozen=True)
class InhibitRule:
    """Like Alertmanager's: a firing source alert mutes target alerts that share the ``equal`` labels."""

    source: Mapping[str, str]  # label -> exact value (alertname may be a |-separated list)
    target: Mapping[str, str] = field(default_factory=dict)
    equal: tuple[str, ...] = ("target",)

    def _matches(self, matchers: Mapping[str, str], labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) in v.split("|") for k, v in matchers.items())

    def inhibited(self, alert: OutgoingAlert, firing: Iterable[OutgoingAlert]) -> bool:
        if not self._matches(self.target, alert.labels) or self._matches(self.source, alert.labels):
            return False
        return any(self._matches(self.source, src.labels)
                   and all(src.labels.get(k) == alert.labels.get(k) for k in self.equal) for src in firing)


DEFAULT_INHIBIT = (InhibitRule(source={"alertname": "PostgresDown|RedisDown"}),)


def apply_inhibition(alerts: Sequence[OutgoingAlert], rules: Sequence[InhibitRule]) -> list[OutgoingAlert]:
    firing = [a for a in alerts if not a.resolved]
    return [a for a in alerts if not any(rule.inhibited(a, firing) for rule in rules)]


# ------------------------------------------------------------------ webhook receiver (Alertmanager webhook v4)


@dataclass(frozen=True)
class GroupingPolicy:
    group_by: tuple[str, ...] = ("alertname", "target")
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0
    send_resolved: bool = True


@dataclass
class _Group:
    labels: dict[str, str]
    alerts: dict[str, OutgoingAlert] = field(default_factory=dict)
    created: float = 0.0
    last_flush: float | None = None
    acked: dict[str, bool] = field(default_factory=dict)  # fingerprint -> resolved, as last delivered

    def payload_alerts(self, send_resolved: bool) -> list[OutgoingAlert]:
        return [a for a in self.alerts.values() if not a.resolved or (send_resolved and fp_unacked(self, a))]

    def changed(self, send_resolved: bool) -> bool:
        return any(self.acked.get(fp) != a.resolved for fp, a in self.alerts.items()
                   if not a.resolved or send_resolved)

    def has_firing(self) -> bool:
        return any(not a.resolved for a in self.alerts.values())


def fp_unacked(group: _Group, alert: OutgoingAlert) -> bool:
    return group.acked.get(alert.fingerprint) is not True


class WebhookReceiver:
    """Sends Alertmanager webhook v4 payloads, grouped, with group_wait / group_interval / repeat_interval."""

    def __init__(self, name: str, endpoint: Endpoint, policy: GroupingPolicy, external_url: str,
                 metrics: NotifyMetrics) -> None:
        self.name, self.endpoint, self.policy = name, endpoint, policy
        self.external_url = external_url
        self.metrics = metrics
        self.groups: dict[str, _Group] = {}
        self._delivered: dict[str, tuple[float, dict[str, bool]]] = {}  # restored, until the group reappears
        self._wake = asyncio.Event()

    def delivery_state(self) -> dict[str, object]:
        """Per group: when it was last delivered and which alerts (fingerprint -> resolved) it carried."""
        return {key: {"last_flush": g.last_flush, "acked": g.acked}
                for key, g in self.groups.items() if g.last_flush is not None}

    def restore_delivery_state(self, saved: object) -> None:
        """Take a saved delivery_state(): a group still firing after a restart waits for its repeat_interval."""
        entries: Mapping[str, Any] = saved if isinstance(saved, Mapping) else {}
        for key, entry in entries.items():
            try:
                last_flush = float(entry["last_flush"])
                acked = {str(fp): bool(r) for fp, r in entry["acked"].items()}
            except (TypeError, KeyError, ValueError, AttributeError):
                continue  # a damaged entry costs one early notification, nothing else
            self._delivered[key] = (last_flush, acked)

    def group_key(self, alert: OutgoingAlert) -> tuple[str, dict[str, str]]:
        labels = {k: alert.labels[k] for k in self.policy.group_by if k in alert.labels}
        return "{}:" + orjson.dumps(labels, option=orjson.OPT_SORT_KEYS).decode(), labels

    def update(self, alerts: Sequence[OutgoingAlert], now: float) -> None:
        """Replace the receiver's view with the engine's current alerts (firing and recently resolved)."""
        seen: dict[str, set[str]] = {}
        for alert in alerts:
            key, labels = self.group_key(alert)
            group = self.groups.get(key) or self._new_group(key, labels, now)
            group.alerts[alert.fingerprint] = alert
            seen.setdefault(key, set()).add(alert.fingerprint)
        for key, group in list(self.groups.items()):
            for fp in set(group.alerts) - seen.get(key, set()):
                del group.alerts[fp]
            if not group.alerts:
                del self.groups[key]
        self.metrics.pending.labels(self.name).set(sum(1 for k in self.groups if self._due_at(k) is not None))
        self._wake.set()

    def _new_group(self, key: str, labels: dict[str, str], now: float) -> _Group:
        group = self.groups[key] = _Group(labels, created=now)
        if key in self._delivered:
            group.last_flush, group.acked = self._delivered.pop(key)
        return group

    def _due_at(self, key: str) -> float | None:
        group, p = self.groups[key], self.policy
        if group.last_flush is None:
            return group.created + p.group_wait if group.has_firing() else None
        if group.changed(p.send_resolved):
            return group.last_flush + p.group_interval
        if group.has_firing():
            return group.last_flush + p.repeat_interval
        return None

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        """Flush every due group, up to MAX_IN_FLIGHT groups at once (a group is never flushed twice at once)."""
        in_flight: dict[str, asyncio.Task[None]] = {}

        def done(key: str, _task: asyncio.Task[None]) -> None:
            in_flight.pop(key, None)
            self._wake.set()

        try:
            while not stop.is_set():
                now = time.time()
                self._wake.clear()
                for key in list(self.groups):
                    if len(in_flight) >= MAX_IN_FLIGHT:
                        break
                    if key not in in_flight and (due := self._due_at(key)) is not None and due <= now:
                        task = asyncio.create_task(self._flush(session, key, stop), name=f"flush:{self.name}:{key}")
                        in_flight[key] = task
                        task.add_done_callback(functools.partial(done, key))
                await wait_event(self._wake, TICK)
        except asyncio.CancelledError:
            for task in in_flight.values():
                task.cancel()
            raise
        finally:
            # On stop, deliveries under way finish their attempt (post_with_retries skips its backoff on stop).
            await asyncio.gather(*in_flight.values(), return_exceptions=True)

    async def _flush(self, session: aiohttp.ClientSession, key: str, stop: asyncio.Event) -> None:
        group = self.groups.get(key)
        if group is None:
            return
        alerts = group.payload_alerts(self.policy.send_resolved)
        snapshot = {a.fingerprint: a.resolved for a in alerts}
        body = orjson.dumps(self.payload(key, group, alerts))
        try:
            await post_with_retries(session, self.endpoint, body, stop)
            self.metrics.sent.labels(self.name).inc()
        except PermanentFailure as exc:
            # A 4xx will not get better by retrying: count it and move on (no retry loop).
            self.metrics.failed.labels(self.name, "rejected").inc()
            log.error("receiver %s rejected a notification: %s", self.name, exc)
        except DeliveryFailed as exc:
            self.metrics.failed.labels(self.name, "unreachable").inc()
            log.warning("receiver %s unreachable, will resend the group's current state: %s", self.name, exc)
            group.last_flush = time.time()  # retry after group_interval with whatever is current then
            return
        group.last_flush = time.time()
        group.acked.update(snapshot)

    def payload(self, key: str, group: _Group, alerts: Sequence[OutgoingAlert]) -> dict[str, object]:
        status = "firing" if any(not a.resolved for a in alerts) else "resolved"
        return {
            "version": "4", "groupKey": key, "truncatedAlerts": 0, "status": status, "receiver": self.name,
            "groupLabels": group.labels, "commonLabels": _common(a.labels for a in alerts),
            "commonAnnotations": _common(a.annotations for a in alerts), "externalURL": self.external_url,
            "alerts": [_alert_json(a) for a in alerts],
        }


def _alert_json(alert: OutgoingAlert) -> dict[str, object]:
    return {
        "status": "resolved" if alert.resolved else "firing",
        "labels": dict(alert.labels), "annotations": dict(alert.annotations),
        "startsAt": rfc3339_millis(alert.starts_at),
        "endsAt": rfc3339_millis(alert.ends_at) if alert.ends_at else "0001-01-01T00:00:00Z",
        "generatorURL": alert.generator_url, "fingerprint": alert.fingerprint,
    }


def _common(maps: Iterable[Mapping[str, str]]) -> dict[str, str]:
    maps = list(maps)
    if not maps:
        return {}
    return {k: v for k, v in maps[0].items() if all(m.get(k) == v for m in maps[1:])}


# ------------------------------------------------------------------ direct push to Alertmanager


class AlertmanagerReceiver:
    """POSTs to /api/v2/alerts of every replica, re-sending firing and resolved alerts as Prometheus does."""

    def __init__(self, name: str, endpoints: Sequence[Endpoint], metrics: NotifyMetrics,
                 resend_delay: float = 60.0, eval_interval: float = 15.0) -> None:
        self.name, self.endpoints, self.metrics = name, list(endpoints), metrics
        self.resend_delay = resend_delay
        self.valid_for = 4 * max(resend_delay, eval_interval)  # Prometheus's ValidUntil: AM resolves if we die
        self.alerts: list[OutgoingAlert] = []
        self._changed = {e.url: asyncio.Event() for e in self.endpoints}
        self._sent_state: dict[str, dict[str, bool]] = {e.url: {} for e in self.endpoints}

    def update(self, alerts: Sequence[OutgoingAlert], now: float) -> None:
        self.alerts = [a for a in alerts if not a.resolved or now - (a.ends_at or now) < RESOLVED_RETENTION]
        state = {a.fingerprint: a.resolved for a in self.alerts}
        for endpoint in self.endpoints:
            if any(self._sent_state[endpoint.url].get(fp) != r for fp, r in state.items()):
                self._changed[endpoint.url].set()

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._replica_loop(session, e, stop) for e in self.endpoints))

    async def _replica_loop(self, session: aiohttp.ClientSession, endpoint: Endpoint, stop: asyncio.Event) -> None:
        changed = self._changed[endpoint.url]
        while not stop.is_set():
            await wait_event(changed, self.resend_delay)
            changed.clear()
            if self.alerts and not stop.is_set():
                await self._send(session, endpoint, stop)

    async def _send(self, session: aiohttp.ClientSession, endpoint: Endpoint, stop: asyncio.Event) -> None:
        now = time.time()
        alerts = list(self.alerts)
        body = orjson.dumps([{
            "labels": dict(a.labels), "annotations": dict(a.annotations), "startsAt": rfc3339_millis(a.starts_at),
            "endsAt": rfc3339_millis(a.ends_at if a.ends_at else now + self.valid_for), "generatorURL": a.generator_url,
        } for a in alerts])
        api = Endpoint(**{**endpoint.__dict__, "url": endpoint.url.rstrip("/") + "/api/v2/alerts"})
        try:
            await post_with_retries(session, api, body, stop)
        except (PermanentFailure, DeliveryFailed) as exc:
            reason = "rejected" if isinstance(exc, PermanentFailure) else "unreachable"
            self.metrics.failed.labels(self.name, reason).inc()
            log.warning("alertmanager %s (%s) did not take the alerts: %s", self.name, endpoint.url, exc)
            return
        self.metrics.sent.labels(self.name).inc()
        self._sent_state[endpoint.url] = {a.fingerprint: a.resolved for a in alerts}
