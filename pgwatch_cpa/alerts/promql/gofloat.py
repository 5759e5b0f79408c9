"""Float arithmetic as Prometheus's Go code does it: Python raises where Go returns Inf or NaN, and Go's math
package computes some functions with its own algorithms, ported here operation for operation."""

from __future__ import annotations

import math
from collections.abc import Callable

NaN = math.nan
Inf = math.inf


def go_div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0:
            return NaN
        return math.copysign(Inf, a) * math.copysign(1.0, b)


def go_mod(a: float, b: float) -> float:
    try:
        return math.fmod(a, b)
    except ValueError:
        return NaN


def go_max(a: float, b: float) -> float:
    return NaN if a != a or b != b else max(a, b)


def go_min(a: float, b: float) -> float:
    return NaN if a != a or b != b else min(a, b)


def go_sqrt(v: float) -> float:
    return NaN if v != v or v < 0 else math.sqrt(v)


def round_like_go(fn: Callable[[float], int]) -> Callable[[float], float]:
    """math.ceil/floor as Go's: Inf and NaN pass through instead of raising."""
    def apply(v: float) -> float:
        return v if not math.isfinite(v) else float(fn(v))
    return apply


def kahan_inc(inc: float, total: float, c: float) -> tuple[float, float]:
    """Prometheus's kahanSumInc (Neumaier variant)."""
    t = total + inc
    if abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


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


def go_pow(x: float, y: float) -> float:
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
        return go_div(1.0, math.sqrt(x)) if x >= 0 else (0.0 if x == -Inf else NaN)
    try:
        return math.pow(x, y)
    except OverflowError:
        return -Inf if x < 0 and _is_odd_int(y) else Inf
    except ValueError:
        if x == 0:
            return math.copysign(Inf, x) if _is_odd_int(y) else Inf
        return NaN
