"""A typed copy of promql-parser's AST, made once at compile time.

promql-parser's classes are Rust objects: its stubs leave enum members and call arguments as Any, and its enums are
unhashable. to_syntax() converts a parsed expression into the frozen dataclasses below, so the compiler is typed
end to end and never touches a parser object.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import IntEnum
from typing import Literal, TypeVar

import promql_parser as pp


class MatchOp(IntEnum):
    """Label matcher operators, numbered as promql-parser numbers them (so its members compare equal to these)."""

    EQUAL = 0
    NOT_EQUAL = 1
    RE = 2
    NOT_RE = 3


Card = Literal["one-to-one", "many-to-one", "one-to-many", "many-to-many"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: MatchOp
    value: str


@dataclass(frozen=True, slots=True)
class Selector:
    name: str | None
    matchers: tuple[Matcher, ...]
    offset_ms: int
    has_at: bool  # the @ modifier
    has_or_matchers: bool  # foo{a="1" or b="2"}


@dataclass(frozen=True, slots=True)
class RangeSelector:
    selector: Selector
    range_ms: int


@dataclass(frozen=True, slots=True)
class Number:
    value: float


@dataclass(frozen=True, slots=True)
class Negation:
    expr: Syntax


@dataclass(frozen=True, slots=True)
class FunctionCall:
    name: str
    args: tuple[Syntax, ...]


@dataclass(frozen=True, slots=True)
class Aggregation:
    op: str
    expr: Syntax
    without: bool
    grouping: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BinaryOp:
    op: str
    lhs: Syntax
    rhs: Syntax
    return_bool: bool
    on: bool  # on(...) rather than ignoring(...)
    match_labels: tuple[str, ...]
    card: Card
    include: tuple[str, ...]  # the labels of group_left/group_right
    has_fill: bool  # fill() modifiers (newer PromQL)


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A construct the evaluator does not support, with the problem to report."""

    problem: str


Syntax = Number | Selector | RangeSelector | Negation | FunctionCall | Aggregation | BinaryOp | Unsupported


def parse(text: str) -> Syntax:
    """The typed tree of ``text``; promql-parser raises ValueError (or TypeError) for a syntax error."""
    return to_syntax(pp.parse(text))


def to_syntax(node: pp.Expr) -> Syntax:
    match node:
        case pp.NumberLiteral():
            return Number(float(node.val))
        case pp.ParenExpr():
            return to_syntax(node.expr)
        case pp.UnaryExpr():
            return Negation(to_syntax(node.expr))
        case pp.VectorSelector():
            return _selector(node)
        case pp.MatrixSelector():
            return RangeSelector(_selector(node.vector_selector), _ms(node.range))
        case pp.Call():
            args: list[pp.Expr] = node.args  # typed List[Any] by the stubs
            return FunctionCall(node.func.name, tuple(to_syntax(a) for a in args))
        case pp.AggregateExpr():
            return _aggregation(node)
        case pp.BinaryExpr():
            return _binary(node)
        case pp.SubqueryExpr():
            return Unsupported(f"subqueries are not supported: {node}")
        case pp.StringLiteral():
            return Unsupported(f"string literals are not supported: {node}")
    return Unsupported(f"unsupported expression {type(node).__name__}: {node}")


def _selector(vs: pp.VectorSelector) -> Selector:
    matchers = tuple(Matcher(m.name, _translate(m.op, _MATCH_OPS, MatchOp.NOT_RE), m.value)
                     for m in vs.matchers.matchers)
    offset = _ms(vs.offset) if vs.offset is not None else 0
    return Selector(vs.name, matchers, offset, vs.at is not None, bool(vs.matchers.or_matchers))


def _aggregation(node: pp.AggregateExpr) -> Aggregation:
    mod = node.modifier
    without = mod is not None and bool(mod.type == pp.AggModifierType.Without)
    grouping = tuple(mod.labels) if mod is not None else ()
    return Aggregation(str(node.op), to_syntax(node.expr), without, grouping)


def _binary(node: pp.BinaryExpr) -> BinaryOp:
    op, lhs, rhs = str(node.op), to_syntax(node.lhs), to_syntax(node.rhs)
    mod = node.modifier
    if mod is None:
        return BinaryOp(op, lhs, rhs, False, False, (), "one-to-one", (), False)
    matching = mod.matching
    on = matching is not None and bool(matching.type == pp.LabelModifierType.Include)
    match_labels = tuple(matching.labels) if matching is not None else ()
    card = _translate(mod.card, _CARDS, "many-to-many")
    has_fill = mod.fill_values.lhs is not None or mod.fill_values.rhs is not None
    return BinaryOp(op, lhs, rhs, mod.return_bool, on, match_labels, card, tuple(mod.group_labels or ()), has_fill)


def _ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)


# promql-parser's enum members are unhashable: they are translated by equality, in these tables.
_MATCH_OPS: tuple[tuple[object, MatchOp], ...] = (
    (pp.MatchOp.Equal, MatchOp.EQUAL), (pp.MatchOp.NotEqual, MatchOp.NOT_EQUAL), (pp.MatchOp.Re, MatchOp.RE))
_CARDS: tuple[tuple[object, Card], ...] = (
    (pp.VectorMatchCardinality.OneToOne, "one-to-one"), (pp.VectorMatchCardinality.ManyToOne, "many-to-one"),
    (pp.VectorMatchCardinality.OneToMany, "one-to-many"))


def _translate(member: object, table: tuple[tuple[object, T], ...], default: T) -> T:
    return next((ours for theirs, ours in table if member == theirs), default)
