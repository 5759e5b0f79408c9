"""In-process alerting: Prometheus rule files evaluated over a bounded history of our own snapshots.

rules.load_rules -> RuleSet; history.History.for_rules(ruleset) fed by ingest(); engine.AlertEngine.evaluate().
"""

from pgwatch_cpa.alerts.engine import Alert, AlertEngine, AlertStateError, EngineStats
from pgwatch_cpa.alerts.history import History
from pgwatch_cpa.alerts.promql import EvalError, Evaluator, PromQLError, Sample, compile_expr
from pgwatch_cpa.alerts.rules import AlertRule, RuleError, RuleGroup, RuleSet, load_rules, parse_rules
from pgwatch_cpa.alerts.templates import Template, TemplateError

__all__ = [
    "Alert", "AlertEngine", "AlertRule", "AlertStateError", "EngineStats", "EvalError", "Evaluator", "History",
    "PromQLError", "RuleError", "RuleGroup", "RuleSet", "Sample", "Template", "TemplateError", "compile_expr",
    "load_rules", "parse_rules",
]
