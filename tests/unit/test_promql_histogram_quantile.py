"""histogram_quantile's arithmetic and grouping (tests/e2e/test_promql_differential.py proves it against promtool)."""

from __future__ import annotations

import math

import pytest

from pgwatch_cpa.alerts.history import History
from pgwatch_cpa.alerts.promql import EvalError, Evaluator, format_labels
from pgwatch_cpa.alerts.promql.quantile import bucket_quantile, parse_go_float

INF = math.inf


@pytest.mark.parametrize(("text", "value"), [
    ("0.25", 0.25), ("+Inf", INF), ("inf", INF), ("-Infinity", -INF), ("1_000", 1000.0), ("1.", 1.0),
    (".5", 0.5), ("0x1p-3", 0.125), ("1e5_0", 1e50),
])
def test_le_parses_as_go(text: str, value: float) -> None:
    assert parse_go_float(text) == value


@pytest.mark.parametrize("text", ["", " 1", "1 ", "1__0", "_1", "-nan", "1e400", "0x1", "junk", "1e"])
def test_le_that_go_refuses(text: str) -> None:
    assert parse_go_float(text) is None


def test_nan_le_parses_to_nan() -> None:
    value = parse_go_float("NaN")
    assert value is not None and math.isnan(value)


def test_interpolation_inside_a_bucket_and_from_zero() -> None:
    buckets = [(0.1, 10.0), (0.2, 30.0), (INF, 40.0)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.15)   # rank 20: half way through (0.1, 0.2]
    assert bucket_quantile(0.1, buckets) == pytest.approx(0.04)   # rank 4 of 10 in (0, 0.1]
    assert bucket_quantile(0.9, buckets) == 0.2                    # in the +Inf bucket: the highest finite bound


@pytest.mark.parametrize(("q", "expected"), [(-0.1, -INF), (1.1, INF)])
def test_quantile_out_of_range(q: float, expected: float) -> None:
    assert bucket_quantile(q, [(0.1, 1.0), (INF, 2.0)]) == expected


@pytest.mark.parametrize("buckets", [
    [(0.1, 1.0), (1.0, 2.0)],          # no +Inf bucket
    [(INF, 5.0)],                      # fewer than two buckets
    [(0.1, 0.0), (INF, 0.0)],          # no observation
])
def test_nan_cases(buckets: list[tuple[float, float]]) -> None:
    assert math.isnan(bucket_quantile(0.5, buckets))
    assert math.isnan(bucket_quantile(math.nan, [(0.1, 1.0), (INF, 2.0)]))


def test_non_monotonic_counts_are_raised_and_equal_bounds_merged() -> None:
    # 0.2's count (3) is below 0.1's (5): treated as 5, so rank 5 of 10 is found in the first bucket
    assert bucket_quantile(0.5, [(INF, 10.0), (0.2, 3.0), (0.1, 5.0)]) == pytest.approx(0.1)
    assert bucket_quantile(0.5, [(1.0, 2.0), (1.0, 2.0), (INF, 8.0)]) == pytest.approx(1.0)


def test_lowest_bound_not_above_zero_is_returned_as_is() -> None:
    assert bucket_quantile(0.1, [(-1.0, 2.0), (0.0, 3.0), (INF, 5.0)]) == -1.0


def _history(series: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> History:
    h = History(None, default_window=10**6)
    for (name, labels), value in series.items():
        h.append(name, dict(labels), 0.0, value)
    h.advance(0.0)
    return h


def test_groups_by_every_label_but_le_and_drops_the_name() -> None:
    h = _history({("x_bucket", (("job", "a"), ("le", "0.1"))): 1.0, ("x_bucket", (("job", "a"), ("le", "+Inf"))): 2.0,
                  ("x_bucket", (("job", "b"), ("le", "0.1"))): 0.0, ("x_bucket", (("job", "b"), ("le", "+Inf"))): 4.0,
                  ("x_bucket", (("job", "b"),)): 100.0})
    result = Evaluator(h).vector("histogram_quantile(0.5, x_bucket)", 0.0)
    assert {format_labels(s.labels): s.value for s in result} == {'{job="a"}': pytest.approx(0.1), '{job="b"}': 0.1}


def test_two_names_with_the_same_other_labels_are_an_error() -> None:
    h = _history({("x_bucket", (("le", "+Inf"),)): 1.0, ("y_bucket", (("le", "+Inf"),)): 1.0})
    with pytest.raises(EvalError, match="same labelset"):
        Evaluator(h).vector('histogram_quantile(0.5, {__name__=~"x_bucket|y_bucket"})', 0.0)
