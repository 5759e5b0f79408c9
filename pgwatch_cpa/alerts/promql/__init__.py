"""The PromQL evaluator of the alert rules (see compiler for the supported subset)."""

from pgwatch_cpa.alerts.promql.compiler import (
    DEFAULT_LOOKBACK,
    Aggregate,
    Binary,
    EvalError,
    Evaluator,
    Expr,
    Node,
    PromQLError,
    Sample,
    VectorSel,
    compile_expr,
    format_labels,
)

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
