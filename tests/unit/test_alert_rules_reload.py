"""A reloaded rule set: rules that remain keep their alerts, removed rules' alerts end, new rules start clean,
and the history keeps the series both rule sets read (with their samples) under the new windows."""

from __future__ import annotations

from pgwatch_cpa.alerts.engine import FIRING, PENDING, AlertEngine
from pgwatch_cpa.alerts.history import History
from pgwatch_cpa.alerts.rules import RuleSet, parse_rules

BEFORE = """
groups:
  - name: g
    interval: 1m
    rules:
      - alert: Down
        expr: up == 0
        for: 3m
      - alert: Lagging
        expr: lag > 10
"""

AFTER = """
groups:
  - name: g
    interval: 1m
    rules:
      - alert: Down
        expr: up == 0
        for: 3m
        annotations: {summary: 'reworded'}
      - alert: DownLong
        expr: max_over_time(up[10m]) == 0
"""


def feed(history: History, t: float) -> None:
    history.ingest([("up", {"target": "db1"}, 0.0), ("lag", {"target": "db1"}, 60.0)], t)


def alerts(engine: AlertEngine, t: float) -> dict[str, tuple[str, float]]:
    return {a.rule: (a.state, a.active_at) for a in engine.evaluate(t)}


def test_remaining_rules_keep_their_state_and_history_follows_the_new_windows() -> None:
    before = parse_rules(BEFORE)
    history = History.for_rules(before)
    engine = AlertEngine(before, history)
    for t in (0, 60, 120):
        feed(history, t)
        found = alerts(engine, t)
    assert found == {"Down": (PENDING, 0), "Lagging": (FIRING, 0)}

    after = parse_rules(AFTER)
    history.rewindow(History.for_rules(after))
    engine.replace_rules(after)
    assert history.names() == ["up"]  # lag is read by no rule any more
    feed(history, 180)
    found = alerts(engine, 180)
    assert found["Down"] == (FIRING, 0)  # its `for` timer ran on across the reload: pending since 0, fired at 3m
    assert "Lagging" not in found
    assert found["DownLong"][0] == FIRING
    assert [a.annotations for a in engine.alerts() if a.rule == "Down"] == [{"summary": "reworded"}]


def test_an_empty_rule_set_ends_every_alert() -> None:
    before = parse_rules(BEFORE)
    history = History.for_rules(before)
    engine = AlertEngine(before, history)
    feed(history, 0)
    assert alerts(engine, 0)
    empty = RuleSet(source="none", groups=())
    history.rewindow(History.for_rules(empty))
    engine.replace_rules(empty)
    assert alerts(engine, 60) == {} and history.names() == []
