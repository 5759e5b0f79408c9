"""Loading and strict validation of a Prometheus rule file (the same alerts.yml Prometheus loads).

Every expression is compiled by promql.compile_expr, so a rule outside the evaluator's subset is refused at load,
never at 3 a.m. All problems of a file are collected and raised together in one RuleError.

Recording rules (``record:``) are rejected: their output would have to be written back into the history and made
stale as Prometheus does; alerts.yml should inline the expression instead (or keep recording rules in a file only
Prometheus loads).

A hostile or careless file is refused with a message, never a traceback, a crash or an unbounded history:
a file larger than MAX_FILE_BYTES or holding more than MAX_RULES rules, not UTF-8, with a duplicate key,
nested deeper than config.yamlfile.MAX_DEPTH or expanding (through aliases) beyond MAX_YAML_NODES keys and values; an
expression longer than MAX_EXPR_BYTES, nested deeper than MAX_EXPR_NESTING brackets or with more than
MAX_EXPR_OPERATORS operator characters (promql-parser takes gigabytes, or aborts the process, on such input,
and the evaluator recurses once per level); a range or an offset beyond MAX_RANGE (the history keeps what the
longest one needs); a label-matcher regex RE2 does not accept (matchers run in RE2, in linear time).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pgwatch_cpa.alerts.promql import Expr, PromQLError, compile_expr
from pgwatch_cpa.alerts.promql.nodes import MatrixSel, VectorSel
from pgwatch_cpa.alerts.templates import Template, TemplateError
from pgwatch_cpa.config.yamlfile import SafeLoader, YamlFileError, parse_yaml, read_text
from pgwatch_cpa.durations import format_duration
from pgwatch_cpa.errors import PgwatchError

DEFAULT_INTERVAL = 60.0
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_YAML_NODES = 250_000  # keys and values, aliases expanded: 10,000 rules of 25 (loading them takes ~2 s)
MAX_EXPR_BYTES = 4096  # the longest shipped expression has 443
MAX_EXPR_NESTING = 32  # ( [ { levels
MAX_EXPR_OPERATORS = 128  # + - * / % ^ = ! < > characters and the words and/or/unless/atan2
MAX_RULES = 10_000  # per file: each is compiled at load and evaluated every interval
MAX_RANGE = 86400.0  # seconds: longest [range] and largest offset (either sign)
MAX_PROBLEMS = 50  # in a RuleError's message; the rest are counted
_MAX_LINE = 500  # characters of one problem in the message
_MAX_DURATION_TEXT = 32
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
        shown = [_clip(p) for p in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            shown.append(f"... and {len(problems) - MAX_PROBLEMS:,} more problems")
        super().__init__(f"{len(problems):,} problem(s) in rule file(s):\n" + "\n".join(f"  {p}" for p in shown))


def _clip(line: str) -> str:
    return line if len(line) <= _MAX_LINE else line[:_MAX_LINE] + f"... ({len(line):,} characters)"


def parse_prometheus_duration(text: object) -> float:
    """Seconds of a Prometheus duration (``5m``, ``1h30m``, ``0``); ValueError otherwise."""
    if text == "0":
        return 0.0
    if isinstance(text, str) and len(text) > _MAX_DURATION_TEXT:
        raise ValueError(f"not a valid duration string: {text[:_MAX_DURATION_TEXT]!r}... (too long)")
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


class _StrictLoader(SafeLoader):  # type: ignore[misc,valid-type]  # libyaml's loader or the pure one, chosen at import
    """A key must be a string, as in Prometheus's YAML decoder (duplicate keys, deep nesting and alias bombs are
    refused before, on the event stream, by config.yamlfile)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    out = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in out
        except TypeError:  # a list or mapping as a key
            raise yaml.constructor.ConstructorError(None, None, "a key must be a string, not a list or mapping",
                                                    key_node.start_mark) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_rules(path: str | Path, *, default_interval: float = DEFAULT_INTERVAL) -> RuleSet:
    """Load and validate a rule file; raises RuleError listing every problem."""
    path = Path(path)
    try:
        text = read_text(path, MAX_FILE_BYTES, "rule file")
    except OSError as exc:
        raise RuleError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except YamlFileError as exc:
        raise RuleError([f"{path}: {exc}"]) from None
    return parse_rules(text, source=str(path), default_interval=default_interval)


def parse_rules(text: str, *, source: str = "alerts.yml", default_interval: float = DEFAULT_INTERVAL) -> RuleSet:
    if len(text) > MAX_FILE_BYTES:
        raise RuleError([f"{source}: rule file is larger than {MAX_FILE_BYTES // 1024**2} MiB"])
    try:
        doc = parse_yaml(text, loader=_StrictLoader, max_nodes=MAX_YAML_NODES)
    except YamlFileError as exc:
        raise RuleError([f"{source}: {exc}"]) from None
    problems: list[str] = []
    groups = _parse_file(doc, source, default_interval, problems)
    if problems:
        raise RuleError(problems)
    return RuleSet(source, tuple(groups))


def _parse_file(doc: object, source: str, default_interval: float, problems: list[str]) -> list[RuleGroup]:
    if doc is None:
        return []
    if not isinstance(doc, dict) or set(doc) - {"groups"}:
        extra = sorted(set(doc) - {"groups"}, key=str) if isinstance(doc, dict) else None
        problems.append(f"{source}: expected a mapping with only 'groups'" + (f", got keys {extra}" if extra else ""))
        return []
    raw_groups = doc.get("groups") or []
    if not isinstance(raw_groups, list):
        problems.append(f"{source}: 'groups' must be a list")
        return []
    count = sum(len(g["rules"]) for g in raw_groups if isinstance(g, dict) and isinstance(g.get("rules"), list))
    if count > MAX_RULES:
        problems.append(f"{source}: {count:,} rules, more than the {MAX_RULES:,} one file may hold")
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
    for key in sorted(set(raw) - _GROUP_KEYS, key=str):
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
    for key in sorted(set(raw) - _RULE_KEYS, key=str):
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
    too_complex = _expression_too_complex(raw)
    if too_complex:
        problems.append(f"{here}: expr: {too_complex}")
        return None
    try:
        expr = compile_expr(raw)
    except PromQLError as exc:
        problems.extend(f"{here}: {p}" for p in exc.problems)
        return None
    except RecursionError:  # a safety net: the bounds above keep well clear of it
        problems.append(f"{here}: expr: nested too deeply to evaluate")
        return None
    out_of_range = _ranges_out_of_bounds(expr)
    if out_of_range:
        problems.extend(f"{here}: expr: {p}" for p in out_of_range)
        return None
    return expr


_OPERATOR_CHARS = frozenset("+-*/%^=!<>")
_OPERATOR_WORDS = frozenset({"and", "or", "unless", "atan2"})
_QUOTES = frozenset("\"'`")


def _expression_too_complex(text: str) -> str | None:
    """Why ``text`` may not be handed to the parser, or None. A linear scan outside string literals: bracket
    depth, operator characters (a conservative count: ``>=`` is two) and operator words outside ``{}``."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_EXPR_BYTES:
        return f"expression is {size:,} bytes long, more than the {MAX_EXPR_BYTES:,} allowed"
    depth = max_depth = braces = operators = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _QUOTES:  # a string literal: skip it (escapes in "..." and '...', none in `...`)
            i += 1
            while i < n and text[i] != c:
                i += 2 if text[i] == "\\" and c != "`" else 1
        elif c == "#":  # a comment, to the end of the line
            while i < n and text[i] != "\n":
                i += 1
        elif c in "([{":
            depth += 1
            braces += c == "{"
            max_depth = max(max_depth, depth)
        elif c in ")]}":
            depth -= 1
            braces -= c == "}"
        elif braces <= 0 and c in _OPERATOR_CHARS:
            operators += 1
        elif c.isalpha() or c == "_":
            start = i
            while i + 1 < n and (text[i + 1].isalnum() or text[i + 1] in "_:"):
                i += 1
            if braces <= 0 and text[start:i + 1].lower() in _OPERATOR_WORDS:
                operators += 1
        i += 1
    if max_depth > MAX_EXPR_NESTING:
        return f"expression is nested {max_depth} brackets deep, more than the {MAX_EXPR_NESTING} allowed"
    if operators > MAX_EXPR_OPERATORS:
        return f"expression has {operators} operators, more than the {MAX_EXPR_OPERATORS} allowed; split the rule"
    return None


def _ranges_out_of_bounds(expr: Expr) -> list[str]:
    """Ranges and offsets beyond MAX_RANGE: the history would keep that much of every series they select."""
    problems = []
    stack = [expr.root]
    while stack:
        node = stack.pop()
        if isinstance(node, MatrixSel) and node.range_ms / 1000 > MAX_RANGE:
            problems.append(f"range [{_prometheus_duration(node.range_ms)}] of {_name(node.vs)} is longer than "
                            f"{format_duration(MAX_RANGE)} (the limit bounds the history kept per series)")
        if isinstance(node, VectorSel) and abs(node.offset_ms) / 1000 > MAX_RANGE:
            problems.append(f"offset {_prometheus_duration(node.offset_ms)} of {_name(node)} is larger than "
                            f"{format_duration(MAX_RANGE)} (the limit bounds the history kept per series)")
        stack.extend(node.children())
        if isinstance(node, MatrixSel):
            stack.append(node.vs)  # a range selector's children() is empty: its offset is its selector's
    return list(dict.fromkeys(problems))


def _prometheus_duration(ms: int) -> str:
    """``ms`` as Prometheus writes a duration (``1000y``, ``1w2d``, ``-5m``)."""
    if ms < 0:
        return "-" + _prometheus_duration(-ms)
    out = ""
    for unit, size in zip(("y", "w", "d", "h", "m", "s", "ms"), _UNITS, strict=True):
        count, ms = divmod(ms, round(size * 1000))
        out += f"{count}{unit}" if count else ""
    return out or "0s"


def _name(sel: VectorSel) -> str:
    return sel.name or "the selector"


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
