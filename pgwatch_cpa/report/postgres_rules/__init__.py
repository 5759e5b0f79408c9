"""The PostgreSQL report's rules: pure functions from statistics rows (dicts, as the report's SQL returns them)
to findings. No I/O here; ``postgres_facts`` reads the rows, ``postgres`` puts the report together.

Every finding names the exact SQL or setting to apply (identifiers quoted the way ``quote_ident`` does), the
numbers it rests on, and a score that measures the problem (bytes, rows, seconds...). Ids are
``kind:target:database:object`` with an object that survives a week (schema-qualified names, queryids,
setting names), so the diff can follow a finding. Nothing here runs what it recommends.
"""

from pgwatch_cpa.report.postgres_rules.common import (
    GIB,
    MIB,
    TOP_STATEMENTS,
    Rules,
    human_bytes,
    ordered,
    pg_memory,
    quote_ident,
)
from pgwatch_cpa.report.postgres_rules.indexes import index_findings, indexes_to_describe
from pgwatch_cpa.report.postgres_rules.instance import (
    cache_hit_finding,
    connection_finding,
    oldest_tables,
    setting_findings,
    xid_findings,
)
from pgwatch_cpa.report.postgres_rules.statements import statement_findings, statement_tables
from pgwatch_cpa.report.postgres_rules.tables import table_findings

__all__ = [
    "GIB", "MIB", "TOP_STATEMENTS", "Rules", "cache_hit_finding", "connection_finding", "human_bytes",
    "index_findings", "indexes_to_describe", "oldest_tables", "ordered", "pg_memory", "quote_ident",
    "setting_findings", "statement_findings", "statement_tables", "table_findings", "xid_findings",
]
