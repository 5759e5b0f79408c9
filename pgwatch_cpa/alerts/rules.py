"""Loading and strict validation of a Prometheus rule file (the same alerts.yml Prometheus loads).

Every expression is compiled by promql.compile_expr, so a rule outside the evaluator's subset is refused at load,
never at 3 a.m. All problems of a file are collected and raised together in one RuleError.

Recording rules (``record:``) are rejected: their output would have to be written back into the history and made
stale as Prometheus does; alerts.yml should inline the expression instead (or keep recording rules in a file only
Prometheus loads).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pgwatch_cpa.alerts.promql import Expr, PromQLError, compile_expr
from pgwatch_cpa.alerts.templates import Template, TemplateError
from pgwatch_cpa.errors import PgwatchError

DEFAULT_INTERVAL = 60.0
_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_GROUP_KEYS = {"name", "interval", "rules"}
_RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


class RuleError(PgwatchError):
    """An invalid rule file; ``problems`` lists every problem, each prefixed with file, group and rule."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in rule file(s):\n" + "\n".join(f"  {p}" for p in problems))


def parse_prometheus_duration(text: object) -> float:
    """Seconds of a Prometheus duration (``5m``, ``1h30m``, ``0``); ValueError otherwise."""
    if text == "0":
        return 0.0
    match = _DURATION.match(text) if isinstance(text, str) and text else None
    if match is None:
        raise ValueError(f"not a valid duration string: {text!r}")
    return sum(int(g) * unit for g, unit in zip(match.groups(), _UNITS, strict=True) if g)


@dataclass(frozen=True)
class AlertRule:
    name: str
    group: str
    expr: Expr
    for_: float = 0.0
    keep_firing_for: float = 0.0
    labels: dict[str, Template] = field(default_factory=dict)
    annotations: dict[str, Template] = field(default_factory=dict)

    @property
    def static_labels(self) -> dict[str, str]:
        return {k: t.text for k, t in self.labels.items() if t.is_static}


@dataclass(frozen=True)
class RuleGroup:
    name: str
    interval: float
    rules: tuple[AlertRule, ...]


@dataclass(frozen=True)
class RuleSet:
    source: str
    groups: tuple[RuleGroup, ...]

    def rules(self) -> Iterator[AlertRule]:
        for group in self.groups:
            yield from group.rules

    def windows(self) -> dict[str, float] | None:
        """Seconds of history each metric name needs (range + offset), None if a selector has no fixed name."""
        out: dict[str, float] = {}
        for rule in self.rules():
            for name, need in rule.expr.windows().items():
                if name is None:
                    return None
                out[name] = max(out.get(name, 0.0), need)
        return out

    def max_window(self) -> float:
        return max((w for r in self.rules() for w in r.expr.windows().values()), default=0.0)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, as Prometheus's YAML decoder does."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    out = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_rules(path: str | Path, *, default_interval: float = DEFAULT_INTERVAL) -> RuleSet:
    """Load and validate a rule file; raises RuleError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_rules(text, source=str(path), default_interval=default_interval)


def parse_rules(text: str, *, source: str = "alerts.yml", default_interval: float = DEFAULT_INTERVAL) -> RuleSet:
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise RuleError([f"{source}: invalid YAML: {exc}"]) from None
    problems: list[str] = []
    groups = _parse_file(doc, source, default_interval, problems)
    if problems:
        raise RuleError(problems)
    return RuleSet(source, tuple(groups))


def _parse_file(doc: object, source: str, default_interval: float, problems: list[str]) -> list[RuleGroup]:
    if doc is None:
        return []
    if not isinstance(doc, dict) or set(doc) - {"groups"}:
        extra = sorted(set(doc) - {"groups"}) if isinstance(doc, dict) else None
        problems.append(f"{source}: expected a mapping with only 'groups'" + (f", got keys {extra}" if extra else ""))
        return []
    raw_groups = doc.get("groups") or []
    if not isinstance(raw_groups, list):
        problems.append(f"{source}: 'groups' must be a list")
        return []
    groups, seen = [], set()
    for i, raw in enumerate(raw_groups):
        group = _parse_group(raw, f"{source}: groups[{i}]", source, default_interval, problems)
        if group is None:
            continue
        if group.name in seen:
            problems.append(f'{source}: group "{group.name}": duplicate group name')
        seen.add(group.name)
        groups.append(group)
    return groups


def _parse_group(raw: object, where: str, source: str, default_interval: float,
                 problems: list[str]) -> RuleGroup | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: group name is required")
        return None
    where = f'{source}: group "{name}"'
    for key in sorted(set(raw) - _GROUP_KEYS):
        problems.append(f"{where}: unsupported key {key!r}")
    interval = default_interval
    if "interval" in raw:
        try:
            interval = parse_prometheus_duration(raw["interval"])
        except ValueError as exc:
            problems.append(f"{where}: interval: {exc}")
    if interval <= 0:
        problems.append(f"{where}: interval must be positive")
    raw_rules = raw.get("rules") or []
    if not isinstance(raw_rules, list):
        problems.append(f"{where}: 'rules' must be a list")
        return None
    rules = [_parse_rule(r, i, name, where, problems) for i, r in enumerate(raw_rules)]
    return RuleGroup(name, interval, tuple(r for r in rules if r is not None))


def _parse_rule(raw: object, index: int, group: str, where: str, problems: list[str]) -> AlertRule | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}, rules[{index}]: expected a mapping")
        return None
    if "record" in raw:
        problems.append(f'{where}, rule "{raw["record"]}": recording rules are not supported by the in-process '
                        "evaluator; inline the expression in the alert")
        return None
    name = raw.get("alert")
    if not isinstance(name, str) or not _METRIC_NAME.match(name):
        problems.append(f"{where}, rules[{index}]: 'alert' must be a valid metric name, got {name!r}")
        return None
    here = f'{where}, rule "{name}"'
    before = len(problems)
    for key in sorted(set(raw) - _RULE_KEYS):
        problems.append(f"{here}: unsupported key {key!r}")
    expr = _parse_expr(raw.get("expr"), here, problems)
    for_ = _duration(raw, "for", here, problems)
    keep = _duration(raw, "keep_firing_for", here, problems)
    labels = _templates(raw.get("labels"), "labels", here, problems)
    annotations = _templates(raw.get("annotations"), "annotations", here, problems)
    for key, tmpl in labels.items():
        if tmpl.uses_value:
            problems.append(f"{here}: label {key!r} uses $value: labels identify the alert, so a changing value "
                            "would make a new alert each evaluation; put it in an annotation")
    if len(problems) > before or expr is None:
        return None
    return AlertRule(name, group, expr, for_, keep, labels, annotations)


def _parse_expr(raw: object, here: str, problems: list[str]) -> Expr | None:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip():
        problems.append(f"{here}: 'expr' is required")
        return None
    try:
        return compile_expr(raw)
    except PromQLError as exc:
        problems.extend(f"{here}: {p}" for p in exc.problems)
        return None


def _duration(raw: dict, key: str, here: str, problems: list[str]) -> float:
    if key not in raw:
        return 0.0
    try:
        return parse_prometheus_duration(raw[key])
    except ValueError as exc:
        problems.append(f"{here}: {key}: {exc}")
        return 0.0


def _templates(raw: object, what: str, here: str, problems: list[str]) -> dict[str, Template]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{here}: {what} must be a mapping")
        return {}
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _LABEL_NAME.match(key) or key == "__name__":
            problems.append(f"{here}: {what}: invalid name {key!r}")
            continue
        if not isinstance(value, str):
            problems.append(f"{here}: {what}.{key}: expected a string, got {type(value).__name__}")
            continue
        try:
            out[key] = Template(value)
        except TemplateError as exc:
            problems.append(f"{here}: {what}.{key}: {exc}")
    return out
