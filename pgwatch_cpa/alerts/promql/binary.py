"""Binary operators: arithmetic and comparisons (with bool), vector matching (on/ignoring, group_left/group_right)
and the set operators, with Prometheus's result labels and matching errors."""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable

from pgwatch_cpa.alerts.promql.gofloat import go_div, go_mod, go_pow
from pgwatch_cpa.alerts.promql.nodes import Context, Node, ScalarNode, VectorNode
from pgwatch_cpa.alerts.promql.syntax import BinaryOp
from pgwatch_cpa.alerts.promql.values import (
    NAME,
    EvalError,
    Sample,
    Vector,
    check_unique,
    default_sig,
    drop_name,
    several_names,
)

Signature = Callable[[dict[str, str]], Hashable]

ARITH: dict[str, Callable[[float, float], float]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": go_div, "%": go_mod, "^": go_pow,
}
COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le,
}


def _and(lhs: Vector, rhs: Vector, sig: Signature) -> Vector:
    if not lhs or not rhs:
        return []
    right = {sig(s.labels) for s in rhs}
    return [s for s in lhs if sig(s.labels) in right]


def _or(lhs: Vector, rhs: Vector, sig: Signature) -> Vector:
    if not lhs or not rhs:
        return lhs + rhs
    left = {sig(s.labels) for s in lhs}
    return lhs + [s for s in rhs if sig(s.labels) not in left]


def _unless(lhs: Vector, rhs: Vector, sig: Signature) -> Vector:
    if not lhs or not rhs:
        return lhs
    right = {sig(s.labels) for s in rhs}
    return [s for s in lhs if sig(s.labels) not in right]


SET_OPS: dict[str, Callable[[Vector, Vector, Signature], Vector]] = {"and": _and, "or": _or, "unless": _unless}
OPERATORS = frozenset([*ARITH, *COMPARE, *SET_OPS])


def make_binary(s: BinaryOp, lhs: ScalarNode | VectorNode, rhs: ScalarNode | VectorNode) -> ScalarNode | VectorNode:
    """The node for ``lhs op rhs``, by the kinds of its operands."""
    if isinstance(lhs, ScalarNode):
        if isinstance(rhs, ScalarNode):
            return ScalarBinary(s.op, lhs, rhs)
        return VectorScalar(s.op, s.return_bool, rhs, lhs, scalar_first=True)
    if isinstance(rhs, ScalarNode):
        return VectorScalar(s.op, s.return_bool, lhs, rhs, scalar_first=False)
    return Binary(s, lhs, rhs)


def _elem(op: str, lhs: float, rhs: float) -> tuple[float, bool]:
    fn = ARITH.get(op)
    if fn is not None:
        return fn(lhs, rhs), True
    return lhs, COMPARE[op](lhs, rhs)


class ScalarBinary(ScalarNode):
    def __init__(self, op: str, lhs: ScalarNode, rhs: ScalarNode) -> None:
        self.op, self.lhs, self.rhs = op, lhs, rhs

    def children(self) -> list[Node]:
        return [self.lhs, self.rhs]

    def eval(self, ctx: Context) -> float:
        value, keep = _elem(self.op, self.lhs.eval(ctx), self.rhs.eval(ctx))
        return float(keep) if self.op in COMPARE else value  # scalars compare only with bool


class VectorScalar(VectorNode):
    """A vector and a scalar operand, in either order."""

    def __init__(self, op: str, return_bool: bool, vector: VectorNode, scalar: ScalarNode, scalar_first: bool) -> None:
        self.op, self.return_bool = op, return_bool
        self.vector, self.scalar, self.scalar_first = vector, scalar, scalar_first

    def children(self) -> list[Node]:
        return [self.scalar, self.vector] if self.scalar_first else [self.vector, self.scalar]

    def eval(self, ctx: Context) -> Vector:
        if self.scalar_first:
            scalar = self.scalar.eval(ctx)
            vec = self.vector.eval(ctx)
        else:
            vec = self.vector.eval(ctx)
            scalar = self.scalar.eval(ctx)
        op, swap, comparison = self.op, self.scalar_first, self.op in COMPARE
        drop = not comparison or self.return_bool
        out = []
        for s in vec:
            lv, rv = (scalar, s.value) if swap else (s.value, scalar)
            value, keep = _elem(op, lv, rv)
            if comparison and swap:
                value = rv  # the vector element's value is kept, even when the vector is on the right
            if self.return_bool:
                value, keep = float(keep), True
            if keep:
                out.append(Sample(drop_name(s.labels) if drop else s.labels, value))
        return check_unique(out, several_names(vec)) if drop else out


class Binary(VectorNode):
    """Two vector operands, matched by their labels."""

    def __init__(self, s: BinaryOp, lhs: VectorNode, rhs: VectorNode) -> None:
        self.op, self.lhs, self.rhs, self.return_bool = s.op, lhs, rhs, s.return_bool
        self.on, self.match_labels, self.card, self.include = s.on, s.match_labels, s.card, s.include
        self.sig = self._signature()
        self.set_op = SET_OPS.get(s.op)

    def children(self) -> list[Node]:
        return [self.lhs, self.rhs]

    def eval(self, ctx: Context) -> Vector:
        lhs, rhs = self.lhs.eval(ctx), self.rhs.eval(ctx)
        if self.set_op is not None:
            return self.set_op(lhs, rhs, self.sig)
        return self._match(lhs, rhs)

    def _signature(self) -> Signature:
        names = self.match_labels
        if self.on:
            return lambda lb: tuple(lb.get(n, "") for n in names)
        if not names:
            return default_sig
        skip = {*names, NAME}
        return lambda lb: frozenset((k, v) for k, v in lb.items() if k not in skip)

    def _match(self, lhs: Vector, rhs: Vector) -> Vector:
        sig = self.sig
        one_to_many = self.card == "one-to-many"
        if one_to_many:
            lhs, rhs = rhs, lhs
        right: dict[Hashable, Sample] = {}
        for rs in rhs:
            key = sig(rs.labels)
            if key in right:
                side = "left" if one_to_many else "right"
                raise EvalError(f"found duplicate series for the match group on the {side} hand-side of the "
                                "operation; many-to-many matching not allowed: matching labels must be unique "
                                "on one side")
            right[key] = rs
        seen: set[Hashable] = set()
        out = []
        for ls in lhs:
            key = sig(ls.labels)
            match = right.get(key)
            if match is None:
                continue
            vl, vr = (match.value, ls.value) if one_to_many else (ls.value, match.value)
            value, keep = _elem(self.op, vl, vr)
            if self.return_bool:
                value = float(keep)
            elif not keep:
                continue
            labels = self._result_labels(ls.labels, match.labels)
            self._check_match(seen, key, labels)
            out.append(Sample(labels, value))
        return out  # unique by construction: the signature checks above reject every collision

    def _check_match(self, seen: set[Hashable], key: Hashable, labels: dict[str, str]) -> None:
        """One-to-one: each match group once; group_x: each result label set once per match group."""
        if self.card == "one-to-one":
            if key in seen:
                raise EvalError("multiple matches for labels: many-to-one matching must be explicit "
                                "(group_left/group_right)")
            seen.add(key)
            return
        result_key = (key, frozenset(labels.items()))
        if result_key in seen:
            raise EvalError("multiple matches for matching labels; many-to-one matching must be explicit "
                            "(group_left/group_right)")
        seen.add(result_key)

    def _result_labels(self, many: dict[str, str], one: dict[str, str]) -> dict[str, str]:
        if self.card == "one-to-one" and not self.on and not self.match_labels:
            # the common case shares the (cached) label dicts instead of building new ones
            return drop_name(many) if self.op in ARITH or self.return_bool else many
        out = dict(many)
        if self.op in ARITH or self.return_bool:
            out.pop(NAME, None)
        if self.card == "one-to-one":
            if self.on:
                out = {k: v for k, v in out.items() if k in self.match_labels}
            else:
                for n in self.match_labels:
                    out.pop(n, None)
        for n in self.include:  # group_x labels come from the "one" side
            if one.get(n, "") != "":
                out[n] = one[n]
            else:
                out.pop(n, None)
        return out
