"""Rule file loading and strict validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgwatch_cpa.alerts.rules import RuleError, load_rules, parse_prometheus_duration, parse_rules
from pgwatch_cpa.alerts.templates import Template, go_float, go_float_e, humanize, humanize_duration
from pgwatch_cpa.errors import PgwatchError

GOOD = """
groups:
  - name: postgres
    interval: 30s
    rules:
      - alert: PostgresDown
        expr: pg_up == 0
        for: 1h30m
        keep_firing_for: 5m
        labels: {severity: critical, team: '{{ $labels.team }}'}
        annotations: {summary: '{{ $labels.target }} down ({{ $value | humanize }})'}
      - alert: Growth
        expr: predict_linear(pg_database_size_bytes[1h], 3600) > 1e9 and rate(x_total[5m] offset 10m) > 0
"""


def test_load_good_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yml"
    path.write_text(GOOD)
    rules = load_rules(path)
    group = rules.groups[0]
    assert (group.name, group.interval) == ("postgres", 30.0)
    down = group.rules[0]
    assert (down.name, down.for_, down.keep_firing_for) == ("PostgresDown", 5400.0, 300.0)
    assert down.static_labels == {"severity": "critical"}
    assert rules.windows() == {"pg_up": 0.0, "pg_database_size_bytes": 3600.0, "x_total": 900.0}


def test_all_problems_reported_at_once() -> None:
    text = """
groups:
  - name: postgres
    limit: 3
    rules:
      - alert: PostgresDown
        expr: quantile_over_time(0.9, x[5m])
      - alert: Bad
        expr: topk(3, x) > bool 1
        for: 5 minutes
        labels: {value: '{{ $value }}'}
        annotations: {x: '{{ query "up" }}'}
      - record: job:up:sum
        expr: sum(up)
      - alert: Syntax
        expr: 'up +'
        typo: 1
"""
    with pytest.raises(RuleError) as info:
        parse_rules(text, source="alerts.yml")
    problems = info.value.problems
    assert isinstance(info.value, PgwatchError)
    expected = [
        "alerts.yml: group \"postgres\": unsupported key 'limit'",
        'alerts.yml: group "postgres", rule "PostgresDown": unsupported function "quantile_over_time"',
        'alerts.yml: group "postgres", rule "Bad": unsupported aggregation "topk"',
        'alerts.yml: group "postgres", rule "Bad": for: not a valid duration string',
        "rule \"Bad\": label 'value' uses $value",
        'rule "Bad": annotations.x: unsupported template function or keyword "query"',
        'rule "job:up:sum": recording rules are not supported',
        'rule "Syntax": syntax error',
        "rule \"Syntax\": unsupported key 'typo'",
    ]
    for text in expected:
        assert any(text in p for p in problems), (text, problems)


def test_duplicate_keys_and_groups_rejected() -> None:
    with pytest.raises(RuleError, match="duplicate key"):
        parse_rules("groups:\n  - name: a\n    name: b\n")
    with pytest.raises(RuleError, match="duplicate group name"):
        parse_rules("groups:\n  - name: a\n  - name: a\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="cannot read"):
        load_rules(tmp_path / "nope.yml")


@pytest.mark.parametrize("text, seconds", [("5m", 300), ("1h30m", 5400), ("0", 0), ("1d", 86400), ("250ms", 0.25)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_prometheus_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1.5m", "5m1h", "-5m", "5 m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_prometheus_duration(text)


def test_templates() -> None:
    t = Template('{{ $labels.target }} at {{ $value | humanizePercentage }}; {{ printf "%.2f" $value }}'
                 ' {{ .Labels.missing }} {{- " x" }}')
    assert t.render({"target": "db1"}, 0.8125) == "db1 at 81.25%; 0.81 <no value> x"
    assert Template("{{ humanizeDuration $value }}").render({}, 3725) == "1h 2m 5s"
    assert Template("{{ $value }}").uses_value and not Template("x").uses_value


def test_go_float_formatting() -> None:
    assert [go_float(v) for v in (0.1, 1e6, 123456.0, 1e-5, 0.0001, float("inf"))] == [
        "0.1", "1e+06", "123456", "1e-05", "0.0001", "+Inf"]
    assert go_float_e(1.0) == "1e+00" and go_float_e(0.25) == "2.5e-01"
    assert humanize(1234567) == "1.235M" and humanize(0.001234) == "1.234m"
    assert humanize_duration(0.25) == "250ms"
