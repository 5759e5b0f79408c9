"""Unit tests of the PromQL subset (no servers). Exactness against Prometheus is checked by the e2e differential."""

from __future__ import annotations

import math

import promql_parser as pp
import pytest

from pgwatch_cpa.alerts.history import History
from pgwatch_cpa.alerts.promql import EvalError, Evaluator, PromQLError, compile_expr, format_labels
from pgwatch_cpa.alerts.promql.functions import FUNCTIONS
from pgwatch_cpa.alerts.promql.syntax import MatchOp, Selector, parse


def hist(series: dict[str, list[float | None]], step: float = 15.0) -> History:
    h = History(None, default_window=10**6)
    for text, values in series.items():
        name, _, rest = text.partition("{")
        labels = dict(p.split("=") for p in rest.rstrip("}").split(",") if p) if rest else {}
        for i, v in enumerate(values):
            if v is not None or i:
                h.append(name, labels, i * step, v)
    h.advance(len(next(iter(series.values()))) * step)
    return h


def ev(h: History, expr: str, t: float):
    value = Evaluator(h).eval(expr, t)
    if isinstance(value, float):
        return value
    return {format_labels(s.labels): s.value for s in value}


@pytest.fixture
def h() -> History:
    return hist({
        "req_total{job=api,code=200}": [0, 10, 20, 30, 40, 50, 60, 70, 80],
        "req_total{job=api,code=500}": [0, 1, 2, 3, 0, 1, 2, 3, 4],
        "temp{job=api,instance=a}": [1, 2, 3, 4, 5, 6, 7, 8, 9],
        "temp{job=db,instance=b}": [9, 8, 7, 6, 5, 4, 3, 2, 1],
        "limit{instance=a}": [4] * 9,
        "limit{instance=b}": [6] * 9,
        "role{instance=a,role=primary}": [1] * 9,
    })


def test_instant_selector_and_matchers(h: History) -> None:
    assert ev(h, 'req_total{code="500"}', 120) == {'req_total{code="500", job="api"}': 4}
    assert ev(h, 'req_total{code!="500"}', 120) == {'req_total{code="200", job="api"}': 80}
    assert set(ev(h, 'req_total{code=~"5.."}', 120)) == {'req_total{code="500", job="api"}'}
    assert ev(h, 'req_total{code=~"5"}', 120) == {}  # anchored
    assert len(ev(h, 'req_total{code!~"2.*"}', 120)) == 1
    assert ev(h, 'temp{instance="a"} offset 1m', 120) == {'temp{instance="a", job="api"}': 5}


def test_lookback_is_five_minutes_left_closed(h: History) -> None:
    assert ev(h, "limit", 120 + 300) != {}
    assert ev(h, "limit", 120 + 300.001) == {}


def test_stale_marker_hides_series() -> None:
    h = hist({"up{i=a}": [1, 1, None], "up{i=b}": [1, 1, 1]})
    assert ev(h, "up", 30) == {'up{i="b"}': 1}
    assert ev(h, "count_over_time(up[1m])", 30) == {'{i="a"}': 2, '{i="b"}': 3}


def test_rate_increase_extrapolation_and_reset(h: History) -> None:
    assert ev(h, 'rate(req_total{code="200"}[1m])', 120) == {'{code="200", job="api"}': pytest.approx(10 / 15)}
    # reset at index 4: increase over the whole range counts 3 + 4 = 7 raw, extrapolated to the window edges
    value = ev(h, 'increase(req_total{code="500"}[2m])', 120)['{code="500", job="api"}']
    assert value == pytest.approx(7 * 120 / 120)
    assert ev(h, "irate(req_total[1m])", 120)['{code="500", job="api"}'] == pytest.approx(1 / 15)
    assert ev(h, 'delta(temp{instance="a"}[2m])', 120) == {'{instance="a", job="api"}': pytest.approx(8)}


def test_rate_needs_two_samples() -> None:
    h = hist({"c_total{i=a}": [5]})
    assert ev(h, "rate(c_total[5m])", 0) == {}


def test_deriv_and_predict_linear(h: History) -> None:
    assert ev(h, 'deriv(temp{instance="a"}[2m])', 120) == {'{instance="a", job="api"}': pytest.approx(1 / 15)}
    got = ev(h, 'predict_linear(temp{instance="a"}[2m], 60)', 120)
    assert got == {'{instance="a", job="api"}': pytest.approx(9 + 4)}


def test_over_time_functions(h: History) -> None:
    base = 'temp{instance="b"}[1m]'
    assert ev(h, f"avg_over_time({base})", 120)['{instance="b", job="db"}'] == pytest.approx(3)
    assert ev(h, f"min_over_time({base})", 120)['{instance="b", job="db"}'] == 1
    assert ev(h, f"max_over_time({base})", 120)['{instance="b", job="db"}'] == 5
    assert ev(h, f"sum_over_time({base})", 120)['{instance="b", job="db"}'] == 15
    assert ev(h, f"count_over_time({base})", 120)['{instance="b", job="db"}'] == 5
    assert ev(h, f"last_over_time({base})", 120) == {'temp{instance="b", job="db"}': 1}  # keeps the name


def test_aggregations(h: History) -> None:
    assert ev(h, "sum(temp)", 0) == {"{}": 10}
    assert ev(h, "sum by (job) (temp)", 0) == {'{job="api"}': 1, '{job="db"}': 9}
    assert ev(h, "max without (instance) (temp)", 0) == {'{job="api"}': 1, '{job="db"}': 9}
    assert ev(h, "avg(temp)", 0) == {"{}": 5}
    assert ev(h, "min(temp)", 0) == {"{}": 1}
    assert ev(h, "count by (code) (req_total)", 0) == {'{code="200"}': 1, '{code="500"}': 1}


def test_arithmetic_comparison_and_bool(h: History) -> None:
    assert ev(h, "temp * 2", 0) == {'{instance="a", job="api"}': 2, '{instance="b", job="db"}': 18}
    assert ev(h, "temp > 5", 0) == {'temp{instance="b", job="db"}': 9}  # comparison keeps the name
    assert ev(h, "5 < temp", 0) == {'temp{instance="b", job="db"}': 9}
    assert ev(h, "temp > bool 5", 0) == {'{instance="a", job="api"}': 0, '{instance="b", job="db"}': 1}
    assert ev(h, "temp % 4", 0)['{instance="b", job="db"}'] == 1
    assert ev(h, "temp ^ 2", 0)['{instance="b", job="db"}'] == 81
    assert ev(h, "temp / 0", 0)['{instance="a", job="api"}'] == math.inf
    assert math.isnan(ev(h, "0 / 0", 0))
    assert ev(h, "1 < bool 2", 0) == 1.0
    assert ev(h, "-temp", 0)['{instance="a", job="api"}'] == -1


def test_vector_matching(h: History) -> None:
    # one-to-one matching drops the ignored labels from the result, as Prometheus does
    assert ev(h, "temp / ignoring(job) limit", 0) == {'{instance="a"}': 0.25, '{instance="b"}': 1.5}
    assert ev(h, "temp > on(instance) limit", 0) == {'{instance="b"}': 9}
    assert ev(h, "temp * on(instance) group_left(role) role", 0) == {'{instance="a", job="api", role="primary"}': 1}
    assert ev(h, "role * on(instance) group_right(role) temp", 0) == {'{instance="a", job="api", role="primary"}': 1}
    with pytest.raises(EvalError, match="many-to-many"):
        Evaluator(h).eval("limit * on() group_left temp", 0)
    with pytest.raises(EvalError, match="many-to-one matching must be explicit"):
        Evaluator(h).eval("temp + on() vector(1)", 0)


def test_set_operators(h: History) -> None:
    assert set(ev(h, "temp and on(instance) role", 0)) == {'temp{instance="a", job="api"}'}
    assert set(ev(h, "temp unless on(instance) role", 0)) == {'temp{instance="b", job="db"}'}
    assert len(ev(h, "temp or limit", 0)) == 4
    assert len(ev(h, "temp or on(instance) limit", 0)) == 2


def test_functions(h: History) -> None:
    assert ev(h, "clamp_max(temp, 3)", 0)['{instance="b", job="db"}'] == 3
    assert ev(h, "clamp_min(temp, 3)", 0)['{instance="a", job="api"}'] == 3
    assert ev(h, "clamp(temp, 2, 3)", 0) == {'{instance="a", job="api"}': 2, '{instance="b", job="db"}': 3}
    assert ev(h, "clamp(temp, 3, 2)", 0) == {}
    assert ev(h, "abs(-temp)", 0)['{instance="a", job="api"}'] == 1
    assert ev(h, "time()", 90) == 90
    assert ev(h, "vector(2)", 0) == {"{}": 2}
    assert ev(h, 'scalar(limit{instance="a"})', 0) == 4
    assert math.isnan(ev(h, "scalar(limit)", 0))
    assert ev(h, 'absent(nothing{job="x", i=~"y"})', 0) == {'{job="x"}': 1}
    assert ev(h, "absent(temp)", 0) == {}
    assert ev(h, "ln(limit)", 0)['{instance="a"}'] == pytest.approx(math.log(4))


def test_same_labelset_error() -> None:
    h = hist({"a{i=x}": [1], "b{i=x}": [2]})
    with pytest.raises(EvalError, match="same labelset"):
        Evaluator(h).eval('abs({__name__=~"a|b"})', 0)


@pytest.mark.parametrize("expr, construct", [
    ("quantile_over_time(0.9, x[5m])", 'unsupported function "quantile_over_time"'),
    ("topk(3, x)", 'unsupported aggregation "topk"'),
    ("rate(x[5m:1m])", "subqueries are not supported"),
    ("x @ 100", "@ modifier"),
    ("x atan2 y", 'unsupported operator "atan2"'),
    ("x +", "syntax error"),
])
def test_unsupported_constructs_are_reported(expr: str, construct: str) -> None:
    with pytest.raises(PromQLError, match=construct):
        compile_expr(expr)


def test_expr_windows_and_names() -> None:
    expr = compile_expr("rate(a[5m] offset 1m) / b + predict_linear(a[1h], 60)")
    assert expr.metric_names() == {"a", "b"}
    assert expr.windows() == {"a": 3600.0, "b": 0.0}
    assert compile_expr('{__name__=~"a.*"}').metric_names() is None


# One call per entry of the function table, so a function added without a test fails test_every_function_is_tested.
CALLS = {
    "rate": "rate(req_total[1m])", "increase": "increase(req_total[1m])", "delta": "delta(temp[1m])",
    "irate": "irate(req_total[1m])", "idelta": "idelta(temp[1m])", "deriv": "deriv(temp[1m])",
    "predict_linear": "predict_linear(temp[1m], 60)", "changes": "changes(temp[1m])", "resets": "resets(req_total[1m])",
    "avg_over_time": "avg_over_time(temp[1m])", "sum_over_time": "sum_over_time(temp[1m])",
    "min_over_time": "min_over_time(temp[1m])", "max_over_time": "max_over_time(temp[1m])",
    "count_over_time": "count_over_time(temp[1m])", "last_over_time": "last_over_time(temp[1m])",
    "present_over_time": "present_over_time(temp[1m])", "abs": "abs(temp)", "ceil": "ceil(temp)",
    "floor": "floor(temp)", "sqrt": "sqrt(temp)", "ln": "ln(temp)", "log2": "log2(temp)", "log10": "log10(temp)",
    "clamp": "clamp(temp, 2, 3)", "clamp_min": "clamp_min(temp, 3)", "clamp_max": "clamp_max(temp, 3)",
    "time": "time()", "vector": "vector(1)", "scalar": "scalar(temp)", "absent": "absent(temp)",
    "absent_over_time": "absent_over_time(temp[1m])", "histogram_quantile": "histogram_quantile(0.5, temp)",
}


def test_every_function_is_tested() -> None:
    assert set(FUNCTIONS) == set(CALLS)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_function_table_entry_evaluates(h: History, name: str) -> None:
    value = Evaluator(h).eval(CALLS[name], 120)
    assert isinstance(value, float) == (name in ("time", "scalar"))


def test_more_functions(h: History) -> None:
    assert ev(h, 'changes(temp{instance="a"}[2m])', 120) == {'{instance="a", job="api"}': 8}
    assert ev(h, 'resets(req_total{code="500"}[2m])', 120) == {'{code="500", job="api"}': 1}
    assert ev(h, 'idelta(temp{instance="b"}[1m])', 120) == {'{instance="b", job="db"}': -1}
    assert ev(h, "present_over_time(limit[1m])", 120) == {'{instance="a"}': 1, '{instance="b"}': 1}
    assert ev(h, "sqrt(limit)", 0)['{instance="a"}'] == 2
    assert ev(h, "log2(limit)", 0)['{instance="a"}'] == 2
    assert ev(h, 'ceil(temp{instance="a"} / 4)', 0) == {'{instance="a", job="api"}': 1}
    assert ev(h, 'floor(temp{instance="a"} / 4)', 0) == {'{instance="a", job="api"}': 0}
    assert ev(h, 'absent_over_time(nothing{job="x"}[1m])', 0) == {'{job="x"}': 1}


def test_go_float_semantics(h: History) -> None:
    assert math.isnan(ev(h, "temp % 0", 0)['{instance="a", job="api"}'])
    assert math.isnan(ev(h, "(-1) ^ 0.5", 0))
    assert ev(h, "-1 ^ 0.5", 0) == -1  # ^ binds tighter than unary minus
    assert ev(h, "-temp / 0", 0)['{instance="a", job="api"}'] == -math.inf
    clamped = ev(h, "clamp_max(temp, 0 / 0)", 0)  # Go's math.Min: NaN wins
    assert len(clamped) == 2 and all(math.isnan(v) for v in clamped.values())


def test_scalar_negation() -> None:
    h = hist({"x{i=a}": [1]})
    assert ev(h, "-time()", 30) == -30
    assert ev(h, "-(1 + 2)", 0) == -3


def test_bare_range_selector_is_not_an_instant_result(h: History) -> None:
    with pytest.raises(EvalError, match="not a vector or scalar"):
        Evaluator(h).eval("temp[1m]", 120)


def test_syntax_matchers_are_typed_and_numbered_as_the_parser() -> None:
    sel = parse('x{a="1", b!="2", c=~"3", d!~"4"} offset 1m')
    assert isinstance(sel, Selector)
    assert sel.offset_ms == 60_000
    assert [m.op for m in sel.matchers] == [MatchOp.EQUAL, MatchOp.NOT_EQUAL, MatchOp.RE, MatchOp.NOT_RE]
    theirs = [pp.MatchOp.Equal, pp.MatchOp.NotEqual, pp.MatchOp.Re, pp.MatchOp.NotRe]
    assert all(m.op == op for m, op in zip(sel.matchers, theirs, strict=True))


def test_selector_cache_never_serves_another_selector() -> None:
    # An expression compiled, evaluated and dropped frees its nodes, and CPython soon reuses their addresses (ids)
    # for the next expression's nodes: a cache keyed by id() then returned the dropped selector's series.
    h = hist({"x{a=1}": [1], "x{a=2}": [2], "x{a=3}": [3]})
    evaluator = Evaluator(h)
    for _ in range(50):
        for a in "123":
            assert [s.labels["a"] for s in evaluator.vector(f'x{{a="{a}"}}', 0)] == [a]
