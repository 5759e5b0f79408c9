"""Alert state with Prometheus's semantics (rules/alerting.go of 2.42), persisted across restarts.

Per rule, alerts are keyed by their label set (series labels without __name__, plus the rule's labels, plus
alertname). inactive -> pending -> firing once active for ``for``; a firing alert whose series disappears keeps
firing for ``keep_firing_for``, then is resolved and kept 15 minutes so the notifier can resend the resolve; a
pending alert that disappears is simply dropped. A rule whose evaluation fails leaves its alerts untouched.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from pgwatch_cpa.alerts.history import History, LabelKey, label_key
from pgwatch_cpa.alerts.promql import DEFAULT_LOOKBACK, EvalError, Evaluator, Sample
from pgwatch_cpa.alerts.promql.values import rotate_label_caches
from pgwatch_cpa.alerts.rules import AlertRule, RuleGroup, RuleSet
from pgwatch_cpa.alerts.templates import go_float_e
from pgwatch_cpa.errors import PgwatchError

RESOLVED_RETENTION = 900.0  # Prometheus keeps resolved alerts 15 m to resend the resolve
OUTAGE_TOLERANCE = 3600.0  # pending timers older than this downtime restart (Prometheus's outage tolerance)
STATE_VERSION = 1
MAX_STATE_BYTES = 64 * 1024**2  # ~100,000 alerts; a larger file is not ours
MAX_TIMESTAMP = 253402300800  # 10000-01-01T00:00:00Z

INACTIVE, PENDING, FIRING = "inactive", "pending", "firing"


class AlertStateError(PgwatchError):
    """The saved alert state cannot be read or written."""


class CorruptStateError(AlertStateError):
    """The state file was read but is not a state this version wrote (bad JSON, type, size or nesting)."""


@dataclass
class Alert:
    rule: str
    group: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: str
    active_at: float
    value: float
    fired_at: float | None = None
    resolved_at: float | None = None
    keep_firing_since: float | None = None

    @cached_property
    def key(self) -> LabelKey:
        return label_key(self.labels)


@dataclass
class RuleHealth:
    last_error: str | None = None
    last_duration: float = 0.0
    failures: int = 0


@dataclass
class EngineStats:
    alerts_by_state: dict[str, int]
    last_duration: float
    evaluations: int
    failures_by_group: dict[str, int]
    rule_errors: dict[str, str] = field(default_factory=dict)


class _RuleState:
    def __init__(self, rule: AlertRule) -> None:
        self.rule = rule
        self.active: dict[LabelKey, Alert] = {}
        self.health = RuleHealth()


class AlertEngine:
    """Evaluates a RuleSet over a History; each group is evaluated when its interval has elapsed."""

    def __init__(self, rules: RuleSet, history: History, *, lookback: float = DEFAULT_LOOKBACK,
                 external_labels: Mapping[str, str] | None = None,
                 resolved_retention: float = RESOLVED_RETENTION) -> None:
        self.rules = rules
        self.evaluator = Evaluator(history, lookback)
        self.external_labels = dict(external_labels or {})
        self.resolved_retention = resolved_retention
        self._groups = [(g, [_RuleState(r) for r in g.rules]) for g in rules.groups]
        self.restored_notifier_state: dict[str, object] = {}  # the receivers' part of the last loaded state file
        self._last_eval: dict[str, float] = {}
        self._evaluations = 0
        self._last_duration = 0.0
        self._group_failures: dict[str, int] = {g.name: 0 for g in rules.groups}

    @property
    def interval(self) -> float:
        """The shortest group interval: how often the caller should call evaluate()."""
        return min((g.interval for g in self.rules.groups), default=60.0)

    # -- evaluation ----------------------------------------------------------------------------------------

    def evaluate(self, now: float | None = None, *, all_groups: bool = False) -> list[Alert]:
        """Evaluate the groups that are due at ``now`` (all of them with all_groups); return current alerts."""
        now = time.time() if now is None else now
        started = time.perf_counter()
        rotate_label_caches()  # label sets the previous round's results created are not kept past this round
        for group, states in self._groups:
            if all_groups or self._due(group, now):
                self._last_eval[group.name] = now
                for state in states:
                    self._eval_rule(state, now)
        self._evaluations += 1
        self._last_duration = time.perf_counter() - started
        return self.alerts()

    def _due(self, group: RuleGroup, now: float) -> bool:
        last = self._last_eval.get(group.name)
        return last is None or now - last >= group.interval * 0.99  # tolerate a slightly early tick

    def _eval_rule(self, state: _RuleState, now: float) -> None:
        started = time.perf_counter()
        try:
            found = self._instances(state.rule, self.evaluator.vector(state.rule.expr, now), now)
        except (EvalError, ArithmeticError, ValueError) as exc:
            state.health.last_error = str(exc)
            state.health.failures += 1
            self._group_failures[state.rule.group] += 1
            return
        finally:
            state.health.last_duration = time.perf_counter() - started
        state.health.last_error = None
        _advance(state, found, now, self.resolved_retention)

    def _instances(self, rule: AlertRule, vector: list[Sample], now: float) -> dict[LabelKey, Alert]:
        """One pending alert per result sample, labels and annotations expanded with its labels and value."""
        out: dict[LabelKey, Alert] = {}
        for sample in vector:
            data = sample.labels
            labels = {k: v for k, v in data.items() if k != "__name__"}
            for key, tmpl in rule.labels.items():
                value = tmpl.render(data, sample.value, self.external_labels)
                if value:
                    labels[key] = value
                else:
                    labels.pop(key, None)
            labels["alertname"] = rule.name
            annotations = {k: t.render(data, sample.value, self.external_labels) for k, t in rule.annotations.items()}
            alert = Alert(rule.name, rule.group, labels, annotations, PENDING, now, sample.value)
            if alert.key in out:
                raise EvalError("vector contains metrics with the same labelset after applying alert labels")
            out[alert.key] = alert
        return out

    def replace_rules(self, rules: RuleSet) -> None:
        """Evaluate ``rules`` from now on. A rule with the group, name and static labels of a current one keeps
        its alerts (pending timers, firing) and health, as Prometheus's reload keeps them; other alerts end."""
        def identity(group: str, rule: AlertRule) -> tuple[str, str, tuple[tuple[str, str], ...]]:
            return group, rule.name, tuple(sorted(rule.static_labels.items()))

        current = {identity(g.name, s.rule): s for g, states in self._groups for s in states}

        def state_of(group: RuleGroup, rule: AlertRule) -> _RuleState:
            state = _RuleState(rule)
            previous = current.pop(identity(group.name, rule), None)
            if previous is not None:
                state.active, state.health = previous.active, previous.health
            return state

        self.rules = rules
        self._groups = [(g, [state_of(g, r) for r in g.rules]) for g in rules.groups]
        self._group_failures = {g.name: self._group_failures.get(g.name, 0) for g in rules.groups}
        self._last_eval = {g.name: self._last_eval[g.name] for g in rules.groups if g.name in self._last_eval}

    # -- reading -------------------------------------------------------------------------------------------

    def alerts(self) -> list[Alert]:
        """Pending, firing and recently resolved alerts (copies), ordered by rule then labels."""
        live = sorted((a for _, states in self._groups for s in states for a in s.active.values()),
                      key=lambda a: (a.rule, a.key))
        return [copy.copy(a) for a in live]

    def api_alerts(self) -> dict:
        """The body of Prometheus's GET /api/v1/alerts (pending and firing alerts only)."""
        alerts = []
        for a in self.alerts():
            if a.state == INACTIVE:
                continue
            item = {"labels": a.labels, "annotations": a.annotations, "state": a.state,
                    "activeAt": rfc3339_nano(a.active_at), "value": go_float_e(a.value)}
            if a.keep_firing_since is not None:
                item["keepFiringSince"] = rfc3339_nano(a.keep_firing_since)
            alerts.append(item)
        return {"status": "success", "data": {"alerts": alerts}}

    def stats(self) -> EngineStats:
        counts = {INACTIVE: 0, PENDING: 0, FIRING: 0}
        errors = {}
        for _, states in self._groups:
            for s in states:
                for a in s.active.values():
                    counts[a.state] += 1
                if s.health.last_error:
                    errors[s.rule.name] = s.health.last_error
        return EngineStats(counts, self._last_duration, self._evaluations, dict(self._group_failures), errors)

    # -- persistence ---------------------------------------------------------------------------------------

    def save(self, path: str | Path, now: float | None = None,
             notifier_state: Mapping[str, object] | None = None) -> None:
        """Write every alert's state as JSON, atomically (temporary file + rename).

        ``notifier_state`` (what the receivers last delivered) is saved in the same file, so that one atomic
        write restores both: a restart neither loses a firing alert nor notifies it again before its time.
        """
        path = Path(path)
        doc = {"version": STATE_VERSION, "saved_at": time.time() if now is None else now,
               "alerts": [_as_dict(a) for a in self.alerts()], "notifier": dict(notifier_state or {})}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, allow_nan=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise AlertStateError(f"cannot save alert state to {path}: {exc.strerror or exc}") from exc

    def load(self, path: str | Path, now: float | None = None) -> int:
        """Restore saved alerts of rules that still exist; returns how many were restored.

        Timers resume: a pending alert keeps its active_at, a firing alert stays firing and resolves (with its
        resolve) at the next evaluation if its condition ended while we were down. After a downtime longer than
        OUTAGE_TOLERANCE pending timers are dropped, as Prometheus does.

        The whole file is checked before anything is restored (size, JSON, nesting, the type of every field of
        every alert): a file with any problem raises AlertStateError naming the first one and restores nothing.
        """
        path = Path(path)
        if not path.exists():
            return 0
        try:
            with path.open("rb") as fh:
                raw = fh.read(MAX_STATE_BYTES + 1)
        except OSError as exc:
            raise AlertStateError(f"cannot read alert state {path}: {exc.strerror or exc}") from exc
        try:
            if len(raw) > MAX_STATE_BYTES:
                raise ValueError(f"larger than {MAX_STATE_BYTES // 1024**2} MiB")
            saved, saved_at, notifier = parse_state(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands of levels deep
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise CorruptStateError(f"cannot read alert state {path}: {reason}") from None
        self.restored_notifier_state = notifier
        now = time.time() if now is None else now
        restored = 0
        for alert in saved:
            if alert.state == PENDING and now - saved_at > OUTAGE_TOLERANCE:
                continue
            state = self._state_for(alert)
            if state is not None:
                state.active[alert.key] = alert
                restored += 1
        return restored

    def _state_for(self, alert: Alert) -> _RuleState | None:
        """The rule an alert belongs to: same name, its static labels present on the alert; same group first."""
        candidates = [s for _, states in self._groups for s in states if s.rule.name == alert.rule
                      and all(alert.labels.get(k) == v for k, v in s.rule.static_labels.items())]
        candidates.sort(key=lambda s: s.rule.group != alert.group)
        return candidates[0] if candidates else None


_ALERT_FIELDS = {f.name for f in fields(Alert)}  # a field an older version saved and this one lacks is dropped
_REQUIRED = ("rule", "group", "labels", "annotations", "state", "active_at", "value")


def parse_state(raw: bytes) -> tuple[list[Alert], float, dict[str, object]]:
    """The alerts, saved_at and notifier part of a state file, every field checked; ValueError names the first
    problem (``alerts[3].active_at: expected a number, got str``), RecursionError means nested too deeply."""
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError:
        raise ValueError("not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {_kind(doc)}")
    if doc.get("version") != STATE_VERSION or isinstance(doc.get("version"), bool):
        raise ValueError(f"version: expected {STATE_VERSION}, got {doc.get('version')!r:.40}")
    saved_at = _number(doc.get("saved_at"), "saved_at")
    notifier = doc.get("notifier", {})
    if not isinstance(notifier, dict) or not all(isinstance(v, dict) for v in notifier.values()):
        raise ValueError("notifier: expected an object of objects")
    items = doc.get("alerts")
    if not isinstance(items, list):
        raise ValueError(f"alerts: expected a list, got {_kind(items)}")
    return [_alert(item, f"alerts[{i}]") for i, item in enumerate(items)], saved_at, notifier


def _alert(item: object, where: str) -> Alert:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object, got {_kind(item)}")
    for name in _REQUIRED:
        if name not in item:
            raise ValueError(f"{where}: {name} is missing")
    for name in ("rule", "group"):
        if not isinstance(item[name], str):
            raise ValueError(f"{where}.{name}: expected a string, got {_kind(item[name])}")
    for name in ("labels", "annotations"):
        value = item[name]
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError(f"{where}.{name}: expected an object of strings")
    if item["state"] not in (INACTIVE, PENDING, FIRING):
        raise ValueError(f"{where}.state: expected one of {INACTIVE}, {PENDING}, {FIRING}, got {item['state']!r:.40}")
    value = item["value"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}.value: expected a number, got {_kind(value)}")
    if isinstance(value, int) and not -2**1023 < value < 2**1023:
        raise ValueError(f"{where}.value: {len(str(value))}-digit integer")
    since = {name: None if item.get(name) is None else _number(item[name], f"{where}.{name}")
             for name in ("fired_at", "resolved_at", "keep_firing_since")}
    return Alert(item["rule"], item["group"], dict(item["labels"]), dict(item["annotations"]), item["state"],
                 _number(item["active_at"], f"{where}.active_at"), float(value), since["fired_at"],
                 since["resolved_at"], since["keep_firing_since"])


def _number(value: object, where: str) -> float:
    """A timestamp: an int or a float (not a bool) from 1970 to 9999, the range the API's RFC 3339 can show."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {_kind(value)}")
    if not 0 <= value < MAX_TIMESTAMP:  # NaN and the infinities fail too
        raise ValueError(f"{where}: {value!r:.40} is not a time")
    return float(value)


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def quarantine(path: str | Path, now: float | None = None) -> Path:
    """Move an unusable state file aside as ``<name>.corrupt-<UTC time>`` (kept for a post-mortem); the new
    name. Raises OSError if it cannot be moved."""
    path = Path(path)
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, aside)
    return aside


def _as_dict(alert: Alert) -> dict:
    return {f.name: getattr(alert, f.name) for f in fields(alert)}


def _advance(state: _RuleState, found: dict[LabelKey, Alert], now: float, retention: float) -> None:
    """Prometheus's AlertingRule.Eval state update, step for step."""
    rule, active = state.rule, state.active
    for key, new in found.items():
        old = active.get(key)
        if old is not None and old.state != INACTIVE:
            old.value, old.annotations = new.value, new.annotations
        else:
            active[key] = new
    for key, alert in list(active.items()):
        if key not in found:
            keep_firing = False
            if alert.state == FIRING and rule.keep_firing_for > 0:
                if alert.keep_firing_since is None:
                    alert.keep_firing_since = now
                keep_firing = _ms(now - alert.keep_firing_since) < _ms(rule.keep_firing_for)
            expired = alert.resolved_at is not None and _ms(now - alert.resolved_at) > _ms(retention)
            if alert.state == PENDING or expired:
                del active[key]
            if alert.state != INACTIVE and not keep_firing:
                alert.state = INACTIVE
                alert.resolved_at = now
            if not keep_firing:
                continue
        else:
            alert.keep_firing_since = None
        if alert.state == PENDING and _ms(now - alert.active_at) >= _ms(rule.for_):
            alert.state = FIRING
            alert.fired_at = now


def _ms(seconds: float) -> int:
    """Durations compared in whole milliseconds, so 300.0000001 s of float noise is still exactly 5 m."""
    return round(seconds * 1000)


def rfc3339_nano(ts: float) -> str:
    """Go's time.RFC3339Nano in UTC (trailing zeros of the fraction dropped)."""
    dt = datetime.fromtimestamp(ts, UTC)
    frac = f"{dt.microsecond:06d}".rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"
