"""A PromQL evaluator for the subset alert rules need, with the semantics of Prometheus 2.42.

The expression is parsed by promql-parser (a real parser) and compiled into a small tree of nodes; every construct
outside the subset is reported at compile time. Evaluation is an instant query at one timestamp over a History.

Supported (see also SUPPORTED below): instant and range selectors with = != =~ !~ matchers and offset; the range
functions rate irate increase delta idelta deriv predict_linear changes resets and *_over_time (avg min max sum
count last present); abs ceil floor sqrt ln log2 log10 clamp clamp_min clamp_max; time vector scalar absent
absent_over_time; sum avg min max count with by/without; + - * / % ^ == != > < >= <= with bool, on/ignoring,
group_left/group_right; and or unless; unary minus.

Semantics kept exactly: lookback delta (5 m, left-closed as in 2.x), closed range windows, stale markers,
extrapolatedRate, least squares with Kahan sums for deriv/predict_linear, Go float semantics for / % ^ and NaN,
the metric name dropped by functions/arithmetic/bool, one-to-one and many-to-one matching errors, the
"same labelset" error, series sorted by labels (so float sums add in Prometheus's order).
"""

from __future__ import annotations

import math
import operator
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass

import promql_parser as pp

from pgwatch_cpa.alerts.history import History, Series, is_stale
from pgwatch_cpa.errors import PgwatchError

NAME = "__name__"
DEFAULT_LOOKBACK = 300.0
NaN = math.nan
Inf = math.inf


class PromQLError(PgwatchError):
    """An expression that does not parse, or uses constructs outside the supported subset."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class EvalError(PgwatchError):
    """An evaluation that Prometheus would fail too (e.g. many-to-one matching without group_left)."""


@dataclass(slots=True)
class Sample:
    labels: dict[str, str]
    value: float


Vector = list[Sample]
Value = Vector | float


# ---------------------------------------------------------------------------------------------------------------
# Float arithmetic with Go's semantics (Python raises where Go returns Inf or NaN)


def _div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0:
            return NaN
        return math.copysign(Inf, a) * math.copysign(1.0, b)


def _mod(a: float, b: float) -> float:
    try:
        return math.fmod(a, b)
    except ValueError:
        return NaN


def _is_odd_int(y: float) -> bool:
    return math.isfinite(y) and y == int(y) and int(y) % 2 == 1


# Go's math.Log, Exp and Pow are its own (FreeBSD-derived) algorithms, not the C library's: ported operation for
# operation so ln/log2/log10/^ give Prometheus's last bit. (Go may use FMA in Exp on some CPUs; Pow with a
# fractional exponent can then differ in the last bit.)
_LOG2E = float("1.44269504088896340735992468100189214")  # Go's exact constant 1/Ln2, rounded once
_LOG10E = float("0.43429448190325182765112891891660508")
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_L = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01, 2.222219843214978396e-01,
      1.818357216161805012e-01, 1.531383769920937332e-01, 1.479819860511658591e-01)
_P = (1.66666666666666657415e-01, -2.77777777770155933842e-03, 6.61375632143793436117e-05,
      -1.65339022054652515390e-06, 4.13813679705723846039e-08)


def go_log(x: float) -> float:
    if x != x or x == Inf:
        return x
    if x < 0:
        return NaN
    if x == 0:
        return -Inf
    f1, ki = math.frexp(x)
    if f1 < math.sqrt(2) / 2:
        f1 *= 2
        ki -= 1
    f = f1 - 1
    k = float(ki)
    s = f / (2 + f)
    s2 = s * s
    s4 = s2 * s2
    t1 = s2 * (_L[0] + s4 * (_L[2] + s4 * (_L[4] + s4 * _L[6])))
    t2 = s4 * (_L[1] + s4 * (_L[3] + s4 * _L[5]))
    r = t1 + t2
    hfsq = 0.5 * f * f
    return k * _LN2_HI - ((hfsq - (s * (hfsq + r) + k * _LN2_LO)) - f)


def go_log2(x: float) -> float:
    frac, exp = math.frexp(x)
    if frac == 0.5:
        return float(exp - 1)
    return go_log(frac) * _LOG2E + float(exp)


def go_log10(x: float) -> float:
    return go_log(x) * _LOG10E


def go_exp(x: float) -> float:
    if x != x or x == Inf:
        return x
    if x == -Inf or x < -7.45133219101941108420e02:
        return 0.0
    if x > 7.09782712893383973096e02:
        return Inf
    if -1.0 / (1 << 28) < x < 1.0 / (1 << 28):
        return 1 + x
    log2e = 1.44269504088896338700e00
    k = int(log2e * x - 0.5) if x < 0 else int(log2e * x + 0.5)
    hi = x - float(k) * _LN2_HI
    lo = float(k) * _LN2_LO
    r = hi - lo
    t = r * r
    c = r - t * (_P[0] + t * (_P[1] + t * (_P[2] + t * (_P[3] + t * _P[4]))))
    y = 1 - ((lo - (r * c) / (2 - c)) - hi)
    return _ldexp(y, k)


def _ldexp(frac: float, exp: int) -> float:
    try:
        return math.ldexp(frac, exp)
    except OverflowError:
        return math.copysign(Inf, frac)


def _pow(x: float, y: float) -> float:
    """Go's math.Pow."""
    if y == 0 or x == 1:
        return 1.0
    if y == 1:
        return x
    if x != x or y != y:
        return NaN
    if x == 0 or math.isinf(y) or math.isinf(x) or abs(y) == 0.5:
        return _pow_special(x, y)
    yf, yi = math.modf(abs(y))
    if yf != 0 and x < 0:
        return NaN
    if yi >= 1 << 63:
        return _pow_special(x, y)
    a1, ae = 1.0, 0
    if yf != 0:
        if yf > 0.5:
            yf -= 1
            yi += 1
        a1 = go_exp(yf * go_log(x))
    x1, xe = math.frexp(x)
    i = int(yi)
    while i != 0:
        if xe < -(1 << 12) or xe > (1 << 12):
            ae += xe
            break
        if i & 1 == 1:
            a1 *= x1
            ae += xe
        x1 *= x1
        xe <<= 1
        if x1 < 0.5:
            x1 += x1
            xe -= 1
        i >>= 1
    if y < 0:
        a1 = 1 / a1
        ae = -ae
    return _ldexp(a1, ae)


def _pow_special(x: float, y: float) -> float:
    """Special cases of Go's Pow; the C library agrees on these (but raises where Go returns Inf/NaN)."""
    if y == 0.5:
        return math.sqrt(x) if x >= 0 else (Inf if x == -Inf else NaN)
    if y == -0.5:
        return _div(1.0, math.sqrt(x)) if x >= 0 else (0.0 if x == -Inf else NaN)
    try:
        return math.pow(x, y)
    except OverflowError:
        return -Inf if x < 0 and _is_odd_int(y) else Inf
    except ValueError:
        if x == 0:
            return math.copysign(Inf, x) if _is_odd_int(y) else Inf
        return NaN


def _go_max(a: float, b: float) -> float:
    return NaN if a != a or b != b else max(a, b)


def _go_min(a: float, b: float) -> float:
    return NaN if a != a or b != b else min(a, b)


ARITH: dict[str, Callable[[float, float], float]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": _div, "%": _mod, "^": _pow,
}
COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le,
}
SET_OPS = ("and", "or", "unless")


def kahan_inc(inc: float, total: float, c: float) -> tuple[float, float]:
    """Prometheus's kahanSumInc (Neumaier variant)."""
    t = total + inc
    if abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


# ---------------------------------------------------------------------------------------------------------------
# Evaluation context


class Context:
    """One instant query: the history, the evaluation time (ms) and per-evaluator selector caches."""

    __slots__ = ("cache", "history", "lookback_ms", "t_ms")

    def __init__(self, history: History, t_ms: int, lookback_ms: int, cache: dict) -> None:
        self.history = history
        self.t_ms = t_ms
        self.lookback_ms = lookback_ms
        self.cache = cache


class Node:
    kind = "vector"  # "scalar" | "vector" | "matrix"

    def eval(self, ctx: Context) -> object:
        raise NotImplementedError

    def selectors(self) -> list[VectorSel]:
        return [s for child in self.children() for s in child.selectors()]

    def children(self) -> list[Node]:
        return []


class Num(Node):
    kind = "scalar"

    def __init__(self, value: float) -> None:
        self.value = value

    def eval(self, ctx: Context) -> float:
        return self.value


# ---------------------------------------------------------------------------------------------------------------
# Selectors


def _compile_matcher(m: object, problems: list[str]) -> tuple[str, Callable[[str], bool]] | None:
    name, value, op = m.name, m.value, m.op  # type: ignore[attr-defined]
    if op == pp.MatchOp.Equal:
        return name, lambda v, x=value: v == x
    if op == pp.MatchOp.NotEqual:
        return name, lambda v, x=value: v != x
    try:
        rx = re.compile(value)  # Prometheus anchors the regex at both ends: fullmatch
    except re.error as exc:
        problems.append(f"regex {value!r} not supported by this evaluator: {exc}")
        return None
    if op == pp.MatchOp.Re:
        return name, lambda v, r=rx: r.fullmatch(v) is not None
    return name, lambda v, r=rx: r.fullmatch(v) is None


class VectorSel(Node):
    def __init__(self, vs: object, problems: list[str]) -> None:
        self.text = str(vs)
        self.name: str | None = vs.name  # type: ignore[attr-defined]
        self.offset_ms = _ms(vs.offset) if vs.offset is not None else 0  # type: ignore[attr-defined]
        if vs.at is not None:  # type: ignore[attr-defined]
            problems.append("the @ modifier is not supported")
        if vs.matchers.or_matchers:  # type: ignore[attr-defined]
            problems.append("'or' inside label matchers is not supported")
        self.raw_matchers = list(vs.matchers.matchers)  # type: ignore[attr-defined]
        compiled = [_compile_matcher(m, problems) for m in self.raw_matchers]
        self.matchers = [c for c in compiled if c is not None]

    def selectors(self) -> list[VectorSel]:
        return [self]

    def matching(self, ctx: Context) -> list[Series]:
        """Series selected, in label order; cached until the set of series changes."""
        hist = ctx.history
        if self.name is not None:
            version, series = hist.family(self.name)
        else:
            version, series = hist.version, sorted(
                (s for n in hist.names() for s in hist.family(n)[1]), key=lambda s: s.seq)
        cached = ctx.cache.get(id(self))
        if cached is not None and cached[0] == version:
            return cached[1]
        matchers = self.matchers
        hit = [s for s in series if all(f(s.labels.get(n, "")) for n, f in matchers)]
        ctx.cache[id(self)] = (version, hit)
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
    kind = "matrix"

    def __init__(self, ms: object, problems: list[str]) -> None:
        self.vs = VectorSel(ms.vector_selector, problems)  # type: ignore[attr-defined]
        self.range_ms = _ms(ms.range)  # type: ignore[attr-defined]

    def selectors(self) -> list[VectorSel]:
        return [self.vs]

    def window(self, ctx: Context) -> tuple[int, int]:
        end = ctx.t_ms - self.vs.offset_ms
        return end - self.range_ms, end

    def eval(self, ctx: Context) -> list[tuple[dict[str, str], list[int], list[float]]]:
        """(labels, timestamps, values) per series with at least one sample in the closed window."""
        start, end = self.window(ctx)
        out = []
        for s in self.vs.matching(ctx):
            ts = s.ts
            if not ts or ts[-1] < start:
                continue
            lo = bisect_left(ts, start)
            hi = len(ts) if ts[-1] <= end else bisect_right(ts, end)
            if lo >= hi:
                continue
            tss, vals = ts[lo:hi], s.vals[lo:hi]  # array slices: a memcpy, no per-sample objects
            if s.n_stale:
                keep = [i for i, v in enumerate(vals) if not is_stale(v)]
                tss, vals = [tss[i] for i in keep], [vals[i] for i in keep]
                if not tss:
                    continue
            out.append((s.labels, tss, vals))
        return out


def _ms(delta: object) -> int:
    return round(delta.total_seconds() * 1000)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------------------------
# Range-vector functions: each takes (timestamps, values, window start, window end, range seconds, args)


def _extrapolated_rate(ts: list[int], vs: list[float], start: int, end: int, range_s: float,
                       is_counter: bool, is_rate: bool) -> float | None:
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
    to_start = (ts[0] - start) / 1000
    to_end = (end - ts[-1]) / 1000
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
        factor /= range_s
    return result * factor


def _instant_value(ts: list[int], vs: list[float], is_rate: bool) -> float | None:
    if len(vs) < 2:
        return None
    last, prev = vs[-1], vs[-2]
    result = last if is_rate and last < prev else last - prev
    interval = ts[-1] - ts[-2]
    if interval == 0:
        return None
    return result / (interval / 1000) if is_rate else result


def linear_regression(ts: list[int], vs: list[float], intercept_ms: int) -> tuple[float, float]:
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
    slope = _div(cov, var)
    return slope, sy / n - slope * sx / n


def _avg(vs: list[float]) -> float:
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


def _sum_kahan(vs: list[float]) -> float:
    total = c = 0.0
    for v in vs:
        total, c = kahan_inc(v, total, c)
    return total if math.isinf(total) else total + c


def _fold(vs: list[float], better: Callable[[float, float], bool]) -> float:
    best = vs[0]
    for v in vs:
        if better(v, best) or best != best:
            best = v
    return best


def _changes(vs: list[float]) -> float:
    n, prev = 0, vs[0]
    for v in vs[1:]:
        if v != prev and not (v != v and prev != prev):
            n += 1
        prev = v
    return float(n)


def _resets(vs: list[float]) -> float:
    n, prev = 0, vs[0]
    for v in vs[1:]:
        if v < prev:
            n += 1
        prev = v
    return float(n)


RangeFn = Callable[[list[int], list[float], int, int, float, list[float], int], "float | None"]

RANGE_FUNCS: dict[str, RangeFn] = {
    "rate": lambda ts, vs, s, e, r, a, t: _extrapolated_rate(ts, vs, s, e, r, True, True),
    "increase": lambda ts, vs, s, e, r, a, t: _extrapolated_rate(ts, vs, s, e, r, True, False),
    "delta": lambda ts, vs, s, e, r, a, t: _extrapolated_rate(ts, vs, s, e, r, False, False),
    "irate": lambda ts, vs, s, e, r, a, t: _instant_value(ts, vs, True),
    "idelta": lambda ts, vs, s, e, r, a, t: _instant_value(ts, vs, False),
    "deriv": lambda ts, vs, s, e, r, a, t: linear_regression(ts, vs, ts[0])[0] if len(vs) >= 2 else None,
    "predict_linear": lambda ts, vs, s, e, r, a, t: _predict(ts, vs, t, a[0]),
    "changes": lambda ts, vs, s, e, r, a, t: _changes(vs),
    "resets": lambda ts, vs, s, e, r, a, t: _resets(vs),
    "avg_over_time": lambda ts, vs, s, e, r, a, t: _avg(vs),
    "sum_over_time": lambda ts, vs, s, e, r, a, t: _sum_kahan(vs),
    "min_over_time": lambda ts, vs, s, e, r, a, t: _fold(vs, operator.lt),
    "max_over_time": lambda ts, vs, s, e, r, a, t: _fold(vs, operator.gt),
    "count_over_time": lambda ts, vs, s, e, r, a, t: float(len(vs)),
    "last_over_time": lambda ts, vs, s, e, r, a, t: vs[-1],
    "present_over_time": lambda ts, vs, s, e, r, a, t: 1.0,
}


def _predict(ts: list[int], vs: list[float], t_ms: int, duration: float) -> float | None:
    if len(vs) < 2:
        return None
    slope, intercept = linear_regression(ts, vs, t_ms)  # intercept at the evaluation time, as Prometheus
    return intercept + slope * duration


def _round_like_go(fn: Callable[[float], float]) -> Callable[[float], float]:
    def apply(v: float) -> float:
        return v if not math.isfinite(v) else float(fn(v))
    return apply


def _sqrt(v: float) -> float:
    return NaN if v != v or v < 0 else math.sqrt(v)


SIMPLE_FUNCS: dict[str, Callable[[float], float]] = {
    "abs": abs, "ceil": _round_like_go(math.ceil), "floor": _round_like_go(math.floor), "sqrt": _sqrt,
    "ln": go_log, "log2": go_log2, "log10": go_log10,
}
CLAMP_FUNCS = ("clamp", "clamp_min", "clamp_max")
OTHER_FUNCS = ("time", "vector", "scalar", "absent", "absent_over_time")
SUPPORTED_FUNCTIONS = frozenset([*RANGE_FUNCS, *SIMPLE_FUNCS, *CLAMP_FUNCS, *OTHER_FUNCS])
SUPPORTED_AGGREGATIONS = frozenset(["sum", "avg", "min", "max", "count"])


# ---------------------------------------------------------------------------------------------------------------
# Function calls


# Label sets of series live as long as the series, so their name-less copy and their default matching signature
# are cached by identity (the cache holds the dict itself, so an id is never reused while cached).
_NAMELESS: dict[int, tuple[dict[str, str], dict[str, str]]] = {}
_SIGS: dict[int, tuple[dict[str, str], frozenset]] = {}
_CACHE_LIMIT = 500_000


def _drop_name(labels: dict[str, str]) -> dict[str, str]:
    if NAME not in labels:
        return labels
    hit = _NAMELESS.get(id(labels))
    if hit is not None and hit[0] is labels:
        return hit[1]
    out = dict(labels)
    del out[NAME]
    if len(_NAMELESS) > _CACHE_LIMIT:
        _NAMELESS.clear()
    _NAMELESS[id(labels)] = (labels, out)
    return out


def _default_sig(labels: dict[str, str]) -> frozenset:
    """Signature of default matching (all labels but the name)."""
    hit = _SIGS.get(id(labels))
    if hit is not None and hit[0] is labels:
        return hit[1]
    sig = frozenset((k, v) for k, v in labels.items() if k != NAME)
    if len(_SIGS) > _CACHE_LIMIT:
        _SIGS.clear()
    _SIGS[id(labels)] = (labels, sig)
    return sig


def _mixed(vec: Vector) -> bool:
    return len({s.labels.get(NAME) for s in vec}) > 1


def _check_unique(vec: Vector, mixed: bool = True) -> Vector:
    """Prometheus's "same labelset" error; only possible when dropping names from an input of several names."""
    if mixed and len(vec) > 1 and len({frozenset(s.labels.items()) for s in vec}) != len(vec):
        raise EvalError("vector cannot contain metrics with the same labelset")
    return vec


class Call(Node):
    def __init__(self, name: str, args: list[Node], raw_args: list[object]) -> None:
        self.name = name
        self.args = args
        self.raw_args = raw_args
        self.kind = "scalar" if name in ("time", "scalar") else "vector"

    def children(self) -> list[Node]:
        return self.args

    def eval(self, ctx: Context) -> Value:
        name = self.name
        if name in RANGE_FUNCS:
            return self._range(ctx)
        if name in SIMPLE_FUNCS:
            fn = SIMPLE_FUNCS[name]
            vec = self.args[0].eval(ctx)
            return _check_unique([Sample(_drop_name(s.labels), fn(s.value)) for s in vec], _mixed(vec))
        if name in CLAMP_FUNCS:
            return self._clamp(ctx)
        return getattr(self, "_" + name)(ctx)

    def _range(self, ctx: Context) -> Vector:
        matrix_node = self.args[0]
        assert isinstance(matrix_node, MatrixSel)
        fn = RANGE_FUNCS[self.name]
        extra = [a.eval(ctx) for a in self.args[1:]]
        start, end = matrix_node.window(ctx)
        range_s = matrix_node.range_ms / 1000
        keep_name = self.name == "last_over_time"  # it acts like offset, so Prometheus keeps the name
        out = []
        for labels, ts, vs in matrix_node.eval(ctx):
            v = fn(ts, vs, start, end, range_s, extra, ctx.t_ms)
            if v is not None:
                out.append(Sample(labels if keep_name else _drop_name(labels), v))
        return _check_unique(out, mixed=matrix_node.vs.name is None and not keep_name)

    def _clamp(self, ctx: Context) -> Vector:
        vec = self.args[0].eval(ctx)
        bounds = [a.eval(ctx) for a in self.args[1:]]
        if self.name == "clamp":
            lo, hi = bounds
            if hi < lo:
                return []
            out = [Sample(_drop_name(s.labels), _go_max(lo, _go_min(hi, s.value))) for s in vec]
        elif self.name == "clamp_min":
            out = [Sample(_drop_name(s.labels), _go_max(bounds[0], s.value)) for s in vec]
        else:
            out = [Sample(_drop_name(s.labels), _go_min(bounds[0], s.value)) for s in vec]
        return _check_unique(out, _mixed(vec))

    def _time(self, ctx: Context) -> float:
        return ctx.t_ms / 1000

    def _vector(self, ctx: Context) -> Vector:
        return [Sample({}, self.args[0].eval(ctx))]

    def _scalar(self, ctx: Context) -> float:
        vec = self.args[0].eval(ctx)
        return vec[0].value if len(vec) == 1 else NaN

    def _absent(self, ctx: Context) -> Vector:
        return [] if self.args[0].eval(ctx) else [Sample(self._absent_labels(), 1.0)]

    def _absent_over_time(self, ctx: Context) -> Vector:
        return self._absent(ctx)

    def _absent_labels(self) -> dict[str, str]:
        """Labels of absent(): the = matchers of a direct selector, minus any label matched otherwise or twice."""
        arg = self.args[0]
        sel = arg.vs if isinstance(arg, MatrixSel) else arg
        if not isinstance(sel, VectorSel):
            return {}
        out: dict[str, str] = {}
        drop = []
        for m in sel.raw_matchers:
            if m.name == NAME:
                continue
            if m.op == pp.MatchOp.Equal and m.name not in out:
                out[m.name] = m.value
            else:
                drop.append(m.name)
        for name in drop:
            out.pop(name, None)
        return {k: v for k, v in out.items() if v != ""}


# ---------------------------------------------------------------------------------------------------------------
# Aggregations


class Aggregate(Node):
    def __init__(self, op: str, expr: Node, without: bool, grouping: list[str]) -> None:
        self.op = op
        self.expr = expr
        self.without = without
        self.grouping = grouping

    def children(self) -> list[Node]:
        return [self.expr]

    def _group(self, labels: dict[str, str]) -> tuple[object, dict[str, str]]:
        if self.without:
            drop = set(self.grouping) | {NAME}
            out = {k: v for k, v in labels.items() if k not in drop}
            return frozenset(out.items()), out
        out = {k: labels[k] for k in self.grouping if labels.get(k, "") != ""}
        return tuple(out.get(k, "") for k in self.grouping), out

    def eval(self, ctx: Context) -> Vector:
        groups: dict[object, list] = {}  # key -> [labels, value, mean, count]; insertion order = Prometheus's
        op = self.op
        for s in self.expr.eval(ctx):
            key, labels = self._group(s.labels)
            g = groups.get(key)
            v = s.value
            if g is None:
                groups[key] = [labels, v, v, 1]
                continue
            g[3] += 1
            if op == "sum":
                g[1] += v
            elif op == "avg":
                g[2] = _avg_step(g[2], v, g[3])
            elif op == "max":
                if g[1] < v or g[1] != g[1]:
                    g[1] = v
            elif op == "min" and (g[1] > v or g[1] != g[1]):
                g[1] = v
        return [Sample(g[0], _agg_result(op, g)) for g in groups.values()]


def _avg_step(mean: float, v: float, count: int) -> float:
    if math.isinf(mean):
        if math.isinf(v) and (mean > 0) == (v > 0):
            return mean
        if not math.isinf(v) and v == v:
            return mean
    return mean + (v / count - mean / count)


def _agg_result(op: str, g: list) -> float:
    if op == "avg":
        return g[2]
    if op == "count":
        return float(g[3])
    return g[1]


# ---------------------------------------------------------------------------------------------------------------
# Binary operators


def _elem(op: str, lhs: float, rhs: float) -> tuple[float, bool]:
    fn = ARITH.get(op)
    if fn is not None:
        return fn(lhs, rhs), True
    return lhs, COMPARE[op](lhs, rhs)


def _card_name(card: object) -> str:
    cards = pp.VectorMatchCardinality  # its members are not hashable
    for member, name in ((cards.OneToOne, "one-to-one"), (cards.ManyToOne, "many-to-one"),
                         (cards.OneToMany, "one-to-many")):
        if card == member:
            return name
    return "many-to-many"


class Binary(Node):
    def __init__(self, op: str, lhs: Node, rhs: Node, modifier: object) -> None:
        self.op, self.lhs, self.rhs = op, lhs, rhs
        self.return_bool = bool(modifier is not None and modifier.return_bool)
        matching = modifier.matching if modifier is not None else None
        self.on = matching is not None and matching.type == pp.LabelModifierType.Include
        self.match_labels = list(matching.labels) if matching is not None else []
        card = modifier.card if modifier is not None else pp.VectorMatchCardinality.OneToOne
        self.card = _card_name(card)
        self.include = list(modifier.group_labels or []) if modifier is not None else []
        self.kind = "scalar" if lhs.kind == rhs.kind == "scalar" else "vector"

    def children(self) -> list[Node]:
        return [self.lhs, self.rhs]

    def eval(self, ctx: Context) -> Value:
        lv, rv = self.lhs.eval(ctx), self.rhs.eval(ctx)
        if self.kind == "scalar":
            value, keep = _elem(self.op, lv, rv)
            return float(keep) if self.op in COMPARE else value
        if self.op in SET_OPS:
            return getattr(self, "_" + self.op)(lv, rv)
        if isinstance(rv, float):
            return self._vector_scalar(lv, rv, swap=False)
        if isinstance(lv, float):
            return self._vector_scalar(rv, lv, swap=True)
        return self._vector_vector(lv, rv)

    def _vector_scalar(self, vec: Vector, scalar: float, swap: bool) -> Vector:
        op, comparison = self.op, self.op in COMPARE
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
                out.append(Sample(_drop_name(s.labels) if drop else s.labels, value))
        return _check_unique(out, _mixed(vec)) if drop else out

    def _sig(self) -> Callable[[dict[str, str]], object]:
        names = self.match_labels
        if self.on:
            return lambda lb: tuple(lb.get(n, "") for n in names)
        if not names:
            return _default_sig
        skip = {*names, NAME}
        return lambda lb: frozenset((k, v) for k, v in lb.items() if k not in skip)

    def _vector_vector(self, lhs: Vector, rhs: Vector) -> Vector:
        sig = self._sig()
        one_to_many = self.card == "one-to-many"
        if one_to_many:
            lhs, rhs = rhs, lhs
        right: dict[object, Sample] = {}
        for rs in rhs:
            key = sig(rs.labels)
            if key in right:
                side = "left" if one_to_many else "right"
                raise EvalError(f"found duplicate series for the match group on the {side} hand-side of the "
                                "operation; many-to-many matching not allowed: matching labels must be unique "
                                "on one side")
            right[key] = rs
        matched: dict[object, set | None] = {}
        out = []
        for ls in lhs:
            key = sig(ls.labels)
            rs = right.get(key)
            if rs is None:
                continue
            vl, vr = (rs.value, ls.value) if one_to_many else (ls.value, rs.value)
            value, keep = _elem(self.op, vl, vr)
            if self.return_bool:
                value = float(keep)
            elif not keep:
                continue
            labels = self._result_labels(ls.labels, rs.labels)
            self._check_match(matched, key, labels)
            out.append(Sample(labels, value))
        return out  # unique by construction: the signature checks above reject every collision

    def _check_match(self, matched: dict, key: object, labels: dict[str, str]) -> None:
        if self.card == "one-to-one":
            if key in matched:
                raise EvalError("multiple matches for labels: many-to-one matching must be explicit "
                                "(group_left/group_right)")
            matched[key] = None
            return
        seen = matched.setdefault(key, set())
        result_key = frozenset(labels.items())
        if result_key in seen:
            raise EvalError("multiple matches for matching labels; many-to-one matching must be explicit "
                            "(group_left/group_right)")
        seen.add(result_key)

    def _result_labels(self, many: dict[str, str], one: dict[str, str]) -> dict[str, str]:
        if self.card == "one-to-one" and not self.on and not self.match_labels:
            # the common case shares the (cached) label dicts instead of building new ones
            return _drop_name(many) if self.op in ARITH or self.return_bool else many
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

    def _and(self, lhs: Vector, rhs: Vector) -> Vector:
        if not lhs or not rhs:
            return []
        sig = self._sig()
        right = {sig(s.labels) for s in rhs}
        return [s for s in lhs if sig(s.labels) in right]

    def _or(self, lhs: Vector, rhs: Vector) -> Vector:
        if not lhs or not rhs:
            return lhs + rhs
        sig = self._sig()
        left = {sig(s.labels) for s in lhs}
        return lhs + [s for s in rhs if sig(s.labels) not in left]

    def _unless(self, lhs: Vector, rhs: Vector) -> Vector:
        if not lhs or not rhs:
            return lhs
        sig = self._sig()
        right = {sig(s.labels) for s in rhs}
        return [s for s in lhs if sig(s.labels) not in right]


class Negate(Node):
    def __init__(self, expr: Node) -> None:
        self.expr = expr
        self.kind = expr.kind

    def children(self) -> list[Node]:
        return [self.expr]

    def eval(self, ctx: Context) -> Value:
        v = self.expr.eval(ctx)
        if isinstance(v, float):
            return -v
        return _check_unique([Sample(_drop_name(s.labels), -s.value) for s in v], _mixed(v))


# ---------------------------------------------------------------------------------------------------------------
# Compilation from the promql-parser AST


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
        ast = pp.parse(text)
    except (ValueError, TypeError) as exc:
        raise PromQLError([f"syntax error: {exc}"]) from None
    problems: list[str] = []
    root = _compile(ast, problems)
    if problems:
        raise PromQLError(list(dict.fromkeys(problems)))
    return Expr(text, root)


def _compile(node: object, problems: list[str]) -> Node:
    handler = _COMPILERS.get(type(node).__name__)
    if handler is None:
        problems.append(f"unsupported expression {type(node).__name__}: {node}")
        return Num(NaN)
    return handler(node, problems)


def _compile_call(node: object, problems: list[str]) -> Node:
    name = node.func.name  # type: ignore[attr-defined]
    if name not in SUPPORTED_FUNCTIONS:
        problems.append(f'unsupported function "{name}"')
    args = [_compile(a, problems) for a in node.args]  # type: ignore[attr-defined]
    return Call(name, args, list(node.args))  # type: ignore[attr-defined]


def _compile_aggregate(node: object, problems: list[str]) -> Node:
    op = str(node.op)  # type: ignore[attr-defined]
    if op not in SUPPORTED_AGGREGATIONS:
        problems.append(f'unsupported aggregation "{op}"')
    mod = node.modifier  # type: ignore[attr-defined]
    without = mod is not None and mod.type == pp.AggModifierType.Without
    grouping = list(mod.labels) if mod is not None else []
    return Aggregate(op, _compile(node.expr, problems), without, grouping)  # type: ignore[attr-defined]


def _compile_binary(node: object, problems: list[str]) -> Node:
    op = str(node.op)  # type: ignore[attr-defined]
    if op not in ARITH and op not in COMPARE and op not in SET_OPS:
        problems.append(f'unsupported operator "{op}"')
    mod = node.modifier  # type: ignore[attr-defined]
    fill = getattr(mod, "fill_values", None)
    if fill is not None and (fill.lhs is not None or fill.rhs is not None):
        problems.append("fill() modifiers are not supported")
    lhs = _compile(node.lhs, problems)  # type: ignore[attr-defined]
    rhs = _compile(node.rhs, problems)  # type: ignore[attr-defined]
    return Binary(op, lhs, rhs, mod)


def _compile_subquery(node: object, problems: list[str]) -> Node:
    problems.append(f"subqueries are not supported: {node}")
    return Num(NaN)


def _compile_string(node: object, problems: list[str]) -> Node:
    problems.append(f"string literals are not supported: {node}")
    return Num(NaN)


_COMPILERS: dict[str, Callable[[object, list[str]], Node]] = {
    "NumberLiteral": lambda n, p: Num(float(n.val)),
    "ParenExpr": lambda n, p: _compile(n.expr, p),
    "UnaryExpr": lambda n, p: Negate(_compile(n.expr, p)),
    "VectorSelector": lambda n, p: VectorSel(n, p),
    "MatrixSelector": lambda n, p: MatrixSel(n, p),
    "Call": _compile_call,
    "AggregateExpr": _compile_aggregate,
    "BinaryExpr": _compile_binary,
    "SubqueryExpr": _compile_subquery,
    "StringLiteral": _compile_string,
}


# ---------------------------------------------------------------------------------------------------------------
# Public entry point


class Evaluator:
    """Instant queries over a History. Keeps a per-selector cache of matching series between evaluations."""

    def __init__(self, history: History, lookback: float = DEFAULT_LOOKBACK) -> None:
        self.history = history
        self.lookback_ms = round(lookback * 1000)
        self._cache: dict[int, tuple[int, list[Series]]] = {}

    def eval(self, expr: Expr | str, t: float) -> Value:
        """Value of ``expr`` at ``t`` (seconds): a list of Samples, or a float for scalar expressions."""
        compiled = compile_expr(expr) if isinstance(expr, str) else expr
        ctx = Context(self.history, round(t * 1000), self.lookback_ms, self._cache)
        return compiled.root.eval(ctx)

    def vector(self, expr: Expr | str, t: float) -> Vector:
        """As eval(), a scalar result turned into one sample without labels (what a rule sees)."""
        value = self.eval(expr, t)
        return [Sample({}, value)] if isinstance(value, float) else value


def format_labels(labels: dict[str, str]) -> str:
    """Prometheus's text form: name{a="b", c="d"}."""
    name = labels.get(NAME, "")
    inner = ", ".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()) if k != NAME)
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
