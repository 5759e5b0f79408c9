"""Compilation of an expression into a node tree, and the Evaluator running it over a History.

Every construct outside the supported subset is reported at compile time, all of them in one PromQLError.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

import re2

from pgwatch_cpa.alerts.history import History
from pgwatch_cpa.alerts.promql import syntax
from pgwatch_cpa.alerts.promql.binary import OPERATORS, make_binary
from pgwatch_cpa.alerts.promql.functions import FUNCTIONS
from pgwatch_cpa.alerts.promql.nodes import (
    AGGREGATIONS,
    Aggregate,
    Context,
    MatrixSel,
    Negate,
    NegateScalar,
    Node,
    Num,
    Predicate,
    ScalarNode,
    SelectorCache,
    VectorNode,
    VectorSel,
    instant,
    narrow,
)
from pgwatch_cpa.alerts.promql.syntax import MatchOp
from pgwatch_cpa.alerts.promql.values import EvalError, PromQLError, Sample, Value, Vector

DEFAULT_LOOKBACK = 300.0


class Expr:
    """A compiled expression: its text, root node, the selectors it reads and the history window it needs."""

    def __init__(self, text: str, root: Node) -> None:
        self.text = text
        self.root = root
        self.selectors = root.selectors()

    def metric_names(self) -> frozenset[str] | None:
        """Metric names read; None when a selector has no fixed name (then every name must be kept)."""
        names = [s.name for s in self.selectors]
        return None if None in names else frozenset(n for n in names if n is not None)

    def windows(self) -> dict[str | None, float]:
        """Seconds of history each metric name needs before the evaluation time (range + offset)."""
        out: dict[str | None, float] = {}
        for node in _walk(self.root):
            if isinstance(node, MatrixSel):
                need, name = (node.range_ms + node.vs.offset_ms) / 1000, node.vs.name
            elif isinstance(node, VectorSel):
                need, name = node.offset_ms / 1000, node.name
            else:
                continue
            out[name] = max(out.get(name, 0.0), need)
        return out


def _walk(node: Node) -> list[Node]:
    out = [node]
    if isinstance(node, MatrixSel):
        return [node]
    for child in node.children():
        out.extend(_walk(child))
    return out


def compile_expr(text: str) -> Expr:
    """Parse and compile; PromQLError lists the syntax error or every unsupported construct."""
    try:
        tree = syntax.parse(text)
    except (ValueError, TypeError) as exc:
        raise PromQLError([f"syntax error: {exc}"]) from None
    problems: list[str] = []
    root = _compile(tree, problems)
    if root is None or problems:
        raise PromQLError(list(dict.fromkeys(problems)))
    return Expr(text, root)


# Each _compile function appends the problems of its subtree and returns None when there are any.


def _compile(s: syntax.Syntax, problems: list[str]) -> Node | None:
    match s:
        case syntax.Number(value):
            return Num(value)
        case syntax.Selector():
            return _selector(s, problems)
        case syntax.RangeSelector(selector, range_ms):
            vs = _selector(selector, problems)
            return None if vs is None else MatrixSel(vs, range_ms)
        case syntax.Negation(expr):
            return _negation(expr, problems)
        case syntax.FunctionCall():
            return _call(s, problems)
        case syntax.Aggregation():
            return _aggregation(s, problems)
        case syntax.BinaryOp():
            return _binary(s, problems)
        case syntax.Unsupported(problem):
            problems.append(problem)
            return None


def _selector(s: syntax.Selector, problems: list[str]) -> VectorSel | None:
    before = len(problems)
    if s.has_at:
        problems.append("the @ modifier is not supported")
    if s.has_or_matchers:
        problems.append("'or' inside label matchers is not supported")
    predicates = [_predicate(m, problems) for m in s.matchers]
    if len(problems) > before:
        return None
    return VectorSel(s, [p for p in predicates if p is not None])


def _predicate(m: syntax.Matcher, problems: list[str]) -> tuple[str, Predicate] | None:
    value = m.value
    if m.op == MatchOp.EQUAL:
        return m.name, lambda v: v == value
    if m.op == MatchOp.NOT_EQUAL:
        return m.name, lambda v: v != value
    try:
        rx = compile_regex(value)
    except re2.error as exc:
        problems.append(f"regex {value!r} not supported by this evaluator: {_re2_message(exc)} (RE2 syntax, as in "
                        "Prometheus: no backreferences or lookaround)")
        return None
    if m.op == MatchOp.RE:
        return m.name, lambda v: rx.search(v) is not None
    return m.name, lambda v: rx.search(v) is None


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is raised to us; RE2 would also print it to stderr


def compile_regex(value: str) -> Any:
    """A label matcher's regex as Prometheus 2.42 runs it: anchored at both ends (``^(?:re)$``), in RE2, whose
    time is linear in the label value (Python's backtracking re takes exponential time on ``(a+)+b``, and the
    label values come from the monitored databases)."""
    return re2.compile(f"^(?:{value})$", _RE2_OPTIONS)


def _re2_message(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else exc
    return detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)


def _negation(expr: syntax.Syntax, problems: list[str]) -> Node | None:
    node = _compile(expr, problems)
    if node is None:
        return None
    operand = instant(node)
    return NegateScalar(operand) if isinstance(operand, ScalarNode) else Negate(operand)


def _call(s: syntax.FunctionCall, problems: list[str]) -> Node | None:
    build = FUNCTIONS.get(s.name)
    if build is None:
        problems.append(f'unsupported function "{s.name}"')
    args = [_compile(a, problems) for a in s.args]
    compiled = [a for a in args if a is not None]
    if build is None or len(compiled) < len(args):
        return None
    return build(compiled)


def _aggregation(s: syntax.Aggregation, problems: list[str]) -> Node | None:
    if s.op not in AGGREGATIONS:
        problems.append(f'unsupported aggregation "{s.op}"')
    expr = _compile(s.expr, problems)
    if expr is None or s.op not in AGGREGATIONS:
        return None
    return Aggregate(s.op, narrow(expr, VectorNode), s.without, list(s.grouping))


def _binary(s: syntax.BinaryOp, problems: list[str]) -> Node | None:
    before = len(problems)
    if s.op not in OPERATORS:
        problems.append(f'unsupported operator "{s.op}"')
    if s.has_fill:
        problems.append("fill() modifiers are not supported")
    lhs, rhs = _compile(s.lhs, problems), _compile(s.rhs, problems)
    if lhs is None or rhs is None or len(problems) > before:
        return None
    return make_binary(s, instant(lhs), instant(rhs))


class Evaluator:
    """Instant queries over a History. Keeps a per-selector cache of matching series between evaluations."""

    def __init__(self, history: History, lookback: float = DEFAULT_LOOKBACK) -> None:
        self.history = history
        self.lookback_ms = round(lookback * 1000)
        self._cache: SelectorCache = WeakKeyDictionary()

    def eval(self, expr: Expr | str, t: float) -> Value:
        """Value of ``expr`` at ``t`` (seconds): a list of Samples, or a float for scalar expressions."""
        root = (compile_expr(expr) if isinstance(expr, str) else expr).root
        if not isinstance(root, ScalarNode | VectorNode):
            raise EvalError("rule result is not a vector or scalar")  # a bare range selector, as Prometheus says
        return root.eval(Context(self.history, round(t * 1000), self.lookback_ms, self._cache))

    def vector(self, expr: Expr | str, t: float) -> Vector:
        """As eval(), a scalar result turned into one sample without labels (what a rule sees)."""
        value = self.eval(expr, t)
        return [Sample({}, value)] if isinstance(value, float) else value
