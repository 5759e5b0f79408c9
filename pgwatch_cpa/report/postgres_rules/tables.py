"""Table findings: missing-index candidates (seq scans on large tables), dead tuples, stale statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pgwatch_cpa.report.model import Finding
from pgwatch_cpa.report.postgres_rules.common import (
    DEAD_MIN,
    DEAD_RATIO,
    MIN_TABLE_ROWS,
    MISSING_INDEX_MAX,
    STALE_MIN,
    STALE_RATIO,
    STATEMENTS_PER_TABLE,
    Row,
    Rules,
    age,
    human_seconds,
    number,
    plural,
    table_name,
)
from pgwatch_cpa.report.postgres_rules.statements import statement_tables


def reloptions(row: Row) -> dict[str, str]:
    return {k: v for k, _eq, v in (str(o).partition("=") for o in row.get("reloptions") or [])}


def _truthy(text: str) -> bool:
    return text.strip().lower() in {"on", "true", "yes", "1", "t", "y"}


def autovacuum_enabled(row: Row, settings: Mapping[str, float]) -> bool:
    return settings.get("autovacuum", 1.0) > 0 and _truthy(reloptions(row).get("autovacuum_enabled", "on"))


def autovacuum_threshold(row: Row, settings: Mapping[str, float]) -> float:
    """Dead rows at which autovacuum vacuums the table: threshold + scale factor x reltuples (table options
    override the server's)."""
    options = reloptions(row)
    base = float(options.get("autovacuum_vacuum_threshold", settings.get("autovacuum_vacuum_threshold", 50)))
    scale = float(options.get("autovacuum_vacuum_scale_factor",
                              settings.get("autovacuum_vacuum_scale_factor", 0.2)))
    return base + scale * max(number(row["reltuples"]), 0.0)


def table_findings(rules: Rules, database: str, tables: Sequence[Row], settings: Mapping[str, float],
                   texts: Sequence[Row] = ()) -> list[Finding]:
    """Missing-index candidates, dead rows, stale statistics of one database. ``texts``: the database's
    statements with their normalised text, most expensive first (only with query_text)."""
    findings = missing_index_candidates(rules, database, tables, texts)
    for r in tables:
        dead = dead_tuples(rules, database, r, settings)
        if dead is not None:
            findings.append(dead)  # VACUUM (ANALYZE) also refreshes the statistics
        elif (stale := stale_statistics(rules, database, r)) is not None:
            findings.append(stale)
    return findings


def missing_index_candidates(rules: Rules, database: str, tables: Sequence[Row],
                             texts: Sequence[Row] = ()) -> list[Finding]:
    """The guide's rule, corrected: seq_scan > coalesce(idx_scan, 0) (a table without an index counts) on tables
    of more than seq_scan_min_live_rows (the guide's 1,000) live rows, the most rows read sequentially first.
    Scans that read fewer rows than that in all (the build of an index on an empty table) do not make one."""
    least = rules.seq_scan_min_live_rows
    candidates = [r for r in tables
                  if number(r["seq_scan"]) > number(r["idx_scan"]) and number(r["n_live_tup"]) > least
                  and number(r["seq_tup_read"]) > least]
    candidates.sort(key=lambda r: (-number(r["seq_tup_read"]), table_name(r)))
    candidates = candidates[:MISSING_INDEX_MAX]
    statements = statement_tables(candidates, texts) if rules.query_text else {}
    return [missing_index(rules, database, r, statements.get(table_name(r), ())) for r in candidates]


def missing_index(rules: Rules, database: str, row: Row, statements: Sequence[Row]) -> Finding:
    name = table_name(row)
    seq_scan, read, live = number(row["seq_scan"]), number(row["seq_tup_read"]), number(row["n_live_tup"])
    sql = (f"-- find the columns the statements reading {name} filter or join on (EXPLAIN them), then:\n"
           f"-- CREATE INDEX CONCURRENTLY ON {name} (<those columns>);")
    if rules.query_text and statements:
        shown = "\n".join(f"--   queryid {s['queryid']} ({human_seconds(number(s['total_exec_time']) / 1000)} in all): "
                          f"{s['text']}"
                          for s in statements[:STATEMENTS_PER_TABLE])
        sql = f"-- statements mentioning {name}, most expensive first:\n{shown}\n{sql}"
    return rules.finding(
        "missing_index_candidate", "warning" if seq_scan >= rules.seq_scan_threshold else "info", database, name,
        f"{name} is read mostly by sequential scans ({plural(seq_scan, 'scan')}, {read:.0f} rows read)",
        {"seq_scan": seq_scan, "seq_tup_read": read, "idx_scan": row["idx_scan"], "n_live_tup": live,
         "rows_per_seq_scan": round(read / seq_scan, 1) if seq_scan else None,
         "table_bytes": row["table_bytes"]},
        read, sql,
        f"an index on the filtering columns turns scans of ~{live:.0f} rows into index lookups "
        f"({read:.0f} rows were read sequentially since the statistics reset)")


def dead_tuples(rules: Rules, database: str, row: Row, settings: Mapping[str, float]) -> Finding | None:
    dead, live = number(row["n_dead_tup"]), number(row["n_live_tup"])
    threshold = autovacuum_threshold(row, settings)
    if dead <= DEAD_MIN or not (dead > DEAD_RATIO * live or dead > threshold):
        return None
    name, enabled = table_name(row), autovacuum_enabled(row, settings)
    sql = f"VACUUM (ANALYZE) {name};"
    if not _truthy(reloptions(row).get("autovacuum_enabled", "on")):
        sql += (f"\n-- autovacuum is disabled on this table; give it back:\n"
                f"ALTER TABLE {name} RESET (autovacuum_enabled);")
    if settings.get("autovacuum", 1.0) <= 0:
        sql += ("\n-- autovacuum is off for the whole server:\nALTER SYSTEM SET autovacuum = on;\n"
                "SELECT pg_reload_conf();")
    return rules.finding(
        "dead_tuples", "warning", database, name, f"{name} holds {dead:.0f} dead rows ({live:.0f} live)",
        {"n_dead_tup": dead, "n_live_tup": live, "dead_ratio": round(dead / live, 3) if live else None,
         "autovacuum_threshold": round(threshold, 1), "autovacuum_enabled": enabled,
         "last_vacuum_age_seconds": age(row["last_vacuum_age"]),
         "last_autovacuum_age_seconds": age(row["last_autovacuum_age"]), "table_bytes": row["table_bytes"]},
        dead, sql, f"frees {dead:.0f} dead rows for reuse, so scans of {name} stop reading them")


def stale_statistics(rules: Rules, database: str, row: Row) -> Finding | None:
    live, changed = number(row["n_live_tup"]), number(row["n_mod_since_analyze"])
    never = row["last_analyze_age"] is None and row["last_autoanalyze_age"] is None
    if live < MIN_TABLE_ROWS or not (never or changed > max(STALE_MIN, STALE_RATIO * live)):
        return None
    name = table_name(row)
    ages = [a for a in (row["last_analyze_age"], row["last_autoanalyze_age"]) if a is not None]
    return rules.finding(
        "stale_statistics", "info", database, name,
        f"{name}: planner statistics " + ("never gathered" if never else f"predate {changed:.0f} changed rows"),
        {"n_mod_since_analyze": changed, "n_live_tup": live, "never_analyzed": never,
         "last_analyze_age_seconds": age(min(ages)) if ages else None},
        live if never else changed, f"ANALYZE {name};",
        f"the planner estimates {name} from its {live:.0f} current rows instead of "
        + ("no statistics" if never else f"statistics {changed:.0f} changes old"))
