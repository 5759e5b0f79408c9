"""Static checks of grafana/: the dashboards' structure and the rules of grafana's dashboard-linter, re-implemented.

Linter rules covered (github.com/grafana/dashboard-linter, adapted to pgwatch-cpa's `target` label):
template-datasource-rule, template-instance-rule / template-job-rule (-> target + instance), panel-datasource-rule,
target-instance-rule (-> every selector filters target and instance), target-rate-interval-rule, panel-units-rule,
panel-title-description-rule, target-promql-rule (every expression parses with promql-parser).
No server is needed; tests/e2e/test_grafana_live.py runs the same queries against a real Prometheus.
The thresholds the panels draw are checked against alerts.yml read here, not through generate.py's code.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS_YML = REPO / "alerts.yml"
GRAFANA = REPO / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
ROW_ORDER = ("health", "saturation", "performance", "detail")
STABLE_UIDS = {"pgwatch-cpa-overview", "pgwatch-cpa-postgres", "pgwatch-cpa-redis"}
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
# Grafana unit ids used here (a typo would silently show raw numbers).
KNOWN_UNITS = {"none", "short", "percentunit", "percent", "s", "ms", "bytes", "decbytes", "Bps", "ops", "reqps",
               "cps", "dtdurations"}

# Sentinels substituted for the variables before parsing, so the AST shows where each one went.
RATE_INTERVAL = dt.timedelta(milliseconds=7777)
SUBSTITUTIONS = {
    "$__rate_interval": "7777ms", "$__interval": "9999ms", "$__range": "8888ms",
    "$target": "VAR_TARGET", "$instance": "VAR_INSTANCE", "$datname": "VAR_DATNAME", "$family": "VAR_FAMILY",
    "$app_instance": "VAR_APP_INSTANCE",
}
REQUIRED_MATCHERS = {"target": "VAR_TARGET", "instance": "VAR_INSTANCE"}
RATE_FUNCS = {"rate", "irate", "increase"}


def load_generator():
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = load_generator()


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def substitute(expr: str) -> str:
    """Replace ``$var`` / ``${var}`` by its sentinel; an unknown variable is an error."""
    def repl(m: re.Match[str]) -> str:
        key = "$" + (m.group(1) or m.group(2))
        assert key in SUBSTITUTIONS, f"unknown variable {key} in {expr!r}"
        return SUBSTITUTIONS[key]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return out


def queries(dash: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(where, PromQL, labels every selector must filter by their variable) of every panel target, annotation
    and variable selector of a dashboard. A variable's query is filtered by the variables defined before it."""
    out = []
    for p in panels(dash):
        for t in p.get("targets", []):
            out.append((f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"], tuple(REQUIRED_MATCHERS)))
    for a in dash["annotations"]["list"]:
        if a.get("expr"):
            out.append((f"annotation {a['name']!r}", a["expr"], tuple(REQUIRED_MATCHERS)))
    before: list[str] = []
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            required = tuple(label for label in REQUIRED_MATCHERS if label in before)
            out.append((f"variable {v['name']}", label_values_selector(v["query"])[0], required))
        before.append(v["name"])
    return out


def label_values_selector(query: str) -> tuple[str, str]:
    m = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)", query.strip())
    assert m, f"variable query is not label_values(selector, label): {query}"
    return m.group(1), m.group(2)


def selectors(expr: str) -> list[Any]:
    found: list[Any] = []
    promql_parser.walk(promql_parser.parse(substitute(expr)),
                       lambda node: found.append(node) if isinstance(node, promql_parser.VectorSelector) else None)
    return found


def linked_alerts(panel: dict[str, Any]) -> list[str]:
    """The alerts a panel names: those whose runbook it links to."""
    return [link["title"].removeprefix("Runbook: ") for link in panel.get("links", [])
            if link["url"].startswith(GEN.RUNBOOK_BASE)]


DASHBOARDS = {path.name: load(path) for path in DASHBOARD_FILES}
DASHBOARD_ALERTS = sorted({a for d in DASHBOARDS.values() for p in panels(d) for a in linked_alerts(p)})
ALL_QUERIES = [(name, where, expr, req) for name, d in DASHBOARDS.items() for where, expr, req in queries(d)]
QUERY_IDS = [f"{n}:{w}" for n, w, _e, _r in ALL_QUERIES]


def test_three_dashboards_with_stable_uids() -> None:
    assert {d["uid"] for d in DASHBOARDS.values()} == STABLE_UIDS
    assert len({d["title"] for d in DASHBOARDS.values()}) == len(DASHBOARDS)


def test_generator_output_is_committed() -> None:
    rendered = GEN.render()
    assert sorted(rendered) == [p.name for p in DASHBOARD_FILES], "generate.py and grafana/dashboards disagree"
    for name, text in rendered.items():
        assert (GRAFANA / "dashboards" / name).read_text(encoding="utf-8") == text, (
            f"{name} is out of date: run .venv/bin/python grafana/generate.py")


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_has_the_fields_grafana_requires(name: str) -> None:
    d = DASHBOARDS[name]
    for key, typ in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list), ("templating", dict),
                     ("annotations", dict), ("time", dict), ("links", list), ("tags", list), ("version", int),
                     ("editable", bool), ("refresh", str)):
        assert isinstance(d.get(key), typ), f"{name}: {key} missing or not {typ.__name__}"
    assert d["schemaVersion"] >= 39
    assert set(d["time"]) == {"from", "to"}
    assert "id" not in d or d["id"] is None, "a provisioned dashboard must not carry a database id"
    for p in panels(d):
        assert isinstance(p["id"], int) and isinstance(p["type"], str) and p["title"], p
        assert set(p["gridPos"]) == {"h", "w", "x", "y"}
        if p["type"] == "row":
            continue
        assert set(p["fieldConfig"]) == {"defaults", "overrides"} and isinstance(p["options"], dict)
        assert p["targets"], f"panel {p['title']!r} has no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(set(refs)) == len(refs)
        for t in p["targets"]:
            assert t["expr"].strip() and t["format"] in ("time_series", "table")
            assert t["instant"] != t["range"]
    for v in d["templating"]["list"]:
        assert v["name"] and v["type"] in ("datasource", "query")


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panel_ids_unique_and_grid_without_overlap(name: str) -> None:
    ps = panels(DASHBOARDS[name])
    ids = [p["id"] for p in ps]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    cells: dict[tuple[int, int], str] = {}
    for p in ps:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0
        assert g["x"] + g["w"] <= 24, f"{p['title']!r} is wider than the 24 columns"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r} at {(x, y)}"
                cells[(x, y)] = p["title"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_rows_go_health_saturation_performance_detail(name: str) -> None:
    rows = [p["title"].split(":")[0].strip().lower() for p in DASHBOARDS[name]["panels"] if p["type"] == "row"]
    assert rows and rows[0] == "health"
    ranks = [ROW_ORDER.index(r) for r in rows]
    assert ranks == sorted(ranks), f"rows out of order: {rows}"
    assert DASHBOARDS[name]["panels"][0]["type"] == "row", "the first panel must be the Health row"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panel_units_rule_and_title_description_rule(name: str) -> None:
    for p in panels(DASHBOARDS[name]):
        if p["type"] == "row":
            continue
        assert p["title"].strip() and p.get("description", "").strip(), f"{p['title']!r} needs a description"
        unit = p["fieldConfig"]["defaults"].get("unit")
        assert unit in KNOWN_UNITS, f"{p['title']!r}: unit {unit!r}"
        for o in p["fieldConfig"]["overrides"]:
            for prop in o["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in KNOWN_UNITS, f"{p['title']!r}: override unit {prop['value']!r}"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_template_datasource_rule(name: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert DASHBOARDS[name]["templating"]["list"][0]["name"] == "datasource"
    assert "__inputs" not in DASHBOARDS[name], "file provisioning does not resolve ${DS_...} inputs"
    assert "DS_" not in json.dumps(DASHBOARDS[name])


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_template_target_and_instance_rule(name: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    for var in ("instance", "target"):
        v = variables.get(var)
        assert v is not None, f"{name} lacks the {var} variable"
        assert v["type"] == "query" and v["datasource"] == DS_REF
        assert v["multi"] and v["includeAll"], f"{var} must be multi-value with All"
        assert v["query"] == v["definition"]
        label_values_selector(v["query"])
    assert label_values_selector(variables["target"]["query"])[1] == "target"
    assert '$instance' in variables["target"]["query"], "target must depend on instance"
    # every further variable (datname, family, app_instance) is scoped to the selected targets
    for v in variables.values():
        if v["type"] == "query" and v["name"] not in ("instance", "target"):
            assert '"$target"' in v["query"] and '"$instance"' in v["query"], v["name"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panel_datasource_rule(name: str) -> None:
    d = DASHBOARDS[name]
    for p in panels(d):
        if p["type"] == "row":
            assert "datasource" not in p or p["datasource"] is None
            continue
        assert p["datasource"] == DS_REF, f"{p['title']!r}: datasource must be the ${{datasource}} variable"
        for t in p["targets"]:
            assert t["datasource"] == DS_REF
    for a in d["annotations"]["list"]:
        if not a.get("builtIn"):
            assert a["datasource"] == DS_REF


@pytest.mark.parametrize(("name", "where", "expr", "required"), ALL_QUERIES, ids=QUERY_IDS)
def test_target_promql_rule_and_variables_in_every_selector(name: str, where: str, expr: str,
                                                            required: tuple[str, ...]) -> None:
    assert expr.strip() == expr and "\n" not in expr
    parsed = promql_parser.parse(substitute(expr))  # target-promql-rule: raises on a syntax error
    assert parsed is not None
    found = selectors(expr)
    assert found, f"{where}: no selector"
    for sel in found:
        matchers = {(m.name, str(m.op), m.value) for m in sel.matchers.matchers}
        for label in required:
            assert (label, "MatchOp.Re", REQUIRED_MATCHERS[label]) in matchers, (
                f"{where}: selector {sel} does not filter {label}=~\"${label}\"")


@pytest.mark.parametrize(("name", "where", "expr", "required"), ALL_QUERIES, ids=QUERY_IDS)
def test_target_rate_interval_rule(name: str, where: str, expr: str, required: tuple[str, ...]) -> None:
    problems: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.Call) and node.func.name in RATE_FUNCS:
            for arg in node.args:
                if isinstance(arg, promql_parser.MatrixSelector) and arg.range != RATE_INTERVAL:
                    problems.append(f"{node.func.name}(...[{arg.range}])")
                if isinstance(arg, promql_parser.SubqueryExpr):
                    problems.append(f"{node.func.name} of a subquery")

    promql_parser.walk(promql_parser.parse(substitute(expr)), visit)
    assert not problems, f"{where}: use $__rate_interval: {problems}"
    if re.search(r"\b(rate|irate|increase)\(", expr):
        assert "$__rate_interval" in expr


def _steps(panel: dict[str, Any]) -> list[float]:
    return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"] if s["value"] is not None]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_thresholds_match_alert_rules_and_runbook_links(name: str) -> None:
    for p in panels(DASHBOARDS[name]):
        for link in p.get("links", []):
            url = link["url"]
            if url.startswith(GEN.RUNBOOK_BASE):
                alert = link["title"].removeprefix("Runbook: ")
                assert alert in GEN.RULES, alert
                assert url == GEN.RUNBOOK_BASE + alert.lower()
                assert alert in p["description"], f"{p['title']!r} must name its alert in the description"
                steps = _steps(p)
                threshold = GEN.threshold(alert).value
                if len(steps) and p["fieldConfig"]["defaults"]["unit"] in ("percentunit", "s", "none"):
                    ok = threshold in steps or (threshold == 0 and 0 < min(steps) <= 0.01)
                    if p["type"] == "stat" and p["fieldConfig"]["defaults"]["unit"] == "none":
                        ok = ok or 1 in steps  # counts (slow statements, invalid indexes): one is too many
                    assert ok, f"{p['title']!r}: thresholds {steps} do not contain {alert}'s {threshold}"
            else:
                uid = url.split("?")[0].removeprefix("/d/")
                assert uid in STABLE_UIDS, url
    for link in DASHBOARDS[name]["links"]:
        if link["url"].startswith("/d/"):
            assert link["url"].removeprefix("/d/") in STABLE_UIDS
            assert link["includeVars"] and link["keepTime"]


def test_guide_thresholds() -> None:
    """The guide's targets are the thresholds: connections < 80%, DB cache hit > 95%, app cache hit > 90%."""
    assert GEN.threshold("PostgresConnectionsHigh") == (">", 0.8)
    assert GEN.threshold("PostgresCacheHitRatioLow") == ("<", 0.95)
    assert GEN.threshold("CpaCacheHitRateLow") == ("<", 0.9)
    overview = DASHBOARDS["pgwatch-cpa-overview.json"]
    titles = {p["title"]: p for p in panels(overview)}
    for title, value in (("Connection utilisation", 0.8), ("DB cache-hit ratio", 0.95), ("App cache hit rate", 0.9),
                         ("Statement latency (mean)", 0.1), ("Slowest statement (mean)", 1.0)):
        assert value in _steps(titles[title]), title


def test_alerts_named_by_the_dashboards_exist_in_alerts_yml() -> None:
    assert ALERTS_YML.exists(), "alerts.yml is missing: the dashboards' thresholds come from it"
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS_YML.read_text())["groups"] for r in g["rules"]
             if "alert" in r}
    missing = sorted(set(DASHBOARD_ALERTS) - set(rules))
    assert not missing, f"dashboards link runbooks of alerts that alerts.yml does not define: {missing}"
    for name, rule in rules.items():
        url = (rule.get("annotations") or {}).get("runbook_url")
        if name in DASHBOARD_ALERTS and url:
            assert url == GEN.RUNBOOK_BASE + name.lower(), f"{name}: runbook_url {url} differs from the dashboards'"


def test_provisioning_files() -> None:
    ds_files = list((GRAFANA / "provisioning" / "datasources").glob("*.yaml"))
    db_files = list((GRAFANA / "provisioning" / "dashboards").glob("*.yaml"))
    assert ds_files and db_files
    datasources = [d for f in ds_files for d in yaml.safe_load(f.read_text())["datasources"]]
    assert all(yaml.safe_load(f.read_text())["apiVersion"] == 1 for f in ds_files + db_files)
    prom = [d for d in datasources if d["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0]["url"] == "${PROMETHEUS_URL}" and prom[0]["access"] == "proxy"
    providers = [p for f in db_files for p in yaml.safe_load(f.read_text())["providers"]]
    assert len(providers) == 1 and providers[0]["type"] == "file" and providers[0]["options"]["path"]


def test_readme_covers_every_dashboard_and_alert() -> None:
    text = (GRAFANA / "README.md").read_text(encoding="utf-8")
    for uid in STABLE_UIDS:
        assert uid in text
    for alert in DASHBOARD_ALERTS:
        assert alert in text, f"grafana/README.md does not say which panel belongs to {alert}"
    assert "PROMETHEUS_URL" in text and "Grafana 10.4" in text


# ---------------------------------------------------------------------------------------------------------------
# The thresholds drawn by the committed JSON against the rules of alerts.yml, derived here without generate.py.

def rule_exprs(alerts_yml: Path) -> dict[str, str]:
    groups = yaml.safe_load(alerts_yml.read_text(encoding="utf-8"))["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"] if "alert" in r}


def rule_thresholds(exprs: dict[str, str]) -> dict[str, set[tuple[str, float | str]]]:
    """alertname -> the (comparison, threshold) pairs that decide whether the rule fires: a comparison with a
    number (either side) or a series, on the left of and/unless (the right is a guard) and on both sides of or.
    A rule with no pair or several different ones has no single threshold; a shape not known here counts as a
    pair of its own ("?", text), so it is reported rather than skipped."""
    out = {}
    for alert, expr in exprs.items():
        found: set[tuple[str, float | str]] = set()
        todo = [promql_parser.parse(expr)]
        while todo:
            node = todo.pop()
            op = str(node.op) if isinstance(node, promql_parser.BinaryExpr) else None
            if isinstance(node, promql_parser.ParenExpr):
                todo.append(node.expr)
            elif op == "or":
                todo += [node.lhs, node.rhs]
            elif op in ("and", "unless"):
                todo.append(node.lhs)
            elif op in (">", "<", "==") and isinstance(node.rhs, promql_parser.NumberLiteral):
                found.add((op, node.rhs.val))
            elif op in (">", "<", "==") and isinstance(node.lhs, promql_parser.NumberLiteral):
                found.add(({">": "<", "<": ">"}.get(op, op), node.lhs.val))
            elif op in (">", "<", "==") and isinstance(node.rhs, promql_parser.VectorSelector):
                found.add((op, node.rhs.name))
            else:
                found.add(("?", str(node)))
        out[alert] = found
    return out


def colour_at(steps: list[dict[str, Any]], value: float) -> str:
    """Grafana's colour for a value: the last step whose value is at most it (the first step's null is -inf)."""
    return [s["color"] for s in steps if s["value"] is None or s["value"] <= value][-1]


def metric_names(expr: str) -> set[str]:
    return {sel.name for sel in selectors(expr)}


def draws(panel: dict[str, Any], op: str, t: float, rule_metrics: set[str]) -> bool:
    """Whether the panel's colour steps draw ``value <op> t``. Grafana colours a step from its own value on, so
    ``> t`` may start at t (a continuous value), at t + 1 (an integer count, unit none) or, for ``> 0``, at a
    small rate; ``< t`` is red below a step at t; ``== t`` is red at t and not at t + 1 (a 0/1 up metric).
    A stat counting things in the alert's state (the series where ``== t`` holds, or a metric the rule does
    not use: slow statements, open breakers) is red from 1: one is too many."""
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    red_from = next((s["value"] for s in steps if s["color"] == "red"), None)
    count = panel["fieldConfig"]["defaults"]["unit"] == "none"
    panel_metrics = {m for target in panel["targets"] for m in metric_names(target["expr"])}
    if (panel["type"] == "stat" and count and red_from == 1
            and (op == "==" or not panel_metrics & rule_metrics)):
        return True
    if op == ">":
        return red_from is not None and (red_from == t or (count and red_from == t + 1)
                                         or (t == 0 and 0 < red_from <= 0.01))
    if op == "<":
        return steps[0]["color"] == "red" and [s["value"] for s in steps if s["color"] != "red"][:1] == [t]
    return op == "==" and colour_at(steps, t) == "red" and colour_at(steps, t + 1) != "red"


def threshold_mismatches(dashboards: dict[str, dict[str, Any]], alerts_yml: Path) -> list[str]:
    """Every panel that names an alert against the alert's rule in alerts_yml. A panel that draws no threshold
    (its steps are one base colour) is not compared; one whose rule compares with a series must query it."""
    exprs = rule_exprs(alerts_yml)
    rules = rule_thresholds(exprs)
    problems = []
    for name, dash in dashboards.items():
        for p in panels(dash):
            for alert in linked_alerts(p):
                where = f"{name} {p['title']!r} ({alert})"
                if len(rules.get(alert, ())) != 1:
                    problems.append(f"{where}: no single threshold in alerts.yml: {rules.get(alert)}")
                    continue
                [(op, t)] = rules[alert]
                drawn = len(p["fieldConfig"]["defaults"]["thresholds"]["steps"]) > 1
                if isinstance(t, str):
                    queried = {m for target in p["targets"] for m in metric_names(target["expr"])}
                    if t not in queried or drawn:
                        problems.append(f"{where}: the rule compares with the series {t}: query it, draw no line")
                elif drawn and not draws(p, op, t, metric_names(exprs[alert])):
                    steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                    problems.append(f"{where}: steps {steps} do not draw the rule's `{op} {t}`")
    return problems


def test_dashboard_thresholds_equal_alerts_yml() -> None:
    assert not threshold_mismatches(DASHBOARDS, ALERTS_YML)


# (what alerts.yml says, a changed threshold, the alert whose panels must then be reported)
RULE_CHANGES = [
    ("pg_connections_utilization_ratio > 0.8", "pg_connections_utilization_ratio > 0.85", "PostgresConnectionsHigh"),
    (") < 0.95", ") < 0.9", "PostgresCacheHitRatioLow"),
    ("pg_up == 0", "pg_up == 1", "PostgresDown"),
    ("pg_indexes_invalid > 0", "pg_indexes_invalid > 2", "PostgresInvalidIndex"),
    ("increase(redis_evicted_keys_total[5m]) > 0", "increase(redis_evicted_keys_total[5m]) > 5", "RedisEvictions"),
    ("pg_replication_lag_seconds > 30", "pg_replication_lag_seconds > 60", "PostgresReplicationLagHigh"),
    ("> on (target, instance) pg_stat_activity_idle_in_transaction_threshold_seconds",
     "> on (target, instance) pg_settings_idle_in_transaction_session_timeout_seconds", "PostgresIdleInTransaction"),
]


def test_threshold_comparison_reports_a_changed_rule(tmp_path: Path) -> None:
    """The comparison can fail: each change of RULE_CHANGES in a copy of alerts.yml is reported, nothing else."""
    text = ALERTS_YML.read_text(encoding="utf-8")
    for old, new, _alert in RULE_CHANGES:
        assert text.count(old) == 1, f"alerts.yml changed: update RULE_CHANGES ({old!r})"
        text = text.replace(old, new)
    changed = tmp_path / "alerts.yml"
    changed.write_text(text, encoding="utf-8")
    problems = threshold_mismatches(DASHBOARDS, changed)
    reported = {alert for _o, _n, alert in RULE_CHANGES if any(f"({alert})" in p for p in problems)}
    assert reported == {alert for _o, _n, alert in RULE_CHANGES}, problems
    assert all(any(f"({alert})" in p for _o, _n, alert in RULE_CHANGES) for p in problems), problems


@pytest.mark.parametrize(("expr", "message"), [
    ("rate(pgwatch_x_total[5m])", "no single threshold"),  # no comparison
    ("a > b + 1", "no single threshold"),  # neither side a number or a plain series
    ("a > 1 or b > 2", "no single threshold"),  # the branches disagree
    ("a > 1 or rate(b[5m])", "no single threshold"),  # a branch without a threshold
])
def test_generator_names_the_alert_whose_threshold_it_cannot_find(monkeypatch: pytest.MonkeyPatch, expr: str,
                                                                   message: str) -> None:
    alert = "BrokenAlert"  # functools.cache keeps no exception, so the name can be reused
    monkeypatch.setitem(GEN.RULES, alert, {"alert": alert, "expr": expr})
    with pytest.raises(ValueError, match=f"{alert}: {message}"):
        GEN.threshold(alert)
    with pytest.raises(KeyError, match="NoSuchAlert"):
        GEN.threshold("NoSuchAlert")
