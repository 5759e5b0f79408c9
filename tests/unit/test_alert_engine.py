"""The alert state machine (Prometheus semantics) and its persistence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgwatch_cpa.alerts.engine import FIRING, INACTIVE, PENDING, AlertEngine, AlertStateError
from pgwatch_cpa.alerts.history import History
from pgwatch_cpa.alerts.rules import parse_rules

RULES = """
groups:
  - name: g
    interval: 1m
    rules:
      - alert: Down
        expr: up == 0
        for: 3m
        labels: {severity: critical}
        annotations: {summary: '{{ $labels.target }} down, value {{ $value }}'}
      - alert: Sticky
        expr: lag > 10
        keep_firing_for: 2m
"""


class Feed:
    """A history fed like the daemon feeds it: every minute the full current set of samples."""

    def __init__(self) -> None:
        self.rules = parse_rules(RULES)
        self.history = History.for_rules(self.rules)
        self.engine = AlertEngine(self.rules, self.history)

    def step(self, t: float, up: float | None = 1.0, lag: float = 0.0):
        samples = [("lag", {"target": "db1"}, lag)]
        if up is not None:
            samples.append(("up", {"target": "db1"}, up))
        self.history.ingest(samples, t)
        return {a.rule: a for a in self.engine.evaluate(t)}


def test_pending_then_firing_then_resolved_then_forgotten() -> None:
    f = Feed()
    assert f.step(0) == {}
    down = f.step(60, up=0)["Down"]
    assert (down.state, down.active_at) == (PENDING, 60)
    assert down.labels == {"alertname": "Down", "severity": "critical", "target": "db1"}
    assert down.annotations == {"summary": "db1 down, value 0"}
    assert f.step(180, up=0)["Down"].state == PENDING
    firing = f.step(240, up=0)["Down"]
    assert (firing.state, firing.fired_at) == (FIRING, 240)
    resolved = f.step(300, up=1)["Down"]
    assert (resolved.state, resolved.resolved_at) == (INACTIVE, 300)
    assert f.step(300 + 900, up=1)["Down"].state == INACTIVE  # kept 15 m for re-sending the resolve
    assert "Down" not in f.step(300 + 960, up=1)


def test_pending_alert_that_clears_is_dropped() -> None:
    f = Feed()
    f.step(0, up=0)
    assert "Down" not in f.step(60, up=1)


def test_keep_firing_for() -> None:
    f = Feed()
    assert f.step(0, lag=20)["Sticky"].state == FIRING  # no for: fires at once
    kept = f.step(60, lag=0)["Sticky"]
    assert (kept.state, kept.keep_firing_since) == (FIRING, 60)
    assert f.step(120, lag=0)["Sticky"].state == FIRING
    assert f.step(180, lag=0)["Sticky"].state == INACTIVE
    back = f.step(240, lag=30)["Sticky"]
    assert (back.state, back.active_at) == (FIRING, 240)


def test_series_disappearing_resolves_via_staleness() -> None:
    f = Feed()
    for t in (0, 60, 120, 180):
        f.step(t, up=0)
    assert f.step(240, up=0)["Down"].state == FIRING
    assert f.step(300, up=None)["Down"].state == INACTIVE  # stale marker: gone at once, not after 5 m


def test_groups_evaluated_on_their_interval() -> None:
    f = Feed()
    f.step(0, up=0)
    f.history.ingest([("up", {"target": "db1"}, 1.0)], 30)
    assert f.engine.evaluate(30)[0].state == PENDING  # not due yet: no re-evaluation
    assert f.engine.evaluate(30, all_groups=True) == []


def test_save_load_resumes_for_timer_and_resolves(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    f = Feed()
    f.step(0, up=0)
    f.step(60, up=0)
    f.engine.save(path, now=60)
    assert not list(tmp_path.glob(".*.tmp"))
    g = Feed()
    assert g.engine.load(path, now=120) == 1
    g.history.ingest([("up", {"target": "db1"}, 0.0)], 180)
    down = {a.rule: a for a in g.engine.evaluate(180)}["Down"]
    assert (down.state, down.active_at, down.fired_at) == (FIRING, 0, 180)  # timer resumed from t=0
    g.engine.save(path, now=180)
    h = Feed()
    h.engine.load(path, now=600)
    h.history.ingest([("up", {"target": "db1"}, 1.0)], 600)
    assert {a.rule: a for a in h.engine.evaluate(600)}["Down"].state == INACTIVE  # resolve produced


def test_pending_timer_dropped_after_long_outage(tmp_path: Path) -> None:
    f = Feed()
    f.step(0, up=0)
    f.engine.save(tmp_path / "s.json", now=0)
    assert Feed().engine.load(tmp_path / "s.json", now=7200) == 0


def test_corrupt_state_file(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text("{nope")
    with pytest.raises(AlertStateError):
        Feed().engine.load(tmp_path / "s.json")
    assert Feed().engine.load(tmp_path / "missing.json") == 0


def test_api_shape_and_stats() -> None:
    f = Feed()
    f.step(0, up=0, lag=12.5)
    body = f.engine.api_alerts()
    assert body["status"] == "success"
    by_name = {a["labels"]["alertname"]: a for a in body["data"]["alerts"]}
    assert by_name["Down"]["state"] == "pending" and by_name["Sticky"]["value"] == "1.25e+01"
    assert by_name["Down"]["activeAt"] == "1970-01-01T00:00:00Z"
    stats = f.engine.stats()
    assert stats.alerts_by_state == {INACTIVE: 0, PENDING: 1, FIRING: 1}
    assert stats.evaluations == 1 and stats.failures_by_group == {"g": 0}
    json.dumps(body)


def test_evaluation_failure_counts_and_keeps_state() -> None:
    rules = parse_rules("groups:\n  - name: g\n    rules:\n      - alert: Bad\n        expr: a + on() b\n")
    history = History.for_rules(rules)
    engine = AlertEngine(rules, history)
    history.ingest([("a", {"i": "1"}, 1.0), ("a", {"i": "2"}, 1.0), ("b", {}, 1.0)], 0)
    assert engine.evaluate(0) == []
    stats = engine.stats()
    assert stats.failures_by_group == {"g": 1} and "multiple matches" in stats.rule_errors["Bad"]


def test_history_keeps_only_rule_metrics_and_windows() -> None:
    f = Feed()
    f.history.ingest([("other", {}, 1.0), ("up", {"target": "x"}, 1.0)], 0)
    assert f.history.names() == ["lag", "up"] or f.history.names() == ["up"]
    for t in range(0, 3600, 60):
        f.history.ingest([("up", {"target": "x"}, 1.0)], t)
    assert f.history.samples_count() <= 6  # 5 m lookback window: 6 samples at most
