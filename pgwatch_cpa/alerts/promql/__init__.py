"""A PromQL evaluator for the subset alert rules need, with the semantics of Prometheus 2.42.

The expression is parsed by promql-parser (a real parser), copied into typed syntax (syntax) and compiled into a
small tree of nodes (compiler, nodes, binary, functions); every construct outside the subset is reported at compile
time. Evaluation is an instant query at one timestamp over a History.

Supported (see functions.FUNCTIONS and nodes.AGGREGATIONS): instant and range selectors with = != =~ !~ matchers
and offset; the range functions rate irate increase delta idelta deriv predict_linear changes resets and
*_over_time (avg min max sum count last present); abs ceil floor sqrt ln log2 log10 clamp clamp_min clamp_max;
time vector scalar absent absent_over_time; histogram_quantile (classic buckets, quantile.py); sum avg min max
count with by/without; + - * / % ^ == != > < >= <= with bool, on/ignoring, group_left/group_right; and or unless;
unary minus.

Semantics kept exactly: lookback delta (5 m, left-closed as in 2.x), closed range windows, stale markers,
extrapolatedRate, least squares with Kahan sums for deriv/predict_linear, Go float semantics for / % ^ and NaN
(gofloat), the metric name dropped by functions/arithmetic/bool, one-to-one and many-to-one matching errors, the
"same labelset" error, series in creation order (so float sums add in Prometheus's order).
"""

from pgwatch_cpa.alerts.promql.binary import Binary
from pgwatch_cpa.alerts.promql.compiler import DEFAULT_LOOKBACK, Evaluator, Expr, compile_expr
from pgwatch_cpa.alerts.promql.nodes import Aggregate, Node, VectorSel
from pgwatch_cpa.alerts.promql.values import EvalError, PromQLError, Sample, format_labels

__all__ = [
    "DEFAULT_LOOKBACK",
    "Aggregate",
    "Binary",
    "EvalError",
    "Evaluator",
    "Expr",
    "Node",
    "PromQLError",
    "Sample",
    "VectorSel",
    "compile_expr",
    "format_labels",
]
