#!/usr/bin/env python3
"""Dashboards as code: writes grafana/dashboards/*.json from this script and the alert rules of alerts.yml.

    .venv/bin/python grafana/generate.py           # rewrite the JSON files
    .venv/bin/python grafana/generate.py --check   # exit 1 if a committed file differs from what this generates

Needs pyyaml and promql-parser (dependencies of the package). Conventions every panel follows
(tests/unit/test_grafana_dashboards.py enforces them):

* the datasource is the ``${datasource}`` variable everywhere (never a uid: file provisioning cannot resolve
  ``${DS_...}`` import inputs);
* every query selects ``target=~"$target",instance=~"$instance"`` (``SEL``), every rate/increase uses
  ``$__rate_interval``;
* every panel has a unit and a description; a panel that names an alert links to its runbook, quotes its
  description and draws its threshold as read from the rule's expr in alerts.yml (``threshold()``): no
  threshold is written here;
* rows go health -> saturation -> performance -> detail.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

import promql_parser
import yaml

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
SCHEMA_VERSION = 39  # Grafana 10.4+
RUNBOOK_BASE = "https://github.com/pgwatch-cpa/pgwatch-cpa/blob/main/README.md#"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'target=~"$target",instance=~"$instance"'
UIDS = {"overview": "pgwatch-cpa-overview", "postgres": "pgwatch-cpa-postgres", "redis": "pgwatch-cpa-redis"}
TITLES = {"overview": "pgwatch-cpa / Overview (SLO)", "postgres": "pgwatch-cpa / PostgreSQL",
          "redis": "pgwatch-cpa / Redis & cache"}

# The alert rules are read from alerts.yml: the panels draw their thresholds and quote their descriptions, so
# a threshold is written once, in the rule.
ALERTS_YML = HERE.parent / "alerts.yml"
_GROUPS = yaml.safe_load(ALERTS_YML.read_text(encoding="utf-8"))["groups"]
RULES: dict[str, dict[str, Any]] = {r["alert"]: r for g in _GROUPS for r in g["rules"] if "alert" in r}


class Threshold(NamedTuple):
    op: str  # ">", "<" or "==", with the threshold on the right
    value: float | str  # a number, or the name of the series the rule compares with (a per-target setting)


# The comparisons the rules use, each with its mirror for a number written on the left (``0.9 < x`` is ``x > 0.9``).
MIRROR = {">": "<", "<": ">", "==": "=="}


def _comparisons(node: Any) -> list[Threshold]:
    """The comparisons that decide whether a rule fires. The rules of alerts.yml are ``<value> <op> <number>``
    (number on either side) or ``<value> > <series>``, possibly followed by ``and``/``unless`` a guard (traffic,
    limit configured: not a threshold) or joined by ``or`` to the same comparison on another metric."""
    while isinstance(node, promql_parser.ParenExpr):
        node = node.expr
    if not isinstance(node, promql_parser.BinaryExpr):
        return []
    op = str(node.op)
    if op in ("and", "unless"):
        return _comparisons(node.lhs)
    if op == "or":
        left, right = _comparisons(node.lhs), _comparisons(node.rhs)
        return left + right if left and right else []  # a branch without a threshold is a shape we do not know
    if op not in MIRROR or (node.modifier is not None and node.modifier.return_bool):
        return []
    if isinstance(node.rhs, promql_parser.NumberLiteral):
        return [Threshold(op, node.rhs.val)]
    if isinstance(node.lhs, promql_parser.NumberLiteral):
        return [Threshold(MIRROR[op], node.lhs.val)]
    if isinstance(node.rhs, promql_parser.VectorSelector):
        return [Threshold(op, node.rhs.name)]
    return []


def rule(alert: str) -> dict[str, Any]:
    if alert not in RULES:
        raise KeyError(f"alert {alert} is not defined in {ALERTS_YML}")
    return RULES[alert]


@functools.cache
def threshold(alert: str) -> Threshold:
    """The threshold of an alert rule of alerts.yml, read from its expr; raises, naming the alert, if there is
    none or its branches disagree."""
    expr = rule(alert)["expr"]
    found = set(_comparisons(promql_parser.parse(expr)))
    if len(found) != 1:
        raise ValueError(f"{alert}: no single threshold in its expr (found {sorted(map(str, found))}): {expr!r}")
    op, value = found.pop()
    # whole numbers as integers, so that the JSON shows 30 rather than 30.0
    return Threshold(op, int(value) if isinstance(value, float) and value.is_integer() else value)


def _number(alert: str, *ops: str) -> float:
    op, value = threshold(alert)
    if op not in ops or isinstance(value, str):
        raise ValueError(f"{alert}: a panel here draws `{' or '.join(ops)} <number>`, the rule has `{op} {value}`")
    return value


def alert_description(alert: str) -> str:
    """The first sentence of the rule's description annotation, its ``{{ $labels.x }}`` shown as `x`."""
    text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", r"`\1`", rule(alert)["annotations"]["description"])
    if "{{" in text:
        raise ValueError(f"{alert}: a template other than $labels in its description: {text!r}")
    return re.split(r"(?<=\.)\s", text, maxsplit=1)[0]


# The guide's statement-latency target (p95 < 100 ms) has no alert of its own; the mean is drawn against it.
GUIDE_STATEMENT_MEAN = 0.1

GREEN, ORANGE, RED, BLUE, TEXT = "green", "orange", "red", "blue", "text"


def runbook(alert: str) -> str:
    return RUNBOOK_BASE + alert.lower()


# ---------------------------------------------------------------------------------------------------------------
# building blocks


def q(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend or "__auto", "instant": instant or table, "range": not (
        instant or table), "format": "table" if table else "time_series"}


def steps(*pairs: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in pairs]}


def above(threshold: float, warn: float | None = None) -> dict[str, Any]:
    """Green below, (orange from warn,) red from threshold."""
    pairs: list[tuple[str, float | None]] = [(GREEN, None)]
    if warn is not None:
        pairs.append((ORANGE, warn))
    pairs.append((RED, threshold))
    return steps(*pairs)


def below(threshold: float) -> dict[str, Any]:
    """Red below threshold, green from it."""
    return steps((RED, None), (GREEN, threshold))


# Thresholds drawn from the alert rules. Grafana colours a step from its own value on, so ``> t`` is drawn from t
# for a continuous value, but from the next value a count or a rate can take when t itself must stay green.

def alert_line(alert: str, warn: float | None = None) -> dict[str, Any]:
    """The panel shows the rule's own value: red from its threshold (``>``) or below it (``<``)."""
    if threshold(alert).op == "<" and warn is None:
        return below(_number(alert, "<"))
    t = _number(alert, ">")
    if warn is not None and warn >= t:
        raise ValueError(f"{alert}: the warning step {warn} is not below the alert's threshold {t}")
    return above(t, warn)


def alert_count(alert: str) -> dict[str, Any]:
    """An integer count the rule compares with ``> t``: red from t + 1."""
    return above(_number(alert, ">") + 1)


def alert_rate(alert: str) -> dict[str, Any]:
    """A per-second rate of the events a rule counts with ``increase(...) > 0``: red from the first visible rate.
    Another threshold would need the rule's window to convert, so it raises."""
    if _number(alert, ">") != 0:
        raise ValueError(f"{alert}: a rate panel draws only `> 0`, the rule has {threshold(alert)}")
    return steps((GREEN, None), (RED, 0.001))


def alert_down(alert: str) -> dict[str, Any]:
    """A 0/1 up metric whose rule fires on ``== 0``: red below 1 (up)."""
    if _number(alert, "==") != 0:
        raise ValueError(f"{alert}: an up panel draws only `== 0`, the rule has {threshold(alert)}")
    return below(1)


def alert_setting(alert: str) -> str:
    """The series a rule compares with instead of a number (a per-target setting): the panel queries it."""
    value = threshold(alert).value
    if not isinstance(value, str):
        raise ValueError(f"{alert}: compares with the number {value}, not with a setting's series")
    return value


# A count of things in an alert's state (failing collectors, slow statements, open breakers): one is too many.
ONE_IS_TOO_MANY = above(1)


# The series of settings an alert compares with (per target), drawn dashed next to the values.
DASHED_THRESHOLDS = {"matcher": {"id": "byRegexp", "options": ".*_threshold"},
                     "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}]}

UP_DOWN = [{"type": "value", "options": {"0": {"text": "DOWN", "color": RED, "index": 0},
                                         "1": {"text": "UP", "color": GREEN, "index": 1}}}]


class Board:
    """Accumulates panels with automatic ids and a left-to-right, top-to-bottom grid layout."""

    def __init__(self, key: str, description: str, tags: list[str]) -> None:
        self.key = key
        self.description = description
        self.tags = tags
        self.panels: list[dict[str, Any]] = []
        self.variables: list[dict[str, Any]] = []
        self._id = 0
        self._x = 0
        self._y = 0
        self._row_h = 0

    def _next_id(self) -> int:
        self._id += 1
        return self._id

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "id": self._next_id(), "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y}, "panels": []})
        self._y += 1

    def _newline(self) -> None:
        if self._x:
            self._y += self._row_h
        self._x, self._row_h = 0, 0

    def _place(self, w: int, h: int) -> dict[str, int]:
        if self._x + w > 24:
            self._newline()
        pos = {"h": h, "w": w, "x": self._x, "y": self._y}
        self._x += w
        self._row_h = max(self._row_h, h)
        if self._x >= 24:
            self._newline()
        return pos

    def panel(self, kind: str, title: str, description: str, unit: str, targets: list[dict[str, Any]], *,
              w: int = 6, h: int = 8, thresholds: dict[str, Any] | None = None, alert: str | None = None,
              links: tuple[str, ...] | list[str] = (), mappings: list[dict[str, Any]] | None = None,
              decimals: int | None = None,
              minmax: tuple[float | None, float | None] = (None, None), stack: bool = False,
              options: dict[str, Any] | None = None, overrides: list[dict[str, Any]] | None = None,
              transformations: list[dict[str, Any]] | None = None, custom: dict[str, Any] | None = None) -> None:
        defaults: dict[str, Any] = {"unit": unit, "thresholds": thresholds or steps((GREEN, None)),
                                    "mappings": mappings or [], "color": {"mode": "thresholds" if kind in (
                                        "stat", "gauge", "bargauge") else "palette-classic"}}
        if decimals is not None:
            defaults["decimals"] = decimals
        if minmax[0] is not None:
            defaults["min"] = minmax[0]
        if minmax[1] is not None:
            defaults["max"] = minmax[1]
        if kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line", "lineWidth": 1, "fillOpacity": 20 if stack else 10, "showPoints": "never",
                "spanNulls": False, "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                "thresholdsStyle": {"mode": "line+area" if thresholds else "off"},
                "axisSoftMin": 0,
            }
        if kind == "table":
            defaults["custom"] = {"align": "auto", "filterable": True, "cellOptions": {"type": "auto"}}
        if custom:
            defaults.setdefault("custom", {}).update(custom)
        panel_links = []
        if alert:
            panel_links.append({"title": f"Runbook: {alert}", "url": runbook(alert), "targetBlank": True})
        for key in links:
            panel_links.append({"title": TITLES[key], "url": f"/d/{UIDS[key]}?${{__url_time_range}}"
                                f"&${{__all_variables}}", "targetBlank": False})
        if alert:
            description = f"{description} Alert {alert}: {alert_description(alert)}"
        refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        panel: dict[str, Any] = {
            "type": kind, "id": self._next_id(), "title": title, "description": description,
            "datasource": DS, "gridPos": self._place(w, h),
            "targets": [{**t, "refId": refs[i], "datasource": DS} for i, t in enumerate(targets)],
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": _options(kind, options or {}),
        }
        if panel_links:
            panel["links"] = panel_links
        if transformations:
            panel["transformations"] = transformations
        self.panels.append(panel)

    # shorthands
    def stat(self, title: str, description: str, unit: str, expr: str, legend: str = "{{target}}",
             **kw: Any) -> None:
        kw.setdefault("h", 5)
        kw.setdefault("w", 4)
        self.panel("stat", title, description, unit, [q(expr, legend, instant=False)], **kw)

    def ts(self, title: str, description: str, unit: str, *targets: dict[str, Any], **kw: Any) -> None:
        kw.setdefault("w", 12)
        self.panel("timeseries", title, description, unit, list(targets), **kw)

    def table(self, title: str, description: str, unit: str, columns: list[tuple[str, str, str]],
              join: tuple[str, ...], sort_by: str, info: tuple[str, str] | None = None, **kw: Any) -> None:
        """Instant table queries, one column each (header, expr, unit), merged on the ``join`` labels.

        ``info`` = (label, expr): an info metric joined on the same labels whose ``label`` becomes the last
        column (its value, always 1, is hidden).
        """
        kw.setdefault("w", 24)
        kw.setdefault("h", 9)
        targets = [q(expr, header, table=True) for header, expr, _u in columns]
        refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        renames = {f"Value #{refs[i]}": header for i, (header, _e, _u) in enumerate(columns)}
        if len(columns) == 1 and info is None:
            renames = {"Value": columns[0][0]}
        excluded = {"Time": True, "__name__": True, "instance": True, "job": True}
        tail: tuple[str, ...] = ()
        if info is not None:
            targets.append(q(info[1], info[0], table=True))
            excluded[f"Value #{refs[len(columns)]}"] = True
            tail = (info[0],)
        # organize's indexByName and renameByName take the field names before the rename
        order = {name: i for i, name in enumerate(("target", *join, *renames, *tail))}
        overrides = [{"matcher": {"id": "byName", "options": header},
                      "properties": [{"id": "unit", "value": unit_}]} for header, _e, unit_ in columns]
        transformations = [{"id": "merge", "options": {}},
                           {"id": "organize", "options": {"excludeByName": excluded, "indexByName": order,
                                                          "renameByName": renames}},
                           {"id": "sortBy", "options": {"sort": [{"field": sort_by, "desc": True}]}}]
        self.panel("table", title, description, unit, targets, overrides=overrides,
                   transformations=transformations, options={"showHeader": True, "cellHeight": "sm",
                                                             "footer": {"show": False, "reducer": ["sum"]}},
                   **kw)

    def json(self, links: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "uid": UIDS[self.key], "title": TITLES[self.key], "description": self.description,
            "tags": self.tags, "editable": True, "graphTooltip": 1, "fiscalYearStartMonth": 0, "liveNow": False,
            "schemaVersion": SCHEMA_VERSION, "version": 1, "timezone": "browser", "weekStart": "",
            "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
            "timepicker": {"refresh_intervals": ["10s", "30s", "1m", "5m", "15m"]},
            "annotations": {"list": [
                {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                 "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                 "type": "dashboard"},
                {"datasource": DS, "enable": True, "hide": False, "iconColor": "red", "name": "Alerts firing",
                 "expr": f'ALERTS{{alertstate="firing",{SEL}}}', "step": "1m",
                 "titleFormat": "{{alertname}}", "textFormat": "{{target}} {{severity}}",
                 "useValueForTime": False},
            ]},
            "links": links,
            "templating": {"list": self.variables},
            "panels": self.panels,
        }


def _options(kind: str, extra: dict[str, Any]) -> dict[str, Any]:
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    base: dict[str, Any]
    if kind == "stat":
        base = {"reduceOptions": reduce, "colorMode": "background", "graphMode": "area", "justifyMode": "auto",
                "orientation": "auto", "textMode": "value_and_name", "wideLayout": True,
                "showPercentChange": False}
    elif kind in ("gauge", "bargauge"):
        base = {"reduceOptions": reduce, "orientation": "horizontal", "showThresholdMarkers": True}
    elif kind == "timeseries":
        base = {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                           "calcs": ["lastNotNull", "max"]},
                "tooltip": {"mode": "multi", "sort": "desc"}}
    else:
        base = {}
    base.update(extra)
    return base


def datasource_var() -> dict[str, Any]:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def query_var(name: str, label: str, query: str, description: str) -> dict[str, Any]:
    return {"name": name, "label": label, "description": description, "type": "query", "datasource": DS,
            "definition": query, "query": query, "refresh": 2, "regex": "", "sort": 1, "multi": True,
            "includeAll": True, "allValue": ".*", "current": {}, "options": [], "hide": 0, "skipUrlSync": False}


def common_vars(board: Board, target_metric: str, target_help: str) -> None:
    board.variables += [
        datasource_var(),
        query_var("instance", "pgwatch-cpa instance", "label_values(pgwatch_build_info, instance)",
                  "The pgwatch-cpa daemon(s) scraped by Prometheus (the instance label of the scrape)."),
        query_var("target", "Target", f'label_values({target_metric}{{instance=~"$instance"}}, target)', target_help),
    ]


def dashboard_links(current: str) -> list[dict[str, Any]]:
    links = [{"title": TITLES[key], "type": "link", "url": f"/d/{uid}", "icon": "dashboard", "includeVars": True,
              "keepTime": True, "targetBlank": False, "asDropdown": False, "tags": [], "tooltip": "",
              } for key, uid in UIDS.items() if key != current]
    links.append({"title": "Alert runbooks", "type": "link", "url": RUNBOOK_BASE.rstrip("#"), "icon": "doc",
                  "includeVars": False, "keepTime": False, "targetBlank": True, "asDropdown": False, "tags": [],
                  "tooltip": "README.md, Alert runbooks: one section per alert of alerts.yml"})
    return links


def rate(metric: str, extra: str = "") -> str:
    return f"rate({metric}{{{SEL}{extra}}}[$__rate_interval])"


# ---------------------------------------------------------------------------------------------------------------
# Overview / SLO

APP_HIT = 'result=~"hit|stale"'


def overview() -> dict[str, Any]:
    b = Board("overview", "The performance guide's targets per target: health, saturation, latency, hit ratios.",
              ["pgwatch-cpa", "slo"])
    common_vars(b, "pgwatch_collector_enabled", "PostgreSQL and Redis targets of pgwatch-cpa (the target label).")

    b.row("Health")
    b.stat("PostgreSQL up", "1 while the PostgreSQL target answers the daemon's probe.", "none",
           f"pg_up{{{SEL}}}", mappings=UP_DOWN, thresholds=alert_down("PostgresDown"), alert="PostgresDown",
           links=["postgres"])
    b.stat("Redis up", "1 while the Redis target answers the daemon's probe.", "none",
           f"redis_up{{{SEL}}}", mappings=UP_DOWN, thresholds=alert_down("RedisDown"), alert="RedisDown",
           links=["redis"])
    b.stat("Alerts firing", "Alerts of alerts.yml firing in Prometheus for the selected targets (ALERTS series).",
           "none", f'sum(ALERTS{{alertstate="firing",{SEL}}}) or vector(0)', legend="firing",
           thresholds=above(1), w=4)
    b.stat("Alerts pending", "Alerts whose condition holds but whose 'for' has not elapsed yet.", "none",
           f'sum(ALERTS{{alertstate="pending",{SEL}}}) or vector(0)', legend="pending",
           thresholds=steps((GREEN, None), (ORANGE, 1)), w=4)
    b.stat("Collectors failing", "Enabled collectors whose last run failed (pgwatch_collector_success = 0).", "none",
           f"sum by (target) (pgwatch_collector_enabled{{{SEL}}}) - sum by (target) "
           f"(pgwatch_collector_success{{{SEL}}})", thresholds=ONE_IS_TOO_MANY, alert="PgwatchCollectorFailing",
           w=8)

    b.row("Saturation")
    b.stat("Connection utilisation", "Client connections / connections available to ordinary roles "
           "(max_connections minus reserved).", "percentunit",
           f"max by (target) (pg_connections_utilization_ratio{{{SEL}}})",
           thresholds=alert_line("PostgresConnectionsHigh", 0.7), alert="PostgresConnectionsHigh", minmax=(0, 1),
           links=["postgres"], w=6)
    b.stat("Redis memory / maxmemory", "used_memory / maxmemory (no value when maxmemory is 0, i.e. unlimited).",
           "percentunit", f"max by (target) (redis_memory_used_bytes{{{SEL}}} / (redis_memory_max_bytes{{{SEL}}} > 0))",
           thresholds=alert_line("RedisMemoryHigh", 0.8), alert="RedisMemoryHigh", minmax=(0, 1), links=["redis"], w=6)
    b.stat("Redis clients / maxclients", "connected_clients / maxclients.", "percentunit",
           f"max by (target) (redis_connected_clients{{{SEL}}} / redis_config_maxclients{{{SEL}}})",
           thresholds=alert_line("RedisClientsHigh", 0.7), alert="RedisClientsHigh", minmax=(0, 1), links=["redis"],
           w=6)
    b.stat("Redis pool in use (app)", "redis-py connections in use / max_connections, worst application instance.",
           "percentunit", f'max by (target) (cpa_redis_pool_connections{{{SEL},state="in_use"}} / ignoring(state) '
           f"cpa_redis_pool_max_connections{{{SEL}}})", thresholds=alert_line("CpaRedisPoolSaturated", 0.7),
           alert="CpaRedisPoolSaturated", minmax=(0, 1), links=["redis"], w=6)
    b.stat("Database size", "Disk space of all databases of the target (pg_database_size).", "bytes",
           f"sum by (target) (pg_database_size_bytes{{{SEL}}})", w=6, links=["postgres"])
    b.stat("Database growth / day", "Linear growth rate of the databases' size over the last 6 hours, per day "
           "(deriv). Guide: track storage growth.", "bytes",
           f"sum by (target) (deriv(pg_database_size_bytes{{{SEL}}}[6h])) * 86400", w=6)
    b.stat("Slow statements", "Statements whose mean execution time exceeds slow_query_threshold.", "none",
           f"sum by (target) (pg_stat_statements_slow_statements{{{SEL}}})", thresholds=ONE_IS_TOO_MANY,
           alert="PostgresSlowQueries", w=6)
    b.stat("Redis evictions", "Keys evicted per second because maxmemory was reached.", "ops",
           f"sum by (target) ({rate('redis_evicted_keys_total')})", thresholds=alert_rate("RedisEvictions"),
           alert="RedisEvictions", w=6)

    b.row("Performance: the guide's targets")
    b.stat("Statement latency (mean)", "Mean execution time of all statements over the rate window: "
           "rate(seconds) / rate(calls). Guide target: query response time < 100 ms.", "s",
           f"sum by (target) ({rate('pg_stat_statements_seconds_total')}) / sum by (target) "
           f"({rate('pg_stat_statements_calls_total')})",
           thresholds=above(GUIDE_STATEMENT_MEAN, GUIDE_STATEMENT_MEAN / 2), w=6, links=["postgres"])
    b.stat("Slowest statement (mean)", "Largest per-statement mean execution time (pg_stat_statements "
           "mean_exec_time).", "s", f"max by (target) (pg_stat_statements_mean_seconds{{{SEL}}})",
           thresholds=alert_line("PostgresSlowQueries", GUIDE_STATEMENT_MEAN), alert="PostgresSlowQueries", w=6,
           links=["postgres"])
    b.stat("DB cache-hit ratio", "Shared-buffer hits / (hits + reads) over the rate window, all databases.",
           "percentunit",
           f"sum by (target) ({rate('pg_stat_database_blks_hit_total')}) / (sum by (target) "
           f"({rate('pg_stat_database_blks_hit_total')}) + sum by (target) "
           f"({rate('pg_stat_database_blks_read_total')}))",
           thresholds=alert_line("PostgresCacheHitRatioLow"), alert="PostgresCacheHitRatioLow", minmax=(0, 1),
           decimals=2, w=6, links=["postgres"])
    b.stat("App cache hit rate", "Caching service: (hit + stale) / all lookups over the rate window, all "
           "families and instances.", "percentunit",
           f"sum by (target) ({rate('cpa_cache_requests_total', ',' + APP_HIT)}) / sum by (target) "
           f"({rate('cpa_cache_requests_total')})",
           thresholds=alert_line("CpaCacheHitRateLow"), alert="CpaCacheHitRateLow", minmax=(0, 1), decimals=2, w=6,
           links=["redis"])

    business(b)
    application_targets(b)

    b.row("Detail: trends")
    b.ts("Statement latency", "Mean statement execution time per target over time (rate of seconds / rate "
         "of calls); the line is the guide's 100 ms target.", "s",
         q(f"sum by (target) ({rate('pg_stat_statements_seconds_total')}) / sum by (target) "
           f"({rate('pg_stat_statements_calls_total')})", "{{target}} mean"),
         q(f"max by (target) (pg_stat_statements_mean_seconds{{{SEL}}})", "{{target}} slowest statement"),
         thresholds=above(GUIDE_STATEMENT_MEAN))
    b.ts("Connection utilisation", "Connection utilisation over time; the line is the alert's threshold.",
         "percentunit", q(f"max by (target) (pg_connections_utilization_ratio{{{SEL}}})", "{{target}}"),
         thresholds=alert_line("PostgresConnectionsHigh"), alert="PostgresConnectionsHigh", minmax=(0, 1))
    b.ts("Cache-hit ratios", f"PostgreSQL buffer cache-hit ratio (PostgresCacheHitRatioLow below "
         f"{_number('PostgresCacheHitRatioLow', '<'):.0%}) and the application cache hit rate (CpaCacheHitRateLow "
         f"below {_number('CpaCacheHitRateLow', '<'):.0%}, the line).", "percentunit",
         q(f"sum by (target) ({rate('pg_stat_database_blks_hit_total')}) / (sum by (target) "
           f"({rate('pg_stat_database_blks_hit_total')}) + sum by (target) "
           f"({rate('pg_stat_database_blks_read_total')}))", "{{target}} PostgreSQL buffers"),
         q(f"sum by (target) ({rate('cpa_cache_requests_total', ',' + APP_HIT)}) / sum by (target) "
           f"({rate('cpa_cache_requests_total')})", "{{target}} application cache"),
         thresholds=alert_line("CpaCacheHitRateLow"), minmax=(None, 1))
    b.ts("Database size", "Size of each database over time.", "bytes",
         q(f"sum by (target, datname) (pg_database_size_bytes{{{SEL}}})", "{{target}} {{datname}}"))
    application_trends(b)
    return b.json(dashboard_links("overview"))


def business(b: Board) -> None:
    """The guide's business targets, from the custom queries of builtin:cpa_business.yaml."""
    b.row("Performance: business targets (OCR, report generation, QuickBooks sync)")
    b.stat("Oldest document waiting for OCR", "Age of the oldest document pending or processing OCR, since its "
           "upload (cpa_business.yaml). Guide target: OCR < 30 s.", "s",
           f"max by (target) (cpa_business_ocr_oldest_age_seconds{{{SEL}}})",
           thresholds=alert_line("CpaOcrBacklogSlow"), alert="CpaOcrBacklogSlow", w=6)
    b.stat("Documents waiting for OCR", "Documents pending or processing OCR.", "none",
           f"sum by (target) (cpa_business_ocr_documents{{{SEL}}})", w=6)
    b.stat("Oldest unfinished report job", "Age of the oldest queued or running report job, since it was "
           "requested (no value: no backlog). Guide target: report generation < 60 s.", "s",
           f"max by (target) (cpa_business_reports_oldest_age_seconds{{{SEL}}})",
           thresholds=alert_line("CpaReportGenerationSlow"), alert="CpaReportGenerationSlow", w=6)
    b.stat("Oldest running QuickBooks sync", "How long the oldest running QuickBooks sync has run. Guide target: "
           "sync < 5 minutes.", "s", f"max by (target) (cpa_business_quickbooks_running_oldest_age_seconds{{{SEL}}})",
           thresholds=alert_line("CpaQuickBooksSyncSlow"), alert="CpaQuickBooksSyncSlow", w=6)
    b.ts("Business backlog ages", "Oldest OCR document, report job and running QuickBooks sync over time.", "s",
         q(f"max by (target) (cpa_business_ocr_oldest_age_seconds{{{SEL}}})", "{{target}} OCR"),
         q(f"max by (target) (cpa_business_reports_oldest_age_seconds{{{SEL}}})", "{{target}} report jobs"),
         q(f"max by (target) (cpa_business_quickbooks_running_oldest_age_seconds{{{SEL}}})",
           "{{target}} QuickBooks sync"))
    b.ts("QuickBooks sync freshness", "Per entity type: the largest age of an organization's last completed "
         "sync, and (right axis) how many organizations have no completed sync in the last 5 minutes.", "s",
         q(f"max by (target, entity_type) (cpa_business_quickbooks_last_completed_max_age_seconds{{{SEL}}})",
           "{{target}} {{entity_type}} last completed"),
         q(f"sum by (target, entity_type) (cpa_business_quickbooks_stale_organizations{{{SEL}}})",
           "{{target}} {{entity_type}} stale organizations"),
         overrides=[{"matcher": {"id": "byRegexp", "options": ".*stale organizations"},
                     "properties": [{"id": "unit", "value": "none"},
                                    {"id": "custom.axisPlacement", "value": "right"}]}])
def p95(histogram: str, by: str = "target") -> str:
    """The 95th percentile over the rate window, from the bucket rates summed by ``by`` (and le)."""
    return f"histogram_quantile(0.95, sum by ({by}, le) ({rate(histogram + '_bucket')}))"


POOL_IN_USE = (f'cpa_pg_pool_connections{{{SEL},state="in_use"}} / ignoring(state) '
               f"cpa_pg_pool_max_connections{{{SEL}}}")


def application_targets(b: Board) -> None:
    """The application's side of the guide's targets: its PostgreSQL pool, API and query p95, error ratio."""
    b.row("Performance: the application (PostgreSQL pool, API and query p95, errors)")
    b.stat("API latency p95", "95th percentile of the application's API requests over the rate window, all "
           "operations and instances (histogram_quantile of cpa_request_duration_seconds).", "s",
           p95("cpa_request_duration_seconds"), thresholds=alert_line("CpaApiLatencyHigh"),
           alert="CpaApiLatencyHigh", w=6)
    b.stat("Query latency p95", "95th percentile of the application's query-layer transactions over the rate "
           "window (histogram_quantile of cpa_db_query_duration_seconds).", "s",
           p95("cpa_db_query_duration_seconds"), thresholds=alert_line("CpaQueryLatencyHigh"),
           alert="CpaQueryLatencyHigh", w=6)
    b.stat("PostgreSQL pool in use (app)", "psycopg_pool connections in use / the pool's max_size, worst "
           "application instance (one instance's pool, not the server's max_connections).", "percentunit",
           f"max by (target) ({POOL_IN_USE})", thresholds=alert_line("CpaPgPoolSaturated", 0.7),
           alert="CpaPgPoolSaturated", minmax=(0, 1), w=6)
    b.stat("DB error ratio (app)", "Failed / all query-layer transactions over the rate window, every kind.",
           "percentunit", f"sum by (target) ({rate('cpa_db_errors_total')}) / sum by (target) "
           f"({rate('cpa_db_queries_total')})", thresholds=alert_line("CpaDbErrorRatioHigh"),
           alert="CpaDbErrorRatioHigh", decimals=3, w=6)


def application_trends(b: Board) -> None:
    b.row("Detail: the application")
    b.ts("API latency p95 by operation", "95th percentile per operation and overall; the line is the guide's "
         "200 ms (CpaApiLatencyHigh).", "s",
         q(p95("cpa_request_duration_seconds"), "{{target}} all"),
         q(p95("cpa_request_duration_seconds", "target, operation"), "{{operation}}"),
         thresholds=alert_line("CpaApiLatencyHigh"), alert="CpaApiLatencyHigh", w=12)
    b.ts("Query latency p95 by operation", "95th percentile per query-layer operation and overall; the line is "
         "the guide's 100 ms (CpaQueryLatencyHigh).", "s",
         q(p95("cpa_db_query_duration_seconds"), "{{target}} all"),
         q(p95("cpa_db_query_duration_seconds", "target, operation"), "{{operation}}"),
         thresholds=alert_line("CpaQueryLatencyHigh"), alert="CpaQueryLatencyHigh", w=12)
    b.ts("PostgreSQL pool utilisation (app)", "Connections in use / max_size per application instance; the line "
         "is CpaPgPoolSaturated's threshold.", "percentunit",
         q(f"max by (target, app_instance) ({POOL_IN_USE})", "{{app_instance}}"),
         thresholds=alert_line("CpaPgPoolSaturated"), alert="CpaPgPoolSaturated", minmax=(0, 1), w=12)
    b.ts("PostgreSQL pool waits and timeouts (app)", "Requests waiting for a connection now, seconds spent "
         "waiting per second, and pool timeouts per second (CpaPgPoolTimeouts fires on any).", "short",
         q(f"sum by (target, app_instance) (cpa_pg_pool_waiting_requests{{{SEL}}})", "{{app_instance}} waiting"),
         q(f"sum by (target, app_instance) ({rate('cpa_pg_pool_wait_seconds_total')})",
           "{{app_instance}} s waited / s"),
         q(f"sum by (target, app_instance) ({rate('cpa_pg_pool_timeouts_total')})", "{{app_instance}} timeouts/s"),
         alert="CpaPgPoolTimeouts", w=12)
    archiving(b)
    return b.json(dashboard_links("overview"))


def archiving(b: Board) -> None:
    """The CPA archiver, one series per policy: its published progress and the database's backlog."""
    b.row("Detail: archiving per policy")
    b.ts("Schedule periods since the last successful run", "Time since the policy's last run in which every "
         "organization succeeded, in schedule periods (a day for the daily run).", "short",
         q(f"(time() - max by (target, policy) (cpa_archive_last_success_timestamp_seconds{{{SEL}}})) / max by "
           f"(target, policy) (cpa_archive_schedule_period_seconds{{{SEL}}})", "{{policy}}"),
         thresholds=alert_line("CpaArchivalStale"), alert="CpaArchivalStale", w=6)
    b.ts("Rows archived / day", "Rows archived per policy (exported and applied, or marked), as a daily rate.",
         "short", q(f"sum by (target, policy) ({rate('cpa_archive_rows_archived_total')}) * 86400", "{{policy}}"),
         w=6)
    b.ts("Organizations failed / day", "Organizations whose run of the policy failed, as a daily rate (the ids are "
         "in the archive_failures table).", "short",
         q(f"sum by (target, policy) ({rate('cpa_archive_failures_total')}) * 86400", "{{policy}}"),
         thresholds=steps((GREEN, None), (RED, 0.001)), w=6)
    b.ts("Days the oldest due row is past its policy", "Age of the oldest row due for archiving minus the "
         "policy's archive_after, in days (shipped/queries/cpa_archive.yaml); a daily archiver keeps it under 1.",
         "short", q(f"max by (target, policy) ((cpa_archive_backlog_oldest_due_age_seconds{{{SEL}}} - "
                    f"cpa_archive_backlog_archive_after_seconds{{{SEL}}}) / 86400)", "{{policy}}"),
         thresholds=alert_line("CpaArchivalBacklog"), alert="CpaArchivalBacklog", w=6)


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL

DB = ',datname=~"$datname"'


def postgres() -> dict[str, Any]:
    b = Board("postgres", "PostgreSQL targets of pgwatch-cpa: activity, statements, indexes, tables, vacuum, "
              "locks, replication, checkpoints and WAL, sizes.", ["pgwatch-cpa", "postgresql"])
    common_vars(b, "pg_up", "PostgreSQL targets of pgwatch-cpa.")
    b.variables.append(query_var("datname", "Database", f"label_values(pg_stat_database_numbackends{{{SEL}}}, "
                                 "datname)", "Databases of the selected targets (per-database panels)."))

    b.row("Health")
    b.stat("Up", "1 while the target answers the daemon's probe.", "none", f"pg_up{{{SEL}}}", mappings=UP_DOWN,
           thresholds=alert_down("PostgresDown"), alert="PostgresDown")
    b.stat("Collectors failing", "Enabled collectors whose last run failed.", "none",
           f"sum by (target) (pgwatch_collector_enabled{{{SEL}}}) - sum by (target) "
           f"(pgwatch_collector_success{{{SEL}}})", thresholds=ONE_IS_TOO_MANY, alert="PgwatchCollectorFailing")
    b.stat("Deadlocks", "Deadlocks detected in the rate window, all selected databases.", "none",
           f"sum by (target) (increase(pg_stat_database_deadlocks_total{{{SEL}{DB}}}[$__rate_interval]))",
           thresholds=alert_count("PostgresDeadlocks"), alert="PostgresDeadlocks")
    b.stat("Invalid indexes", "Indexes with indisvalid = false (a failed CREATE INDEX CONCURRENTLY): they cost "
           "writes and serve no query. Drop and rebuild.", "none",
           f"sum by (target) (pg_indexes_invalid{{{SEL}{DB}}})", thresholds=alert_count("PostgresInvalidIndex"),
           alert="PostgresInvalidIndex")
    b.stat("Replica", "1 if the server is a standby (pg_is_in_recovery).", "none",
           f"pg_replication_is_replica{{{SEL}}}",
           mappings=[{"type": "value", "options": {"0": {"text": "primary", "index": 0},
                                                   "1": {"text": "standby", "index": 1}}}],
           thresholds=steps((BLUE, None)))
    b.stat("Transaction ID age", "age(datfrozenxid) of the oldest selected database; wraparound protection "
           "starts at 2^31 minus this.", "short", f"max by (target) (pg_database_frozen_xid_age{{{SEL}{DB}}})",
           thresholds=alert_line("PostgresXidWraparound"), alert="PostgresXidWraparound")
    b.ts("Collector duration", "Duration of each collector's last run; a collector near the poll interval or "
         "its statement_timeout needs attention.", "s",
         q(f"pgwatch_collector_duration_seconds{{{SEL}}}", "{{target}} {{collector}}"), w=12, h=7)
    b.ts("Transactions", "Commits and rollbacks per second.", "ops",
         q(f"sum by (target) ({rate('pg_stat_database_xact_commit_total', DB)})", "{{target}} commit"),
         q(f"sum by (target) ({rate('pg_stat_database_xact_rollback_total', DB)})", "{{target}} rollback"),
         w=12, h=7)

    b.row("Saturation: connections, sessions, locks")
    b.ts("Connections by state", "Client connections per state (the daemon's own excluded).", "short",
         q(f"sum by (target, state) (pg_stat_activity_connections{{{SEL}{DB}}})", "{{target}} {{state}}"),
         stack=True, w=8)
    b.ts("Connection utilisation", "Connections / connections available to ordinary roles.",
         "percentunit", q(f"max by (target) (pg_connections_utilization_ratio{{{SEL}}})", "{{target}}"),
         q(f"max by (target) (pg_settings_max_connections{{{SEL}}})", "{{target}} max_connections"),
         thresholds=alert_line("PostgresConnectionsHigh"), alert="PostgresConnectionsHigh", w=8,
         overrides=[{"matcher": {"id": "byRegexp", "options": ".*max_connections"},
                     "properties": [{"id": "unit", "value": "short"},
                                    {"id": "custom.axisPlacement", "value": "right"}]}])
    b.ts("Active sessions by wait event type", "Active client sessions by what they wait on ('none': on CPU). "
         "Lock and LWLock waits point at contention, IO at reads.", "short",
         q(f"sum by (target, wait_event_type) (pg_stat_activity_active_wait_event_type_connections{{{SEL}}})",
           "{{target}} {{wait_event_type}}"), stack=True, w=8)
    b.ts("Long and idle-in-transaction sessions", "Age of the oldest running query and the longest idle-in-"
         "transaction session, and the target's long_query_threshold and idle_in_transaction_threshold settings "
         "(dashed) the alerts compare them with. Idle in transaction holds locks and blocks vacuum.", "s",
         q(f"max by (target) (pg_stat_activity_oldest_query_age_seconds{{{SEL}}})", "{{target}} oldest query"),
         q(f"max by (target) (pg_stat_activity_idle_in_transaction_seconds{{{SEL}}})",
           "{{target}} idle in transaction"),
         q(f'max by (target, state) (pg_stat_activity_oldest_xact_age_seconds{{{SEL}}})',
           "{{target}} oldest transaction ({{state}})"),
         q(f"max by (target) (pg_stat_activity_long_running_threshold_seconds{{{SEL}}})",
           "{{target}} long_query_threshold"),
         q(f"max by (target) ({alert_setting('PostgresIdleInTransaction')}{{{SEL}}})",
           "{{target}} idle_in_transaction_threshold"),
         alert="PostgresIdleInTransaction", w=8, overrides=[DASHED_THRESHOLDS])
    b.ts("Long-running and blocked sessions", "Sessions running longer than long_query_threshold, and sessions "
         "waiting for a lock another session holds.", "short",
         q(f"sum by (target) (pg_stat_activity_long_running_queries{{{SEL}}})", "{{target}} long-running"),
         q(f"sum by (target) (pg_stat_activity_blocked_backends{{{SEL}}})", "{{target}} blocked"),
         q(f"sum by (target) (pg_locks_waiting{{{SEL}}})", "{{target}} lock requests waiting"),
         alert="PostgresLongRunningQueries", w=8)
    b.ts("Locks by mode", "Locks held or awaited by mode (granted=false: waiting).", "short",
         q(f'sum by (target, mode, granted) (pg_locks{{{SEL},datname=~"$datname|"}})',
           "{{target}} {{mode}} granted={{granted}}"), w=8)
    b.ts("Connections by application", "Client connections by application_name (top N, the rest as 'other').",
         "short", q(f"sum by (target, application_name) (pg_stat_activity_application_connections{{{SEL}}})",
                    "{{target}} {{application_name}}"), stack=True, w=12, h=7)
    b.ts("Temporary files", "Bytes written to temporary files per second (sorts and hashes spilling: work_mem).",
         "Bps", q(f"sum by (target, datname) ({rate('pg_stat_database_temp_bytes_total', DB)})",
                  "{{target}} {{datname}}"), w=12, h=7)

    b.row("Performance: statements and cache")
    b.ts("Statement latency", "Mean execution time over the rate window, all statements; and the slowest "
         "statement's mean. Guide: < 100 ms.", "s",
         q(f"sum by (target) ({rate('pg_stat_statements_seconds_total', DB)}) / sum by (target) "
           f"({rate('pg_stat_statements_calls_total', DB)})", "{{target}} mean"),
         q(f"max by (target) (pg_stat_statements_mean_seconds{{{SEL}{DB}}})", "{{target}} slowest statement mean"),
         thresholds=alert_line("PostgresSlowQueries"), alert="PostgresSlowQueries", w=8)
    b.ts("Statement throughput", "Statement executions per second (pg_stat_statements calls).", "ops",
         q(f"sum by (target) ({rate('pg_stat_statements_calls_total', DB)})", "{{target}}"), w=8)
    b.ts("Buffer cache-hit ratio", "blks_hit / (blks_hit + blks_read) per database over the rate window.",
         "percentunit",
         q(f"sum by (target, datname) ({rate('pg_stat_database_blks_hit_total', DB)}) / (sum by (target, datname) "
           f"({rate('pg_stat_database_blks_hit_total', DB)}) + sum by (target, datname) "
           f"({rate('pg_stat_database_blks_read_total', DB)}))", "{{target}} {{datname}}"),
         thresholds=alert_line("PostgresCacheHitRatioLow"), alert="PostgresCacheHitRatioLow", minmax=(None, 1),
         w=8)
    statement_join = ("datname", "user", "queryid")
    b.table("Top statements", "Statements by total execution time since the statistics were reset (top_n; "
            "'other' is the rest). Rates are over the rate window. Query text appears where query_text is "
            "enabled (normalised, truncated).", "s", [
                ("total time", f"sum by (target, datname, user, queryid) "
                               f"(pg_stat_statements_seconds_total{{{SEL}{DB}}})", "s"),
                ("calls", f"sum by (target, datname, user, queryid) (pg_stat_statements_calls_total{{{SEL}{DB}}})",
                 "short"),
                ("mean", f"max by (target, datname, user, queryid) (pg_stat_statements_mean_seconds{{{SEL}{DB}}})",
                 "s"),
                ("max", f"max by (target, datname, user, queryid) (pg_stat_statements_max_seconds{{{SEL}{DB}}})",
                 "s"),
                ("time/s", f"sum by (target, datname, user, queryid) "
                           f"({rate('pg_stat_statements_seconds_total', DB)})", "percentunit"),
                ("calls/s", f"sum by (target, datname, user, queryid) "
                            f"({rate('pg_stat_statements_calls_total', DB)})", "ops"),
                ("rows", f"sum by (target, datname, user, queryid) (pg_stat_statements_rows_total{{{SEL}{DB}}})",
                 "short"),
            ], statement_join, "total time", h=10, alert="PostgresSlowQueries",
            info=("query", f"max by (target, datname, user, queryid, query) "
                           f"(pg_stat_statements_query_info{{{SEL}{DB}}})"))
    b.ts("Rows per second", "Rows returned, fetched, inserted, updated and deleted per second.", "ops",
         q(f"sum by (target) ({rate('pg_stat_database_tup_returned_total', DB)})", "{{target}} returned"),
         q(f"sum by (target) ({rate('pg_stat_database_tup_fetched_total', DB)})", "{{target}} fetched"),
         q(f"sum by (target) ({rate('pg_stat_database_tup_inserted_total', DB)})", "{{target}} inserted"),
         q(f"sum by (target) ({rate('pg_stat_database_tup_updated_total', DB)})", "{{target}} updated"),
         q(f"sum by (target) ({rate('pg_stat_database_tup_deleted_total', DB)})", "{{target}} deleted"), w=12)
    b.ts("Blocks read and hit", "Shared-buffer hits and blocks read from disk (or the OS cache) per second.",
         "ops", q(f"sum by (target) ({rate('pg_stat_database_blks_hit_total', DB)})", "{{target}} hit"),
         q(f"sum by (target) ({rate('pg_stat_database_blks_read_total', DB)})", "{{target}} read"), w=12)

    b.row("Detail: indexes")
    b.stat("Unused indexes", "Valid, never-scanned indexes enforcing no constraint (since the statistics "
           "reset).", "none", f"sum by (target) (pg_indexes_unused{{{SEL}{DB}}})",
           thresholds=steps((GREEN, None), (ORANGE, 1)), w=6)
    b.stat("Unused index space", "Disk space of the unused indexes.", "bytes",
           f"sum by (target) (pg_indexes_unused_bytes{{{SEL}{DB}}})", w=6)
    b.stat("Index scans / s", "Index scans per second, all indexes of the selected databases.", "ops",
           f"sum by (target) ({rate('pg_indexes_idx_scan_total', DB)})", w=6)
    b.stat("Indexes", "Indexes on user tables.", "none", f"sum by (target) (pg_indexes{{{SEL}{DB}}})", w=6)
    index_join = ("datname", "schemaname", "relname", "indexrelname")
    by_index = "target, datname, schemaname, relname, indexrelname"
    b.table("Unused indexes (largest first)", "Candidates for DROP INDEX CONCURRENTLY: never scanned, valid, "
            "not backing a constraint. Check replicas' usage first.", "bytes",
            [("size", f"max by ({by_index}) (pg_stat_user_indexes_unused_bytes{{{SEL}{DB}}})", "bytes")],
            index_join, "size", w=12, h=8)
    b.table("Invalid indexes", "Indexes left invalid by a failed CREATE INDEX CONCURRENTLY: DROP INDEX "
            "CONCURRENTLY, then rebuild.", "none",
            [("invalid", f"max by ({by_index}) (pg_stat_user_indexes_invalid{{{SEL}{DB}}})", "none")],
            index_join, "invalid", w=12, h=8, alert="PostgresInvalidIndex")
    b.table("Largest indexes", "Top indexes by size with their scan rate.", "bytes", [
        ("size", f"topk(20, max by ({by_index}) (pg_stat_user_indexes_size_bytes{{{SEL}{DB}}}))", "bytes"),
        ("scans/s", f"sum by ({by_index}) ({rate('pg_stat_user_indexes_idx_scan_total', DB)})", "ops"),
        ("tuples read/s", f"sum by ({by_index}) ({rate('pg_stat_user_indexes_idx_tup_read_total', DB)})", "ops"),
    ], index_join, "size", h=8)

    b.row("Detail: tables and vacuum")
    by_table = "target, datname, schemaname, relname"
    table_join = ("datname", "schemaname", "relname")
    b.table("Tables read mostly by sequential scans", "Tables read more by sequential than index scans, of more than "
            "seq_scan_min_live_rows live rows (the guide's rule): likely a missing index.", "short", [
                ("seq scans", f"max by ({by_table}) (pg_stat_user_tables_seq_scan_heavy{{{SEL}{DB}}})", "short"),
                ("seq scans/s", f"sum by ({by_table}) ({rate('pg_stat_user_tables_seq_scan_total', DB)})", "ops"),
                ("rows read by seq scans/s",
                 f"sum by ({by_table}) ({rate('pg_stat_user_tables_seq_tup_read_total', DB)})", "ops"),
            ], table_join, "seq scans", w=12, h=8)
    b.table("Dead tuples", "Tables with the most dead rows and their share; autovacuum should keep it low.",
            "short", [
                ("dead", f"topk(20, max by ({by_table}) (pg_stat_user_tables_n_dead_tup{{{SEL}{DB}}}))", "short"),
                ("live", f"max by ({by_table}) (pg_stat_user_tables_n_live_tup{{{SEL}{DB}}})", "short"),
                ("dead share", f"max by ({by_table}) (pg_stat_user_tables_n_dead_tup{{{SEL}{DB}}} / "
                               f"(pg_stat_user_tables_n_live_tup{{{SEL}{DB}}} + "
                               f"pg_stat_user_tables_n_dead_tup{{{SEL}{DB}}} > 0))", "percentunit"),
            ], table_join, "dead", w=12, h=8)
    b.table("Vacuum and analyze age", "Seconds since the last (auto)vacuum and (auto)analyze of each table; a "
            "table never vacuumed has no value.", "s", [
                ("since vacuum", f'min by ({by_table}) ({{__name__=~"pg_stat_user_tables_last_(auto)?vacuum_age_'
                                 f'seconds",{SEL}{DB}}})', "s"),
                ("since analyze", f'min by ({by_table}) ({{__name__=~"pg_stat_user_tables_last_(auto)?analyze_'
                                  f'age_seconds",{SEL}{DB}}})', "s"),
            ], table_join, "since vacuum", w=12, h=8)
    b.ts("Vacuum and analyze runs", "Manual and automatic vacuums and analyzes per second, all user tables.", "ops",
         q(f"sum by (target) ({rate('pg_tables_autovacuum_count_total', DB)})", "{{target}} autovacuum"),
         q(f"sum by (target) ({rate('pg_tables_vacuum_count_total', DB)})", "{{target}} vacuum"),
         q(f"sum by (target) ({rate('pg_tables_autoanalyze_count_total', DB)})", "{{target}} autoanalyze"),
         q(f"sum by (target) ({rate('pg_tables_analyze_count_total', DB)})", "{{target}} analyze"), w=12, h=8)

    b.row("Detail: replication, checkpoints, WAL")
    b.ts("Replication lag", "Standby: seconds since the last replayed transaction; primary: lag of each replica "
         "by stage.", "s",
         q(f"max by (target) (pg_replication_lag_seconds{{{SEL}}})", "{{target}} standby replay lag"),
         q(f"max by (target, application_name, kind) (pg_stat_replication_lag_seconds{{{SEL}}})",
           "{{target}} {{application_name}} {{kind}}"),
         thresholds=alert_line("PostgresReplicationLagHigh"), alert="PostgresReplicationLagHigh", w=8)
    b.ts("Replication slots: retained WAL", "WAL kept on disk for each slot; an inactive slot retains WAL "
         "forever and fills the disk.", "bytes",
         q(f"max by (target, slot_name) (pg_replication_slots_retained_wal_bytes{{{SEL}}})",
           "{{target}} {{slot_name}}"),
         q(f"sum by (target) (pg_stat_replication_lag_bytes{{{SEL}}})", "{{target}} replicas' replay lag"), w=8)
    b.ts("Checkpoints", "Checkpoints per second, timed (checkpoint_timeout) and requested (WAL volume: raise "
         "max_wal_size if these dominate).", "ops",
         q(f"sum by (target) ({rate('pg_stat_checkpointer_num_timed_total')})", "{{target}} timed"),
         q(f"sum by (target) ({rate('pg_stat_checkpointer_num_requested_total')})", "{{target}} requested"), w=8)
    b.ts("WAL generated", "WAL bytes per second and full-page images per second.", "Bps",
         q(f"sum by (target) ({rate('pg_stat_wal_bytes_total')})", "{{target}} WAL"),
         q(f"sum by (target) ({rate('pg_stat_wal_fpi_total')})", "{{target}} full-page images/s"),
         overrides=[{"matcher": {"id": "byRegexp", "options": ".*full-page.*"},
                     "properties": [{"id": "unit", "value": "ops"},
                                    {"id": "custom.axisPlacement", "value": "right"}]}], w=8)
    b.ts("Checkpoint I/O time", "Time per second the checkpointer spends writing and syncing files.", "percentunit",
         q(f"sum by (target) ({rate('pg_stat_checkpointer_write_time_seconds_total')})", "{{target}} write"),
         q(f"sum by (target) ({rate('pg_stat_checkpointer_sync_time_seconds_total')})", "{{target}} sync"), w=8)
    b.ts("Buffers written", "Buffers written per second by checkpoints and by the background writer.", "ops",
         q(f"sum by (target) ({rate('pg_stat_checkpointer_buffers_written_total')})", "{{target}} checkpointer"),
         q(f"sum by (target) ({rate('pg_stat_bgwriter_buffers_clean_total')})", "{{target}} bgwriter"), w=8)

    b.row("Detail: sizes")
    b.ts("Database size", "Disk space per database.", "bytes",
         q(f"max by (target, datname) (pg_database_size_bytes{{{SEL}{DB}}})", "{{target}} {{datname}}"), w=8)
    b.ts("User tables and indexes", "Disk space of all user tables and of their indexes, per database.", "bytes",
         q(f"sum by (target, datname) (pg_tables_size_bytes{{{SEL}{DB}}})", "{{target}} {{datname}} tables"),
         q(f"sum by (target, datname) (pg_tables_indexes_size_bytes{{{SEL}{DB}}})", "{{target}} {{datname}} indexes"),
         w=8)
    b.table("Largest tables", "Top tables by size (heap, TOAST, FSM, VM) and their indexes' size.", "bytes", [
        ("table", f"topk(20, max by ({by_table}) (pg_table_size_bytes{{{SEL}{DB}}}))", "bytes"),
        ("indexes", f"max by ({by_table}) (pg_table_indexes_size_bytes{{{SEL}{DB}}})", "bytes"),
    ], table_join, "table", w=8, h=8)
    return b.json(dashboard_links("postgres"))


# ---------------------------------------------------------------------------------------------------------------
# Redis & cache

FAM = ',family=~"$family"'
INST = ',app_instance=~"$app_instance"'
APP = FAM + INST
ERROR = ',result="error"'


def redis() -> dict[str, Any]:
    b = Board("redis", "Redis targets of pgwatch-cpa and the CPA caching service that uses them: memory, "
              "clients, hit ratio, evictions, commands, slow log, cache families, application instances and "
              "the redis-py pool.", ["pgwatch-cpa", "redis", "cache"])
    common_vars(b, "redis_up", "Redis targets of pgwatch-cpa (the cache's stats are published in them too).")
    b.variables += [
        query_var("family", "Cache family", f"label_values(redis_key_family_keys{{{SEL}}}, family)",
                  "Key families (the caching service's families, plus generation/lock/stats keys and 'other')."),
        query_var("app_instance", "App instance", f"label_values(cpa_cache_requests_total{{{SEL}}}, app_instance)",
                  "Application instances publishing cache statistics."),
    ]

    b.row("Health")
    b.stat("Up", "1 while the target answers the daemon's probe.", "none", f"redis_up{{{SEL}}}", mappings=UP_DOWN,
           thresholds=alert_down("RedisDown"), alert="RedisDown")
    b.stat("Uptime", "Seconds since the Redis server started (a reset means a restart: an empty cache).", "s",
           f"redis_uptime_in_seconds{{{SEL}}}", thresholds=steps((ORANGE, None), (GREEN, 3600)))
    b.stat("Cache fail-opens / s", "Caching-service requests served without Redis (down, slow, breaker open): "
           "the database carries that load.", "reqps",
           f"sum by (target) ({rate('cpa_cache_fail_open_total', APP)})",
           thresholds=alert_rate("CpaCacheFailOpen"), alert="CpaCacheFailOpen")
    b.stat("Cache errors", "Share of cache lookups that failed (result=error).", "percentunit",
           f"sum by (target) ({rate('cpa_cache_requests_total', APP + ERROR)})"
           f" / sum by (target) ({rate('cpa_cache_requests_total', APP)})",
           thresholds=above(0.01, 0.001), minmax=(0, 1))
    b.stat("Rejected connections / s", "Connections refused because maxclients was reached.", "cps",
           f"sum by (target) ({rate('redis_rejected_connections_total')})",
           thresholds=alert_rate("RedisRejectedConnections"), alert="RedisRejectedConnections")
    b.stat("Error replies / s", "Error replies Redis sent to clients.", "ops",
           f"sum by (target) ({rate('redis_error_replies_total')})", thresholds=steps((GREEN, None), (ORANGE, 1)))
    b.stat("App instances publishing", "Application instances whose cache statistics are live in Redis (a "
           "dead instance's snapshot expires after 3 publish periods).", "none",
           f"max by (target) (cpa_cache_instances{{{SEL}}})", thresholds=steps((ORANGE, None), (GREEN, 1)), w=8)
    b.stat("Circuit breaker open", "Application instances whose circuit breaker keeps them away from Redis "
           "(every request fails open to the database).", "none",
           f"sum by (target) (cpa_cache_breaker_open{{{SEL}{INST}}})", thresholds=ONE_IS_TOO_MANY,
           alert="CpaCacheFailOpen", w=8)
    b.stat("Stats snapshot age", "Seconds since each instance last published its cache statistics; more than a "
           "few publish periods means the publisher is stuck.", "s",
           f"max by (target) (cpa_cache_snapshot_age_seconds{{{SEL}{INST}}})", thresholds=above(60, 30), w=8)

    b.row("Saturation: memory, clients, pool")
    b.ts("Memory vs maxmemory", "used_memory and maxmemory (0: no limit).",
         "bytes", q(f"max by (target) (redis_memory_used_bytes{{{SEL}}})", "{{target}} used"),
         q(f"max by (target) (redis_memory_max_bytes{{{SEL}}} > 0)", "{{target}} maxmemory"),
         q(f"max by (target) (redis_memory_used_rss_bytes{{{SEL}}})", "{{target}} RSS"),
         alert="RedisMemoryHigh", w=8)
    b.ts("Clients vs maxclients", "Connected and blocked clients, and the maxclients limit.",
         "short", q(f"max by (target) (redis_connected_clients{{{SEL}}})", "{{target}} connected"),
         q(f"max by (target) (redis_blocked_clients{{{SEL}}})", "{{target}} blocked"),
         q(f"max by (target) (redis_config_maxclients{{{SEL}}})", "{{target}} maxclients"),
         alert="RedisClientsHigh", w=8)
    b.ts("Evictions and expirations", "Keys evicted (maxmemory reached: alert) and expired (TTL) per second.",
         "ops", q(f"sum by (target) ({rate('redis_evicted_keys_total')})", "{{target}} evicted"),
         q(f"sum by (target) ({rate('redis_expired_keys_total')})", "{{target}} expired"),
         alert="RedisEvictions", w=8)
    b.ts("redis-py pool: in use vs max", "The application's pooled connections in use and idle per instance, "
         "and the pool's limit.", "short",
         q(f'sum by (target, app_instance) (cpa_redis_pool_connections{{{SEL},app_instance=~"$app_instance",'
           f'state="in_use"}})', "{{app_instance}} in use"),
         q(f'sum by (target, app_instance) (cpa_redis_pool_connections{{{SEL},app_instance=~"$app_instance",'
           f'state="idle"}})', "{{app_instance}} idle"),
         q(f'max by (target, app_instance) (cpa_redis_pool_max_connections{{{SEL},app_instance=~"$app_instance"}})',
           "{{app_instance}} max"), alert="CpaRedisPoolSaturated", w=8)
    b.ts("redis-py pool: waits", "Connection requests per second that had to wait for a free pooled connection "
         "(the pool is too small or Redis is slow), and those that timed out waiting (served by fail-open).", "ops",
         q(f"sum by (target, app_instance) ({rate('cpa_redis_pool_waits_total', INST)})", "{{app_instance}} waits"),
         q(f"sum by (target, app_instance) ({rate('cpa_redis_pool_exhausted_total', INST)})",
           "{{app_instance}} exhausted (fail-open)"), w=8)
    b.ts("Memory fragmentation", "used_memory_rss / used_memory; well above 1.5 wastes memory, below 1 means "
         "swapping.", "none", q(f"max by (target) (redis_mem_fragmentation_ratio{{{SEL}}})", "{{target}}"),
         thresholds=steps((GREEN, None), (ORANGE, 1.5)), w=8)

    b.row("Performance: hit ratios, latency, commands")
    b.ts("Application cache hit rate by family", "(hit + stale) / lookups per cache family over the rate window.",
         "percentunit",
         q(f"sum by (target, family) ({rate('cpa_cache_requests_total', APP + ',' + APP_HIT)}) / sum by "
           f"(target, family) ({rate('cpa_cache_requests_total', APP)})", "{{family}}"),
         thresholds=alert_line("CpaCacheHitRateLow"), alert="CpaCacheHitRateLow", minmax=(None, 1), w=8)
    b.ts("Application cache hit rate by instance", "(hit + stale) / lookups per application instance.",
         "percentunit",
         q(f"sum by (target, app_instance) ({rate('cpa_cache_requests_total', APP + ',' + APP_HIT)}) / sum by "
           f"(target, app_instance) ({rate('cpa_cache_requests_total', APP)})", "{{app_instance}}"),
         thresholds=alert_line("CpaCacheHitRateLow"), alert="CpaCacheHitRateLow", minmax=(None, 1), w=8)
    b.ts("Redis keyspace hit ratio", "keyspace_hits / (hits + misses) of the server over the rate window (every "
         "client, not only the cache).", "percentunit",
         q(f"sum by (target) ({rate('redis_keyspace_hits_total')}) / (sum by (target) "
           f"({rate('redis_keyspace_hits_total')}) + sum by (target) ({rate('redis_keyspace_misses_total')}))",
           "{{target}}"), minmax=(None, 1), w=8)
    b.ts("Cache requests by result", "Cache lookups per second by result: hit, miss, stale (served past TTL "
         "while one caller refreshes), error (fail-open).", "reqps",
         q(f"sum by (target, result) ({rate('cpa_cache_requests_total', APP)})", "{{result}}"), stack=True, w=8)
    b.ts("Cache lookup latency by family", "Mean cache lookup time per family (loader excluded): "
         "rate(sum) / rate(count).", "s",
         q(f"sum by (target, family) ({rate('cpa_cache_request_duration_seconds_sum', APP)}) / sum by "
           f"(target, family) ({rate('cpa_cache_request_duration_seconds_count', APP)})", "{{family}}"), w=8)
    b.ts("Loads and fail-opens by family", "Loader calls (misses that went to the database) and fail-opens per "
         "second, per family.", "ops",
         q(f"sum by (target, family) ({rate('cpa_cache_loads_total', APP)})", "{{family}} loads"),
         q(f"sum by (target, family) ({rate('cpa_cache_fail_open_total', APP)})", "{{family}} fail-opens"),
         alert="CpaCacheFailOpen", w=8)
    b.ts("Operations", "Commands processed per second, and the top commands by calls.", "ops",
         q(f"sum by (target) ({rate('redis_commands_processed_total')})", "{{target}} all"),
         q(f"topk(10, sum by (target, cmd) ({rate('redis_commands_total')}))", "{{target}} {{cmd}}"), w=8)
    b.ts("Command latency", "Mean execution time per command (server side, no network): rate(duration) / "
         "rate(calls).", "s",
         q(f"sum by (target, cmd) ({rate('redis_commands_duration_seconds_total')}) / sum by (target, cmd) "
           f"({rate('redis_commands_total')})", "{{target}} {{cmd}}"), w=8)
    b.ts("Slow log", "Slow log length and the duration of the newest and longest recent slow commands "
         "(slowlog-log-slower-than).", "s",
         q(f"max by (target) (redis_slowlog_last_slow_execution_duration_seconds{{{SEL}}})", "{{target}} newest"),
         q(f"max by (target) (redis_slowlog_recent_max_duration_seconds{{{SEL}}})", "{{target}} longest recent"),
         q(f"max by (target) (redis_slowlog_length{{{SEL}}})", "{{target}} entries"),
         overrides=[{"matcher": {"id": "byRegexp", "options": ".*entries"},
                     "properties": [{"id": "unit", "value": "short"},
                                    {"id": "custom.axisPlacement", "value": "right"}]}], w=8)

    b.row("Detail: key families, keyspace, network")
    b.ts("Keys per family", "Keys per family in the last complete incremental SCAN pass.", "short",
         q(f"sum by (target, family) (redis_key_family_keys{{{SEL}{FAM}}})", "{{family}}"), stack=True, w=8)
    b.ts("Memory per family", "Estimated memory per family (keys x mean MEMORY USAGE of a sample).", "bytes",
         q(f"sum by (target, family) (redis_key_family_memory_bytes{{{SEL}{FAM}}})", "{{family}}"), stack=True, w=8)
    b.ts("Remaining TTL per family", "Remaining TTL percentiles of the family's sampled keys; no value for keys "
         "without TTL (generation counters by design).", "s",
         q(f"max by (target, family, percentile) (redis_key_family_ttl_seconds{{{SEL}{FAM}}})",
           "{{family}} p{{percentile}}"), w=8)
    b.ts("Keys per database", "Keys and keys with a TTL per Redis database.", "short",
         q(f"sum by (target, db) (redis_db_keys{{{SEL}}})", "{{target}} {{db}} keys"),
         q(f"sum by (target, db) (redis_db_keys_expiring{{{SEL}}})", "{{target}} {{db}} expiring"), w=8)
    b.ts("Network", "Bytes read from and written to the network per second.", "Bps",
         q(f"sum by (target) ({rate('redis_net_input_bytes_total')})", "{{target}} in"),
         q(f"sum by (target) ({rate('redis_net_output_bytes_total')})", "{{target}} out"), w=8)
    b.ts("Latency spikes", "Latest latency spike per event from the latency monitor (needs "
         "latency-monitor-threshold > 0).", "s",
         q(f"max by (target, event_name) (redis_latency_spike_duration_seconds{{{SEL}}})",
           "{{target}} {{event_name}}"), w=8)
    return b.json(dashboard_links("redis"))


DASHBOARDS = {"overview": overview, "postgres": postgres, "redis": redis}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"pgwatch-cpa-{key}.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
            for key, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date (run python grafana/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
