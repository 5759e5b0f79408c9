"""histogram_quantile over classic histograms, as Prometheus 2.x computes it (promql/quantile.go, bucketQuantile).

Samples are grouped by all their labels but ``le`` (the metric name included, as Prometheus's signature does; the
result drops both, so buckets of two names with the same other labels are an error, as there). A sample whose
``le`` is missing or does not parse as Go's strconv.ParseFloat would is skipped. Per group: q NaN -> NaN, q < 0 ->
-Inf, q > 1 -> +Inf; buckets sorted by bound; no +Inf bucket -> NaN; equal bounds merged; counts forced
monotonic (each one at least the one below it); fewer than 2 buckets or no observation -> NaN; a rank in the +Inf
bucket returns the highest finite bound; a lowest bound <= 0 is returned as is; otherwise linear interpolation
inside the bucket, from 0 for the lowest one.

The promtool we test against is 2.42: its bucketQuantile does not yet have the 1e-12 precision correction later
versions apply before the monotonicity fix, so neither do we.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from pgwatch_cpa.alerts.promql.gofloat import NaN
from pgwatch_cpa.alerts.promql.nodes import Context, Node, ScalarNode, VectorNode
from pgwatch_cpa.alerts.promql.values import NAME, Sample, Vector, check_unique

BUCKET_LABEL = "le"

_DEC = r"\d(?:_?\d)*"
_HEX = r"[0-9a-fA-F](?:_?[0-9a-fA-F])*"
_DECIMAL = re.compile(rf"[+-]?(?:{_DEC}(?:\.(?:{_DEC})?)?|\.{_DEC})(?:[eE][+-]?{_DEC})?")
_HEXADECIMAL = re.compile(rf"[+-]?0[xX](?:_?{_HEX}(?:\.(?:{_HEX})?)?|\.{_HEX})[pP][+-]?{_DEC}")
_INFINITY = re.compile(r"[+-]?(?:inf|infinity)", re.IGNORECASE)
_NAN = re.compile(r"nan", re.IGNORECASE)


def parse_go_float(text: str) -> float | None:
    """strconv.ParseFloat(text, 64), or None where it returns an error (bad syntax, or out of range: Go gives
    ±Inf with ErrRange there, and Prometheus skips the sample). Python's float() is laxer: it strips whitespace,
    takes a signed NaN and turns an overflow into inf."""
    if _INFINITY.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return NaN
    try:
        if _DECIMAL.fullmatch(text):
            value = float(text.replace("_", ""))
        elif _HEXADECIMAL.fullmatch(text):
            value = float.fromhex(text.replace("_", ""))
        else:
            return None
    except OverflowError:
        return None
    return None if math.isinf(value) else value


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """The q-quantile of (upper bound, cumulative count) pairs, step for step as Prometheus's bucketQuantile."""
    if math.isnan(q):
        return NaN
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets, key=lambda b: b[0])
    if ordered[-1][0] != math.inf:
        return NaN
    bounds, counts = _coalesce(ordered)
    _ensure_monotonic(counts)
    if len(bounds) < 2:
        return NaN
    observations = counts[-1]
    if observations == 0:
        return NaN
    rank = q * observations
    b = _search(len(counts) - 1, lambda i: counts[i] >= rank)
    if b == len(counts) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


def _coalesce(ordered: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Buckets of equal bound merged, their counts added (two spellings of one bound, "1" and "1.0")."""
    bounds, counts = [ordered[0][0]], [ordered[0][1]]
    for bound, count in ordered[1:]:
        if bound == bounds[-1]:
            counts[-1] += count
        else:
            bounds.append(bound)
            counts.append(count)
    return bounds, counts


def _ensure_monotonic(counts: list[float]) -> None:
    """Prometheus's envelope: a count below the largest one seen so far is raised to it (NaN compares false)."""
    top = counts[0]
    for i in range(1, len(counts)):
        if counts[i] > top:
            top = counts[i]
        elif counts[i] < top:
            counts[i] = top


def _search(n: int, pred: Callable[[int], bool]) -> int:
    """Go's sort.Search: the smallest i in [0, n) with pred(i), by the same bisection (so NaN counts land alike)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if not pred(mid):
            lo = mid + 1
        else:
            hi = mid
    return lo


class HistogramQuantile(VectorNode):
    """histogram_quantile(q, buckets)."""

    def __init__(self, q: ScalarNode, arg: VectorNode) -> None:
        self.q, self.arg = q, arg

    def children(self) -> list[Node]:
        return [self.q, self.arg]

    def eval(self, ctx: Context) -> Vector:
        q = self.q.eval(ctx)
        groups: dict[frozenset[tuple[str, str]], tuple[dict[str, str], list[tuple[float, float]]]] = {}
        for s in self.arg.eval(ctx):
            bound = parse_go_float(s.labels.get(BUCKET_LABEL, ""))
            if bound is None:
                continue
            key = frozenset((k, v) for k, v in s.labels.items() if k != BUCKET_LABEL)
            group = groups.get(key)
            if group is None:
                group = groups[key] = ({k: v for k, v in s.labels.items() if k not in (NAME, BUCKET_LABEL)}, [])
            group[1].append((bound, s.value))
        return check_unique([Sample(labels, bucket_quantile(q, buckets)) for labels, buckets in groups.values()])
