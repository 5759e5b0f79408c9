"""The PostgreSQL side of the weekly performance review: one target's summary and findings.

``postgres_facts`` reads the statistics (catalogs and pg_stat views only, as the pg_monitor role, one
connection at a time); ``postgres_rules`` turns them into findings, each with the exact SQL or setting it
recommends. Nothing here runs a recommendation. A target that cannot be read raises (the caller reports it as
unreachable); a database that cannot be read is counted in the summary (``databases_failed``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgwatch_cpa.report.model import Finding, Scalar, TargetReport
from pgwatch_cpa.report.postgres_facts import Facts, read_facts
from pgwatch_cpa.report.postgres_rules import (
    Rules,
    cache_hit_finding,
    connection_finding,
    index_findings,
    indexes_to_describe,
    oldest_tables,
    ordered,
    setting_findings,
    statement_findings,
    table_findings,
    xid_findings,
)

if TYPE_CHECKING:
    from pgwatch_cpa.config import PostgresTarget


async def postgres_target_report(target: PostgresTarget, *, host_memory_bytes: int | None = None) -> TargetReport:
    """Read ``target`` and review it. ``host_memory_bytes``: the server's RAM, for the memory settings (None:
    no size-based setting advice)."""
    rules = Rules.for_target(target)
    facts = await read_facts(target, lambda database, indexes: indexes_to_describe(rules, database, indexes))
    findings = ordered(findings_of(rules, facts, host_memory_bytes))
    return TargetReport(target.name, "postgres", summary_of(facts), findings)


def findings_of(rules: Rules, facts: Facts, host_memory: int | None) -> list[Finding]:
    stats_age = {r["datname"]: r["stats_reset_age"] for r in facts.database_stats}
    out: list[Finding] = []
    for name, db in facts.per_database.items():
        texts = [t for t in facts.texts if t["datname"] == name]
        out += index_findings(rules, name, db.indexes, stats_age.get(name))
        out += table_findings(rules, name, db.tables, facts.settings, texts)
    out += xid_findings(rules, facts.databases, {n: oldest_tables(db.tables) for n, db in facts.per_database.items()})
    if facts.statements is not None and facts.statement_totals is not None:
        texts_by_id = {t["queryid"]: t["text"] for t in facts.texts}
        out += statement_findings(rules, facts.statements, texts_by_id,
                                  float(facts.statement_totals["total_exec_time"] or 0))
    hit, read = _blocks(facts)
    out += [f for f in (cache_hit_finding(rules, hit, read, facts.settings, host_memory),
                        connection_finding(rules, *_connections(facts))) if f is not None]
    out += setting_findings(rules, facts.settings, host_memory)
    return out


def _blocks(facts: Facts) -> tuple[float, float]:
    return (sum(float(r["blks_hit"] or 0) for r in facts.database_stats),
            sum(float(r["blks_read"] or 0) for r in facts.database_stats))


def _connections(facts: Facts) -> tuple[float, float, float]:
    """(client connections, slots available to ordinary roles, max_connections)."""
    c = facts.connections
    available = max(1.0, float(c["max_connections"] - c["superuser_reserved_connections"]
                               - c["reserved_connections"]))
    return float(c["connections"]), available, float(c["max_connections"])


def summary_of(facts: Facts) -> dict[str, Scalar]:
    hit, read = _blocks(facts)
    connections, available, max_connections = _connections(facts)
    totals: dict[str, Any] = facts.statement_totals or {}
    ages = [float(r["stats_reset_age"]) for r in facts.database_stats if r["stats_reset_age"] is not None]
    return {
        "server_version_num": facts.server_version_num,
        "total_queries": _opt(totals.get("calls")),
        "slow_query_count": _opt(totals.get("slow_statements")),
        "statements": _opt(totals.get("statements")),
        "statements_unavailable": facts.statements_unavailable,
        "cache_hit_ratio": round(hit / (hit + read), 6) if hit + read else None,
        "connections": connections,
        "max_connections": max_connections,
        "connection_utilisation": round(connections / available, 4),
        "size_bytes": sum(float(r["size_bytes"] or 0) for r in facts.database_stats),
        "databases": len(facts.polled),
        "databases_failed": len(facts.failed),
        "databases_failed_detail": "; ".join(f"{n}: {why}" for n, why in sorted(facts.failed.items())) or None,
        "tables": sum(len(db.tables) for db in facts.per_database.values()),
        "indexes": sum(len(db.indexes) for db in facts.per_database.values()),
        # the youngest statistics of the polled databases: "never scanned" means never within this window
        "stats_reset_age_seconds": round(min(ages), 1) if ages else None,
        "statements_reset_age_seconds": _opt(facts.statements_reset_age),
    }


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)
