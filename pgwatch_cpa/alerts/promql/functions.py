"""PromQL functions: the table FUNCTIONS (name -> builder of the node evaluating a call) and their arithmetic.

Range functions follow Prometheus operation for operation (extrapolatedRate, least squares with Kahan sums, the
incremental mean of avg_over_time), so results agree to the last bit.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pgwatch_cpa.alerts.promql.gofloat import (
    NaN,
    go_div,
    go_log,
    go_log2,
    go_log10,
    go_max,
    go_min,
    go_sqrt,
    kahan_inc,
    round_like_go,
)
from pgwatch_cpa.alerts.promql.nodes import Context, MatrixSel, Node, ScalarNode, VectorNode, VectorSel, narrow
from pgwatch_cpa.alerts.promql.quantile import HistogramQuantile
from pgwatch_cpa.alerts.promql.syntax import MatchOp
from pgwatch_cpa.alerts.promql.values import NAME, Sample, Vector, check_unique, drop_name, several_names

# ---------------------------------------------------------------------------------------------------------------
# Range-vector functions: each maps one series' samples in the window to a value, or None for no output sample


@dataclass(frozen=True, slots=True)
class Window:
    """The closed range read (ms), its length (s), the evaluation time (ms) and the call's scalar arguments."""

    start: int
    end: int
    range_s: float
    t_ms: int
    params: tuple[float, ...]


RangeFn = Callable[[Sequence[int], Sequence[float], Window], "float | None"]


def _extrapolated_rate(ts: Sequence[int], vs: Sequence[float], w: Window, is_counter: bool,
                       is_rate: bool) -> float | None:
    """Prometheus's extrapolatedRate, operation for operation."""
    if len(vs) < 2:
        return None
    result = vs[-1] - vs[0]
    if is_counter and any(map(operator.lt, vs[1:], vs)):  # C-speed scan; walk only when a reset exists
        prev = vs[0]
        for v in vs[1:]:
            if v < prev:
                result += prev
            prev = v
    to_start = (ts[0] - w.start) / 1000
    to_end = (w.end - ts[-1]) / 1000
    sampled = (ts[-1] - ts[0]) / 1000
    average = sampled / (len(vs) - 1)
    if is_counter and result > 0 and vs[0] >= 0:
        to_zero = sampled * (vs[0] / result)  # a counter cannot be extrapolated below zero
        if to_zero < to_start:
            to_start = to_zero
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    factor = interval / sampled
    if is_rate:
        factor /= w.range_s
    return result * factor


def _instant_value(ts: Sequence[int], vs: Sequence[float], is_rate: bool) -> float | None:
    if len(vs) < 2:
        return None
    last, prev = vs[-1], vs[-2]
    result = last if is_rate and last < prev else last - prev
    interval = ts[-1] - ts[-2]
    if interval == 0:
        return None
    return result / (interval / 1000) if is_rate else result


def linear_regression(ts: Sequence[int], vs: Sequence[float], intercept_ms: int) -> tuple[float, float]:
    """Least squares (slope, intercept at intercept_ms) with Kahan sums, as Prometheus computes it."""
    n = sx = cx = sy = cy = sxy = cxy = sx2 = cx2 = 0.0
    init_y, const_y = vs[0], True
    for i, (t, v) in enumerate(zip(ts, vs, strict=True)):
        if const_y and i > 0 and v != init_y:
            const_y = False
        n += 1.0
        x = (t - intercept_ms) / 1e3
        sx, cx = kahan_inc(x, sx, cx)
        sy, cy = kahan_inc(v, sy, cy)
        sxy, cxy = kahan_inc(x * v, sxy, cxy)
        sx2, cx2 = kahan_inc(x * x, sx2, cx2)
    if const_y:
        return (NaN, NaN) if math.isinf(init_y) else (0.0, init_y)
    sx, sy, sxy, sx2 = sx + cx, sy + cy, sxy + cxy, sx2 + cx2
    cov = sxy - sx * sy / n
    var = sx2 - sx * sx / n
    slope = go_div(cov, var)
    return slope, sy / n - slope * sx / n


def _deriv(ts: Sequence[int], vs: Sequence[float]) -> float | None:
    return linear_regression(ts, vs, ts[0])[0] if len(vs) >= 2 else None


def _predict(ts: Sequence[int], vs: Sequence[float], t_ms: int, duration: float) -> float | None:
    if len(vs) < 2:
        return None
    slope, intercept = linear_regression(ts, vs, t_ms)  # intercept at the evaluation time, as Prometheus
    return intercept + slope * duration


def _avg(vs: Sequence[float]) -> float:
    """avg_over_time: incremental mean with a Kahan-compensated accumulator, as Prometheus 2.42 computes it."""
    mean = c = count = 0.0
    for v in vs:
        count += 1
        if math.isinf(mean):
            if math.isinf(v) and (mean > 0) == (v > 0):
                continue
            if not math.isinf(v) and v == v:
                continue
        mean, c = kahan_inc(v / count - mean / count, mean, c)
    return mean if math.isinf(mean) else mean + c


def _sum_kahan(vs: Sequence[float]) -> float:
    total = c = 0.0
    for v in vs:
        total, c = kahan_inc(v, total, c)
    return total if math.isinf(total) else total + c


def _fold(vs: Sequence[float], better: Callable[[float, float], bool]) -> float:
    best = vs[0]
    for v in vs:
        if better(v, best) or best != best:
            best = v
    return best


def _changes(vs: Sequence[float]) -> float:
    n, prev = 0, vs[0]
    for v in vs[1:]:
        if v != prev and not (v != v and prev != prev):
            n += 1
        prev = v
    return float(n)


def _resets(vs: Sequence[float]) -> float:
    n, prev = 0, vs[0]
    for v in vs[1:]:
        if v < prev:
            n += 1
        prev = v
    return float(n)


# ---------------------------------------------------------------------------------------------------------------
# Call nodes


class RangeCall(VectorNode):
    """A range function applied to each series of its range-vector argument."""

    def __init__(self, fn: RangeFn, matrix: MatrixSel, params: list[ScalarNode], keep_name: bool) -> None:
        self.fn, self.matrix, self.params, self.keep_name = fn, matrix, params, keep_name

    def children(self) -> list[Node]:
        return [self.matrix, *self.params]

    def eval(self, ctx: Context) -> Vector:
        params = tuple(p.eval(ctx) for p in self.params)
        start, end = self.matrix.window(ctx)
        window = Window(start, end, self.matrix.range_ms / 1000, ctx.t_ms, params)
        fn, keep_name = self.fn, self.keep_name
        out = []
        for labels, ts, vs in self.matrix.eval(ctx):
            v = fn(ts, vs, window)
            if v is not None:
                out.append(Sample(labels if keep_name else drop_name(labels), v))
        return check_unique(out, mixed=self.matrix.vs.name is None and not keep_name)


class Elementwise(VectorNode):
    """A function of each sample's value (abs, ln, ...)."""

    def __init__(self, fn: Callable[[float], float], arg: VectorNode) -> None:
        self.fn, self.arg = fn, arg

    def children(self) -> list[Node]:
        return [self.arg]

    def eval(self, ctx: Context) -> Vector:
        fn, vec = self.fn, self.arg.eval(ctx)
        return check_unique([Sample(drop_name(s.labels), fn(s.value)) for s in vec], several_names(vec))


class Clamp(VectorNode):
    """clamp (both bounds), clamp_min (lo) and clamp_max (hi)."""

    def __init__(self, arg: VectorNode, lo: ScalarNode | None, hi: ScalarNode | None) -> None:
        self.arg, self.lo, self.hi = arg, lo, hi

    def children(self) -> list[Node]:
        return [self.arg, *(b for b in (self.lo, self.hi) if b is not None)]

    def eval(self, ctx: Context) -> Vector:
        vec = self.arg.eval(ctx)
        lo = self.lo.eval(ctx) if self.lo is not None else None
        hi = self.hi.eval(ctx) if self.hi is not None else None
        if lo is not None and hi is not None and hi < lo:
            return []
        out = []
        for s in vec:
            v = s.value if hi is None else go_min(hi, s.value)
            out.append(Sample(drop_name(s.labels), v if lo is None else go_max(lo, v)))
        return check_unique(out, several_names(vec))


class Time(ScalarNode):
    def eval(self, ctx: Context) -> float:
        return ctx.t_ms / 1000


class ToVector(VectorNode):
    """vector(s)."""

    def __init__(self, arg: ScalarNode) -> None:
        self.arg = arg

    def children(self) -> list[Node]:
        return [self.arg]

    def eval(self, ctx: Context) -> Vector:
        return [Sample({}, self.arg.eval(ctx))]


class ToScalar(ScalarNode):
    """scalar(v): the value of a single-element vector, else NaN."""

    def __init__(self, arg: VectorNode) -> None:
        self.arg = arg

    def children(self) -> list[Node]:
        return [self.arg]

    def eval(self, ctx: Context) -> float:
        vec = self.arg.eval(ctx)
        return vec[0].value if len(vec) == 1 else NaN


class Absent(VectorNode):
    """absent(v) and absent_over_time(m)."""

    def __init__(self, arg: VectorNode | MatrixSel) -> None:
        self.arg = arg
        sel = arg.vs if isinstance(arg, MatrixSel) else arg
        self.labels = _absent_labels(sel) if isinstance(sel, VectorSel) else {}

    def children(self) -> list[Node]:
        return [self.arg]

    def eval(self, ctx: Context) -> Vector:
        return [] if self.arg.eval(ctx) else [Sample(self.labels, 1.0)]


def _absent_labels(sel: VectorSel) -> dict[str, str]:
    """The = matchers of a selector, minus any label matched otherwise or twice, and empty values."""
    out: dict[str, str] = {}
    drop = []
    for m in sel.raw_matchers:
        if m.name == NAME:
            continue
        if m.op == MatchOp.EQUAL and m.name not in out:
            out[m.name] = m.value
        else:
            drop.append(m.name)
    for name in drop:
        out.pop(name, None)
    return {k: v for k, v in out.items() if v != ""}


# ---------------------------------------------------------------------------------------------------------------
# The table


# A function builds the node evaluating a call from its compiled arguments, whose kinds promql-parser has checked.
Function = Callable[[list[Node]], Node]


def _range(fn: RangeFn, keep_name: bool = False) -> Function:
    return lambda args: RangeCall(fn, narrow(args[0], MatrixSel), [narrow(a, ScalarNode) for a in args[1:]],
                                  keep_name)


def _elementwise(fn: Callable[[float], float]) -> Function:
    return lambda args: Elementwise(fn, narrow(args[0], VectorNode))


def _clamp(lo: int | None, hi: int | None) -> Function:
    """A clamp function whose lower and upper bounds are the arguments at these positions."""
    def build(args: list[Node]) -> Node:
        lo_node = narrow(args[lo], ScalarNode) if lo is not None else None
        hi_node = narrow(args[hi], ScalarNode) if hi is not None else None
        return Clamp(narrow(args[0], VectorNode), lo_node, hi_node)
    return build


FUNCTIONS: dict[str, Function] = {
    "rate": _range(lambda ts, vs, w: _extrapolated_rate(ts, vs, w, is_counter=True, is_rate=True)),
    "increase": _range(lambda ts, vs, w: _extrapolated_rate(ts, vs, w, is_counter=True, is_rate=False)),
    "delta": _range(lambda ts, vs, w: _extrapolated_rate(ts, vs, w, is_counter=False, is_rate=False)),
    "irate": _range(lambda ts, vs, w: _instant_value(ts, vs, is_rate=True)),
    "idelta": _range(lambda ts, vs, w: _instant_value(ts, vs, is_rate=False)),
    "deriv": _range(lambda ts, vs, w: _deriv(ts, vs)),
    "predict_linear": _range(lambda ts, vs, w: _predict(ts, vs, w.t_ms, w.params[0])),
    "changes": _range(lambda ts, vs, w: _changes(vs)),
    "resets": _range(lambda ts, vs, w: _resets(vs)),
    "avg_over_time": _range(lambda ts, vs, w: _avg(vs)),
    "sum_over_time": _range(lambda ts, vs, w: _sum_kahan(vs)),
    "min_over_time": _range(lambda ts, vs, w: _fold(vs, operator.lt)),
    "max_over_time": _range(lambda ts, vs, w: _fold(vs, operator.gt)),
    "count_over_time": _range(lambda ts, vs, w: float(len(vs))),
    # last_over_time acts like offset, so Prometheus keeps the metric name
    "last_over_time": _range(lambda ts, vs, w: vs[-1], keep_name=True),
    "present_over_time": _range(lambda ts, vs, w: 1.0),
    "abs": _elementwise(abs),
    "ceil": _elementwise(round_like_go(math.ceil)),
    "floor": _elementwise(round_like_go(math.floor)),
    "sqrt": _elementwise(go_sqrt),
    "ln": _elementwise(go_log),
    "log2": _elementwise(go_log2),
    "log10": _elementwise(go_log10),
    "clamp": _clamp(lo=1, hi=2),
    "clamp_min": _clamp(lo=1, hi=None),
    "clamp_max": _clamp(lo=None, hi=1),
    "time": lambda args: Time(),
    "vector": lambda args: ToVector(narrow(args[0], ScalarNode)),
    "scalar": lambda args: ToScalar(narrow(args[0], VectorNode)),
    "absent": lambda args: Absent(narrow(args[0], VectorNode)),
    "absent_over_time": lambda args: Absent(narrow(args[0], MatrixSel)),
    "histogram_quantile": lambda args: HistogramQuantile(narrow(args[0], ScalarNode), narrow(args[1], VectorNode)),
}
