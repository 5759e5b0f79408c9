"""The compiled expression tree: the node types by what they evaluate to, selectors, negation and aggregations.

Kinds are static, as in PromQL: a ScalarNode evaluates to a float, a VectorNode to a list of Samples, a MatrixSel
to the samples of each series in a range (only a range function reads one).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Hashable, MutableMapping, Sequence
from typing import TypeVar

from pgwatch_cpa.alerts.history import History, Series, is_stale
from pgwatch_cpa.alerts.promql.syntax import Matcher, Selector
from pgwatch_cpa.alerts.promql.values import NAME, PromQLError, Sample, Vector, check_unique, drop_name, several_names

Matrix = list[tuple[dict[str, str], Sequence[int], Sequence[float]]]
Predicate = Callable[[str], bool]
# Series each selector matched, with the version of the series set they were matched in. Keyed by the selector
# itself, weakly: an id() outlives its object, and the next expression's selector may be given it.
SelectorCache = MutableMapping["VectorSel", tuple[int, list[Series]]]


class Context:
    """One instant query: the history, the evaluation time (ms) and per-evaluator selector caches."""

    __slots__ = ("cache", "history", "lookback_ms", "t_ms")

    def __init__(self, history: History, t_ms: int, lookback_ms: int, cache: SelectorCache) -> None:
        self.history = history
        self.t_ms = t_ms
        self.lookback_ms = lookback_ms
        self.cache = cache


class Node:
    def selectors(self) -> list[VectorSel]:
        return [s for child in self.children() for s in child.selectors()]

    def children(self) -> Sequence[Node]:
        return []


class ScalarNode(Node):
    def eval(self, ctx: Context) -> float:
        raise NotImplementedError


class VectorNode(Node):
    def eval(self, ctx: Context) -> Vector:
        raise NotImplementedError


N = TypeVar("N", bound=Node)


def narrow(node: Node, kind: type[N]) -> N:
    """``node`` as the kind an operand or argument must have (promql-parser checks kinds, so this never fails)."""
    if not isinstance(node, kind):
        raise PromQLError([f"expected a {kind.__name__}, got {type(node).__name__}"])
    return node


def instant(node: Node) -> ScalarNode | VectorNode:
    """``node`` as a scalar or instant vector (what operators take; promql-parser rejects range vectors first)."""
    if not isinstance(node, ScalarNode | VectorNode):
        raise PromQLError([f"expected a scalar or instant vector, got {type(node).__name__}"])
    return node


class Num(ScalarNode):
    def __init__(self, value: float) -> None:
        self.value = value

    def eval(self, ctx: Context) -> float:
        return self.value


class NegateScalar(ScalarNode):
    def __init__(self, expr: ScalarNode) -> None:
        self.expr = expr

    def children(self) -> list[Node]:
        return [self.expr]

    def eval(self, ctx: Context) -> float:
        return -self.expr.eval(ctx)


class Negate(VectorNode):
    def __init__(self, expr: VectorNode) -> None:
        self.expr = expr

    def children(self) -> list[Node]:
        return [self.expr]

    def eval(self, ctx: Context) -> Vector:
        v = self.expr.eval(ctx)
        return check_unique([Sample(drop_name(s.labels), -s.value) for s in v], several_names(v))


class VectorSel(VectorNode):
    def __init__(self, sel: Selector, predicates: list[tuple[str, Predicate]]) -> None:
        self.name = sel.name
        self.offset_ms = sel.offset_ms
        self.raw_matchers: tuple[Matcher, ...] = sel.matchers  # as written: absent() builds its labels from them
        self.matchers = predicates

    def selectors(self) -> list[VectorSel]:
        return [self]

    def matching(self, ctx: Context) -> list[Series]:
        """Series selected, in creation order; cached until the set of series changes."""
        hist = ctx.history
        if self.name is not None:
            version, series = hist.family(self.name)
        else:
            version, series = hist.version, sorted(
                (s for n in hist.names() for s in hist.family(n)[1]), key=lambda s: s.seq)
        cached = ctx.cache.get(self)
        if cached is not None and cached[0] == version:
            return cached[1]
        matchers = self.matchers
        hit = [s for s in series if all(f(s.labels.get(n, "")) for n, f in matchers)]
        ctx.cache[self] = (version, hit)
        return hit

    def eval(self, ctx: Context) -> Vector:
        ref = ctx.t_ms - self.offset_ms
        oldest = ref - ctx.lookback_ms
        out = []
        for s in self.matching(ctx):
            ts = s.ts
            if not ts:
                continue
            i = len(ts) - 1 if ts[-1] <= ref else bisect_right(ts, ref) - 1
            if i < 0 or ts[i] < oldest:  # 2.x lookback is left-closed: a sample exactly 5 m old still counts
                continue
            v = s.vals[i]
            if v != v and is_stale(v):
                continue
            out.append(Sample(s.labels, v))
        return out


class MatrixSel(Node):
    def __init__(self, vs: VectorSel, range_ms: int) -> None:
        self.vs = vs
        self.range_ms = range_ms

    def selectors(self) -> list[VectorSel]:
        return [self.vs]

    def window(self, ctx: Context) -> tuple[int, int]:
        end = ctx.t_ms - self.vs.offset_ms
        return end - self.range_ms, end

    def eval(self, ctx: Context) -> Matrix:
        """(labels, timestamps, values) per series with at least one sample in the closed window."""
        start, end = self.window(ctx)
        out: Matrix = []
        for s in self.vs.matching(ctx):
            ts = s.ts
            if not ts or ts[-1] < start:
                continue
            lo = bisect_left(ts, start)
            hi = len(ts) if ts[-1] <= end else bisect_right(ts, end)
            if lo >= hi:
                continue
            tss: Sequence[int] = ts[lo:hi]  # array slices: a memcpy, no per-sample objects
            vals: Sequence[float] = s.vals[lo:hi]
            if s.n_stale:
                keep = [i for i, v in enumerate(vals) if not is_stale(v)]
                tss, vals = [tss[i] for i in keep], [vals[i] for i in keep]
                if not tss:
                    continue
            out.append((s.labels, tss, vals))
        return out


AGGREGATIONS = frozenset(["sum", "avg", "min", "max", "count"])


class Aggregate(VectorNode):
    def __init__(self, op: str, expr: VectorNode, without: bool, grouping: list[str]) -> None:
        self.op = op
        self.expr = expr
        self.without = without
        self.grouping = grouping

    def children(self) -> list[Node]:
        return [self.expr]

    def _group(self, labels: dict[str, str]) -> tuple[Hashable, dict[str, str]]:
        if self.without:
            drop = set(self.grouping) | {NAME}
            out = {k: v for k, v in labels.items() if k not in drop}
            return frozenset(out.items()), out
        out = {k: labels[k] for k in self.grouping if labels.get(k, "") != ""}
        return tuple(out.get(k, "") for k in self.grouping), out

    def eval(self, ctx: Context) -> Vector:
        groups: dict[Hashable, _Group] = {}  # insertion order is Prometheus's output order
        op = self.op
        for s in self.expr.eval(ctx):
            key, labels = self._group(s.labels)
            g = groups.get(key)
            v = s.value
            if g is None:
                groups[key] = _Group(labels, v)
                continue
            g.count += 1
            if op == "sum":
                g.value += v
            elif op == "avg":
                g.mean = _avg_step(g.mean, v, g.count)
            elif op == "max":
                if g.value < v or g.value != g.value:
                    g.value = v
            elif op == "min" and (g.value > v or g.value != g.value):
                g.value = v
        return [Sample(g.labels, g.result(op)) for g in groups.values()]


class _Group:
    """One output series of an aggregation: the running value (sum/min/max), mean (avg) and count."""

    __slots__ = ("count", "labels", "mean", "value")

    def __init__(self, labels: dict[str, str], value: float) -> None:
        self.labels = labels
        self.value = value
        self.mean = value
        self.count = 1

    def result(self, op: str) -> float:
        if op == "avg":
            return self.mean
        if op == "count":
            return float(self.count)
        return self.value


def _avg_step(mean: float, v: float, count: int) -> float:
    if math.isinf(mean):
        if math.isinf(v) and (mean > 0) == (v > 0):
            return mean
        if not math.isinf(v) and v == v:
            return mean
    return mean + (v / count - mean / count)
