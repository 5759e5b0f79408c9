"""The PostgreSQL report's rules: pure functions from statistics rows (dicts, as the report's SQL returns them)
to findings. No I/O here; ``postgres_facts`` reads the rows, ``postgres`` puts the report together.

Every finding names the exact SQL or setting to apply (identifiers quoted the way ``quote_ident`` does), the
numbers it rests on, and a score that measures the problem (bytes, rows, seconds...). Ids are
``kind:target:database:object`` with an object that survives a week (schema-qualified names, queryids,
setting names), so the diff can follow a finding. Nothing here runs what it recommends.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pgwatch_cpa.report.model import Finding, Scalar, Severity

Row = Mapping[str, Any]

MIN_TABLE_ROWS = 1_000  # the guide's "n_live_tup > 1000": smaller tables are read whole, indexes or not
LOW_USAGE_SCANS = 50  # an index scanned fewer times than this since the statistics reset...
LOW_USAGE_WRITES_PER_SCAN = 100  # ...while its table took this many writes per scan...
LOW_USAGE_MIN_WRITES = 10_000  # ...and at least this many writes in all
LARGE_INDEX_BYTES = 1024**3  # an unused index this large is a warning, not only information
DEAD_RATIO, DEAD_MIN = 0.2, 10_000  # dead rows above 20% of the live ones, and at least 10,000
STALE_RATIO, STALE_MIN = 0.2, 1_000  # rows changed since the last ANALYZE: 20% of the live ones, at least 1,000
XID_WARNING, XID_CRITICAL = 200_000_000, 1_000_000_000
CACHE_HIT_MIN, CACHE_MIN_BLOCKS = 0.95, 10_000  # a ratio over fewer block accesses than this means little
CONNECTIONS_WARNING, CONNECTIONS_CRITICAL = 0.8, 0.95
TOP_STATEMENTS = 5  # statements by total time reported even when their mean is below the threshold...
TOP_MIN_SECONDS = 1.0  # ...if they took at least this long in all
CACHE_MISS_MIN_BLOCKS = 1_000  # a statement's cache misses are a driver from this many blocks read
STATEMENTS_PER_TABLE = 3  # statements shown for a missing-index candidate (query_text only)
MISSING_INDEX_MAX = 20  # missing-index candidates per database, largest seq_tup_read first
OLDEST_TABLES = 3  # tables named in the VACUUM (FREEZE) advice
KIB, MIB, GIB = 1024, 1024**2, 1024**3

# quote_ident quotes every keyword that is not unreserved (pg_get_keywords() of PostgreSQL 18, catcode <> 'U').
_KEYWORD_LIST = """
all analyse analyze and any array as asc asymmetric authorization between bigint binary bit boolean both case cast
char character check coalesce collate collation column concurrently constraint create cross current_catalog
current_date current_role current_schema current_time current_timestamp current_user dec decimal default deferrable
desc distinct do else end except exists extract false fetch float for foreign freeze from full grant greatest group
grouping having ilike in initially inner inout int integer intersect interval into is isnull join json json_array
json_arrayagg json_exists json_object json_objectagg json_query json_scalar json_serialize json_table json_value
lateral leading least left like limit localtime localtimestamp merge_action national natural nchar none normalize
not notnull null nullif numeric offset on only or order out outer overlaps overlay placing position precision
primary real references returning right row select session_user setof similar smallint some substring symmetric
system_user table tablesample then time timestamp to trailing treat trim true union unique user using values
varchar variadic verbose when where window with xmlattributes xmlconcat xmlelement xmlexists xmlforest
xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable
"""
_KEYWORDS = frozenset(_KEYWORD_LIST.split())
_PLAIN_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
_READS = re.compile(r"^\s*(select|with|update|delete|merge)\b", re.IGNORECASE)  # statements that filter rows
_REINDEX_LEFTOVER = re.compile(r"_cc(new|old)\d*$")  # what a failed REINDEX CONCURRENTLY leaves behind


@dataclass(frozen=True)
class Rules:
    """The target's name and the thresholds of its configuration the rules use."""

    target: str
    slow_query_seconds: float = 1.0
    seq_scan_threshold: int = 1000
    query_text: bool = False
    query_text_max_length: int = 200

    @classmethod
    def for_target(cls, target: Any) -> Rules:
        return cls(target.name, float(target.slow_query_threshold), int(target.seq_scan_threshold),
                   bool(target.query_text), int(target.query_text_max_length))

    def finding(self, kind: str, severity: Severity, database: str | None, obj: str | None, title: str,
                evidence: Mapping[str, Scalar], score: float, recommendation: str, effect: str) -> Finding:
        return Finding(kind, severity, self.target, database, obj, title, dict(evidence), float(score),
                       recommendation, effect)


# ------------------------------------------------------------------ formatting


def quote_ident(name: str) -> str:
    """PostgreSQL's quote_ident: bare when the name is a plain lower-case identifier and not a keyword."""
    if _PLAIN_IDENT.match(name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def human_bytes(value: float) -> str:
    """``81920`` -> ``80 kB`` (PostgreSQL's units: 1 kB = 1024 bytes)."""
    for unit, size in (("GB", GIB), ("MB", MIB), ("kB", KIB)):
        if abs(value) >= size:
            return f"{value / size:.{0 if value % size == 0 else 1}f} {unit}"
    return f"{value:.0f} bytes"


def human_seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s" if value < 600 else f"{value / 60:.0f} min"


def pg_memory(value: float) -> str:
    """A byte count as a postgresql.conf memory value, rounded down to whole MB (whole GB when exact)."""
    if value >= GIB and value % GIB == 0:
        return f"{int(value // GIB)}GB"
    if value >= MIB:
        return f"{int(value // MIB)}MB"
    return f"{max(1, int(value // KIB))}kB"


def _plural(n: float, word: str) -> str:
    return f"{n:.0f} {word}{'' if n == 1 else 's'}"


def _num(value: Any) -> float:
    return 0.0 if value is None else float(value)


def _age(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Worst first: severity, then score, then id (so equal reports list equal findings in the same order)."""
    rank = {"critical": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: (rank[f.severity], -f.score, f.id))


# ------------------------------------------------------------------ indexes


def index_name(row: Row) -> str:
    return qualified(row["schema"], row["index"])


def table_name(row: Row) -> str:
    return qualified(row["schema"], row["table"])


def _columns(row: Row) -> tuple[tuple[str, ...], ...]:
    """One signature per index column: its definition, then for key columns the operator class, collation and
    options (sort order, nulls first); INCLUDE columns have only a definition."""
    per_key = zip(*(str(row[k] or "").split() for k in ("opclasses", "collations", "options")), strict=True)
    keys = [(column, *extra) for column, extra in zip(row["columns"], per_key, strict=False)]
    return (*keys, *((column,) for column in row["columns"][len(keys):]))


def _enforces(row: Row) -> bool:
    """Indexes that are not ours to drop: constraints, uniqueness, replica identity."""
    return bool(row["is_unique"] or row["is_primary"] or row["is_exclusion"] or row["backs_constraint"]
                or row["is_replica_identity"])


def _keeper_rank(row: Row) -> tuple[Any, ...]:
    """Among identical indexes the one to keep: a constraint's, a unique one, the most scanned, then by name."""
    return (not row["backs_constraint"], not (row["is_unique"] or row["is_primary"]), -_num(row["idx_scan"]),
            row["index"])


def index_findings(rules: Rules, database: str, indexes: Sequence[Row],
                   stats_reset_age: float | None = None) -> list[Finding]:
    """Invalid, duplicate, redundant (prefix), unused and rarely used indexes of one database."""
    findings = [invalid_index(rules, database, r) for r in indexes if not r["is_valid"] and not r["building"]]
    valid = [r for r in indexes if r["is_valid"] and not r["is_exclusion"]]
    columns = {id(r): _columns(r) for r in valid}  # once per index: the signatures both rules compare
    duplicates = duplicate_indexes(rules, database, valid, columns)
    redundant = redundant_indexes(rules, database, valid, {f.object for f in duplicates if f.object}, columns)
    findings += duplicates + redundant
    flagged = {f.object for f in findings}
    for r in valid:
        if index_name(r) not in flagged and not _enforces(r) and _num(r["table_rows"]) >= MIN_TABLE_ROWS:
            usage = unused_index(rules, database, r, stats_reset_age) or low_usage_index(rules, database, r,
                                                                                           stats_reset_age)
            if usage is not None:
                findings.append(usage)
    return findings


def indexes_to_describe(rules: Rules, database: str, indexes: Sequence[Row]) -> set[int]:
    """The oids of the indexes the findings name (reported ones and the ones they duplicate or extend): only
    their full definitions are read, as pg_get_indexdef is costly over thousands of indexes."""
    names = set()
    for f in index_findings(rules, database, indexes):
        names |= {f.object, f.evidence.get("duplicate_of"), f.evidence.get("covered_by")}
    return {int(r["index_oid"]) for r in indexes if index_name(r) in names}


def _drop(row: Row) -> str:
    return f"DROP INDEX CONCURRENTLY {index_name(row)};"


def _recreate(row: Row) -> str:
    return f"\n-- to recreate it: {row['definition']};" if row.get("definition") else ""


def _index_evidence(row: Row, **extra: Scalar) -> dict[str, Scalar]:
    return {"idx_scan": int(_num(row["idx_scan"])), "size_bytes": _num(row["size_bytes"]),
            "table_rows": _num(row["table_rows"]), "table_writes": _num(row["table_writes"]),
            "definition": row.get("definition"), **extra}


def invalid_index(rules: Rules, database: str, row: Row) -> Finding:
    name, size = index_name(row), _num(row["size_bytes"])
    if _REINDEX_LEFTOVER.search(row["index"]):
        sql = f"-- left behind by a failed REINDEX CONCURRENTLY: drop it (then retry the REINDEX if it was _ccnew)\n" \
              f"{_drop(row)}"
    elif row["is_unique"]:
        sql = ("-- a unique index: remove the duplicate keys first, or the rebuild fails again\n"
               f"REINDEX INDEX CONCURRENTLY {name};")
    else:
        sql = f"REINDEX INDEX CONCURRENTLY {name};"
    return rules.finding(
        "invalid_index", "warning", database, name, f"Invalid index {name} (a failed concurrent build)",
        _index_evidence(row, is_unique=bool(row["is_unique"])), size, sql,
        f"the index serves the searches it was built for again; until then every write to {table_name(row)} "
        "maintains it for nothing")


Signatures = Mapping[int, tuple[tuple[str, ...], ...]]  # id(row) -> _columns(row)


def duplicate_indexes(rules: Rules, database: str, valid: Sequence[Row],
                      columns: Signatures | None = None) -> list[Finding]:
    """Indexes identical in table, method, columns (with operator classes, collations, order) and predicate."""
    columns = columns or {id(r): _columns(r) for r in valid}
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in valid:
        groups[(r["table_oid"], r["method"], r["key_columns"], columns[id(r)], r["predicate"])].append(r)
    findings = []
    for members in groups.values():
        if len(members) < 2:
            continue
        keep, *others = sorted(members, key=_keeper_rank)
        for r in others:
            if r["backs_constraint"] or r["is_primary"] or r["is_replica_identity"]:
                continue  # a constraint's index: the constraint would have to go, not the index
            name, size = index_name(r), _num(r["size_bytes"])
            findings.append(rules.finding(
                "duplicate_index", "warning", database, name, f"{name} duplicates {index_name(keep)}",
                _index_evidence(r, duplicate_of=index_name(keep)), size, _drop(r),
                f"reclaims {human_bytes(size)}; one index less to maintain on every write to {table_name(r)}"))
    return findings


def redundant_indexes(rules: Rules, database: str, valid: Sequence[Row], skip: set[str],
                      columns: Signatures | None = None) -> list[Finding]:
    """B-tree indexes whose key columns are a strict prefix of another B-tree index's (same predicate): the
    longer index serves the same searches. Unique, constraint and INCLUDE-carrying indexes are kept; ``skip``
    holds the duplicates already proposed for dropping (neither reported again nor counted as the longer one)."""
    columns = columns or {id(r): _columns(r) for r in valid}
    btree = [r for r in valid if r["method"] == "btree" and index_name(r) not in skip]
    longer: dict[tuple[Any, ...], Row] = {}
    for r in btree:
        key = columns[id(r)][: r["key_columns"]]
        for n in range(1, len(key)):
            longer.setdefault((r["table_oid"], r["predicate"], key[:n]), r)
    findings = []
    for r in btree:
        if _enforces(r) or len(r["columns"]) != r["key_columns"]:
            continue
        cover = longer.get((r["table_oid"], r["predicate"], columns[id(r)]))
        if cover is None:
            continue
        name, size = index_name(r), _num(r["size_bytes"])
        findings.append(rules.finding(
            "redundant_index", "info", database, name, f"{name} is a prefix of {index_name(cover)}",
            _index_evidence(r, covered_by=index_name(cover), covered_by_definition=cover.get("definition")), size,
            _drop(r), f"reclaims {human_bytes(size)}; searches on its columns use {index_name(cover)} instead"))
    return findings


def unused_index(rules: Rules, database: str, row: Row, stats_reset_age: float | None) -> Finding | None:
    if _num(row["idx_scan"]) > 0:
        return None
    name, size = index_name(row), _num(row["size_bytes"])
    return rules.finding(
        "unused_index", "warning" if size >= LARGE_INDEX_BYTES else "info", database, name,
        f"Unused index {name} ({human_bytes(size)}, never scanned since the statistics reset)",
        _index_evidence(row, stats_reset_age_seconds=_age(stats_reset_age)), size,
        _drop(row) + _recreate(row),
        f"reclaims {human_bytes(size)}; one index less to maintain on every write to {table_name(row)}")


def low_usage_index(rules: Rules, database: str, row: Row, stats_reset_age: float | None) -> Finding | None:
    scans, writes = _num(row["idx_scan"]), _num(row["table_writes"])
    if not (0 < scans < LOW_USAGE_SCANS and writes >= LOW_USAGE_MIN_WRITES
            and writes >= LOW_USAGE_WRITES_PER_SCAN * scans):
        return None
    name, size = index_name(row), _num(row["size_bytes"])
    return rules.finding(
        "low_usage_index", "info", database, name,
        f"Rarely used index {name}: {scans:.0f} scans against {writes:.0f} writes to its table",
        _index_evidence(row, stats_reset_age_seconds=_age(stats_reset_age)), size,
        f"-- check the statements that use it (EXPLAIN) first; if none needs it:\n{_drop(row)}{_recreate(row)}",
        f"reclaims {human_bytes(size)} and the upkeep of {writes:.0f} writes, at the price of {scans:.0f} scans")


# ------------------------------------------------------------------ tables


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
    return base + scale * max(_num(row["reltuples"]), 0.0)


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
    of more than 1,000 live rows, the most rows read sequentially first. Scans that read fewer rows than that
    in all (the build of an index on an empty table) do not make a candidate."""
    candidates = [r for r in tables
                  if _num(r["seq_scan"]) > _num(r["idx_scan"]) and _num(r["n_live_tup"]) > MIN_TABLE_ROWS
                  and _num(r["seq_tup_read"]) > MIN_TABLE_ROWS]
    candidates.sort(key=lambda r: (-_num(r["seq_tup_read"]), table_name(r)))
    candidates = candidates[:MISSING_INDEX_MAX]
    statements = statement_tables(candidates, texts) if rules.query_text else {}
    return [missing_index(rules, database, r, statements.get(table_name(r), ())) for r in candidates]


def missing_index(rules: Rules, database: str, row: Row, statements: Sequence[Row]) -> Finding:
    name = table_name(row)
    seq_scan, read, live = _num(row["seq_scan"]), _num(row["seq_tup_read"]), _num(row["n_live_tup"])
    sql = (f"-- find the columns the statements reading {name} filter or join on (EXPLAIN them), then:\n"
           f"-- CREATE INDEX CONCURRENTLY ON {name} (<those columns>);")
    if rules.query_text and statements:
        shown = "\n".join(f"--   queryid {s['queryid']} ({human_seconds(_num(s['total_exec_time']) / 1000)} in all): "
                          f"{s['text']}"
                          for s in statements[:STATEMENTS_PER_TABLE])
        sql = f"-- statements mentioning {name}, most expensive first:\n{shown}\n{sql}"
    return rules.finding(
        "missing_index_candidate", "warning" if seq_scan >= rules.seq_scan_threshold else "info", database, name,
        f"{name} is read mostly by sequential scans ({_plural(seq_scan, 'scan')}, {read:.0f} rows read)",
        {"seq_scan": seq_scan, "seq_tup_read": read, "idx_scan": row["idx_scan"], "n_live_tup": live,
         "rows_per_seq_scan": round(read / seq_scan, 1) if seq_scan else None,
         "table_bytes": row["table_bytes"]},
        read, sql,
        f"an index on the filtering columns turns scans of ~{live:.0f} rows into index lookups "
        f"({read:.0f} rows were read sequentially since the statistics reset)")


def dead_tuples(rules: Rules, database: str, row: Row, settings: Mapping[str, float]) -> Finding | None:
    dead, live = _num(row["n_dead_tup"]), _num(row["n_live_tup"])
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
         "last_vacuum_age_seconds": _age(row["last_vacuum_age"]),
         "last_autovacuum_age_seconds": _age(row["last_autovacuum_age"]), "table_bytes": row["table_bytes"]},
        dead, sql, f"frees {dead:.0f} dead rows for reuse, so scans of {name} stop reading them")


def stale_statistics(rules: Rules, database: str, row: Row) -> Finding | None:
    live, changed = _num(row["n_live_tup"]), _num(row["n_mod_since_analyze"])
    never = row["last_analyze_age"] is None and row["last_autoanalyze_age"] is None
    if live < MIN_TABLE_ROWS or not (never or changed > max(STALE_MIN, STALE_RATIO * live)):
        return None
    name = table_name(row)
    ages = [a for a in (row["last_analyze_age"], row["last_autoanalyze_age"]) if a is not None]
    return rules.finding(
        "stale_statistics", "info", database, name,
        f"{name}: planner statistics " + ("never gathered" if never else f"predate {changed:.0f} changed rows"),
        {"n_mod_since_analyze": changed, "n_live_tup": live, "never_analyzed": never,
         "last_analyze_age_seconds": _age(min(ages)) if ages else None},
        live if never else changed, f"ANALYZE {name};",
        f"the planner estimates {name} from its {live:.0f} current rows instead of "
        + ("no statistics" if never else f"statistics {changed:.0f} changes old"))


# ------------------------------------------------------------------ statements


def statement_findings(rules: Rules, statements: Sequence[Row], texts: Mapping[str, str],
                       total_exec_time: float) -> list[Finding]:
    """Statements whose mean execution time exceeds the threshold, and the top ones by total time.
    ``total_exec_time``: of every statement (ms), for each one's share."""
    grand_total = total_exec_time or sum(_num(s["total_exec_time"]) for s in statements) or 1.0
    out = []
    for s in statements:
        calls = _num(s["calls"])
        mean_s = _num(s["total_exec_time"]) / calls / 1000 if calls else 0.0
        slow = mean_s > rules.slow_query_seconds
        top = int(s["rank"]) <= TOP_STATEMENTS and _num(s["total_exec_time"]) >= TOP_MIN_SECONDS * 1000
        if slow or top:
            out.append(slow_statement(rules, s, mean_s, slow, texts.get(s["queryid"]), grand_total))
    return out


def _statement_evidence(s: Row, mean_s: float, share: float) -> dict[str, Scalar]:
    hit, read = _num(s["shared_blks_hit"]), _num(s["shared_blks_read"])
    return {"calls": _num(s["calls"]), "mean_seconds": round(mean_s, 6),
            "total_seconds": round(_num(s["total_exec_time"]) / 1000, 3),
            "max_seconds": round(_num(s["max_exec_time"]) / 1000, 6), "rows": _num(s["rows"]),
            "rank_by_total_time": int(s["rank"]), "share_of_total_time": round(share, 4),
            "shared_blks_hit": hit, "shared_blks_read": read,
            "cache_hit_ratio": round(hit / (hit + read), 4) if hit + read else None,
            "temp_blks_written": _num(s["temp_blks_written"]),
            "blk_read_seconds": round(_num(s["blk_read_time"]) / 1000, 3)}


def _drivers(s: Row) -> list[str]:
    hit, read, temp = _num(s["shared_blks_hit"]), _num(s["shared_blks_read"]), _num(s["temp_blks_written"])
    drivers = []
    if temp > 0:
        drivers.append(f"it spills {human_bytes(temp * 8192)} to temporary files (a sort or hash larger than "
                       "work_mem: an index matching the ORDER BY, or SET work_mem for this statement)")
    if read >= CACHE_MISS_MIN_BLOCKS and read >= 0.1 * (hit + read):
        drivers.append(f"{read:.0f} of its {hit + read:.0f} block accesses missed the buffer cache "
                       "(reads a lot of data: a more selective index)")
    return drivers


def slow_statement(rules: Rules, s: Row, mean_s: float, slow: bool, text: str | None,
                   grand_total: float) -> Finding:
    queryid, database = str(s["queryid"]), s["datname"] or None
    total_s = _num(s["total_exec_time"]) / 1000
    shown = text if rules.query_text and text else None
    sql = (f"-- in {database}, with real values for the $n parameters:\nEXPLAIN (ANALYZE, BUFFERS) {shown}"
           if shown else
           f"SELECT query FROM pg_stat_statements WHERE queryid = {queryid};  -- then EXPLAIN (ANALYZE, BUFFERS) it")
    drivers = _drivers(s)
    if drivers:
        sql += "\n-- " + "; ".join(drivers)
    evidence = _statement_evidence(s, mean_s, _num(s["total_exec_time"]) / grand_total)
    if shown:
        evidence["query"] = shown
    title = (f"Statement {queryid} takes {human_seconds(mean_s)} on average (threshold "
             f"{human_seconds(rules.slow_query_seconds)})" if slow else
             f"Statement {queryid} is #{int(s['rank'])} by total execution time ({human_seconds(total_s)})")
    return rules.finding(
        "slow_statement", "warning" if slow else "info", database, queryid, title, evidence, total_s, sql,
        f"up to {human_seconds(total_s)} of execution time over {_num(s['calls']):.0f} calls to win back; "
        + (f"each call takes {human_seconds(mean_s)} now" if slow else "among the largest shares of the server's work"))


def statement_tables(tables: Sequence[Row], texts: Sequence[Row]) -> dict[str, list[Row]]:
    """For each table (by qualified name), the statements that filter rows (SELECT, WITH, UPDATE, DELETE, MERGE)
    and whose text mentions its name, in the order of ``texts`` (most expensive first): one pass over the texts
    with one pattern of every name."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for t in tables:
        by_name[str(t["table"]).lower()].append(table_name(t))
    if not by_name:
        return {}
    pattern = re.compile(r'(?<![\w$])"?(' + "|".join(re.escape(n) for n in by_name) + r')"?(?![\w$])', re.IGNORECASE)
    found: dict[str, list[Row]] = defaultdict(list)
    for t in texts:
        text = t.get("search_text") or t["text"]
        if not _READS.match(text):
            continue  # DDL, INSERT, COPY, ANALYZE: they mention the table but filter nothing
        for name in {m.group(1).lower() for m in pattern.finditer(text)}:
            for table in by_name[name]:
                found[table].append(t)
    return found


# ------------------------------------------------------------------ instance


def xid_findings(rules: Rules, databases: Sequence[Row], oldest: Mapping[str, Sequence[Row]]) -> list[Finding]:
    """Transaction-id age of every connectable database: > 200M warning, > 1B critical (wraparound at 2^31)."""
    out = []
    for d in databases:
        age = _num(d["frozen_xid_age"])
        if age <= XID_WARNING:
            continue
        name = d["datname"]
        tables = [t for t in oldest.get(name, ()) if _num(t["frozen_xid_age"]) > XID_WARNING / 2]
        sql = "\n".join(f"VACUUM (FREEZE, VERBOSE) {table_name(t)};  -- age {_num(t['frozen_xid_age']):.0f}"
                        for t in tables) or "VACUUM (FREEZE, VERBOSE);"
        sql = (f"-- connected to {name}, as a superuser or the tables' owners, oldest tables first:\n{sql}\n"
               "-- and find what holds freezing back: long transactions, abandoned replication slots, prepared "
               "transactions")
        out.append(rules.finding(
            "xid_age", "critical" if age > XID_CRITICAL else "warning", name, None,
            f"Database {name} is {age / 1e6:.0f} million transactions from its last freeze",
            {"frozen_xid_age": age, "wraparound_at": 2**31, "share_to_wraparound": round(age / 2**31, 4)},
            age, sql, f"brings the age of {name} from {age / 1e6:.0f} million back towards zero, far from the "
                      f"forced shutdown at {2**31 / 1e6:.0f} million"))
    return out


def oldest_tables(tables: Sequence[Row], n: int = OLDEST_TABLES) -> list[Row]:
    return sorted(tables, key=lambda t: (-_num(t["frozen_xid_age"]), table_name(t)))[:n]


def cache_hit_finding(rules: Rules, hit: float, read: float, settings: Mapping[str, float],
                      host_memory: int | None) -> Finding | None:
    if hit + read < CACHE_MIN_BLOCKS or hit / (hit + read) >= CACHE_HIT_MIN:
        return None
    ratio, shared = hit / (hit + read), settings.get("shared_buffers")
    advice = "-- first the statements with the most shared_blks_read (slow_statement findings) and the " \
             "missing-index candidates; if the working set is larger than the cache:"
    if host_memory:
        advice += (f"\nALTER SYSTEM SET shared_buffers = '{pg_memory(host_memory / 4)}';  -- needs a restart"
                   f"\nALTER SYSTEM SET effective_cache_size = '{pg_memory(host_memory * 3 / 4)}';"
                   "\nSELECT pg_reload_conf();")
    else:
        advice += ("\n-- raise shared_buffers towards 25% of the host's memory (restart) and effective_cache_size "
                   "to 75%: ALTER SYSTEM SET shared_buffers = '<25% of RAM>';")
    return rules.finding(
        "cache_hit_ratio", "critical" if ratio < 0.8 else "warning", None, None,
        f"Buffer cache hit ratio {ratio:.1%} (below {CACHE_HIT_MIN:.0%})",
        {"cache_hit_ratio": round(ratio, 4), "blks_hit": hit, "blks_read": read, "shared_buffers_bytes": shared,
         "effective_cache_size_bytes": settings.get("effective_cache_size"), "host_memory_bytes": host_memory},
        read, advice, f"{read:.0f} block reads from outside shared_buffers ({1 - ratio:.1%} of accesses) served "
                      "from memory instead")


def connection_finding(rules: Rules, connections: float, available: float, max_connections: float
                       ) -> Finding | None:
    """``connections`` counts every client backend (the report's own too); ``available`` is max_connections
    minus the reserved slots, as the activity collector computes utilisation."""
    utilisation = connections / max(available, 1.0)
    if utilisation <= CONNECTIONS_WARNING:
        return None
    pool = max(1, int(available * 0.5))
    return rules.finding(
        "connection_utilisation", "critical" if utilisation > CONNECTIONS_CRITICAL else "warning", None, None,
        f"{utilisation:.0%} of the connection slots are in use ({connections:.0f} of {available:.0f})",
        {"connections": connections, "available": available, "max_connections": max_connections,
         "connection_utilisation": round(utilisation, 4)},
        utilisation,
        "-- pool the application's connections (PgBouncer, pool_mode = transaction) and keep the sum of the "
        f"pools well under {available:.0f}, e.g.:\n-- pgbouncer.ini: default_pool_size = {pool}\n"
        "-- raising max_connections instead needs a restart and memory for every slot",
        f"utilisation from {utilisation:.0%} down to about {pool / available:.0%}: room for bursts and for "
        "maintenance sessions")


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Advice:
    name: str
    value: float  # base units: bytes for memory
    low: float  # a finding when the current value < value x low ...
    high: float  # ... or > value x high
    restart: bool
    why: str
    memory: bool = True


def setting_advice(host_memory: int | None, max_connections: float) -> list[Advice]:
    """The guide's postgresql.conf, scaled: its numbers assume a 1 GB host (shared_buffers 256MB = 25%)."""
    advice = [
        Advice("checkpoint_completion_target", 0.9, 1.0, 1.12, False, "spreads checkpoint writes", memory=False),
        Advice("random_page_cost", 1.1, 0.5, 2.0, False,
               "on SSD storage (the guide's assumption; keep 4 on spinning disks) random reads cost "
               "about as much as sequential ones, so the planner may choose index scans", memory=False),
    ]
    if not host_memory:
        return advice
    shared = _mb(host_memory / 4)
    work_mem = max(4 * MIB, min(host_memory / 256, host_memory / 4 / max(max_connections, 1)))
    return [
        *advice,
        Advice("shared_buffers", shared, 0.5, 1.6, True, "25% of the host's memory"),
        Advice("effective_cache_size", _mb(host_memory * 3 / 4), 0.5, 1.34, False,
               "75% of the host's memory (shared_buffers plus the OS cache)"),
        Advice("maintenance_work_mem", _mb(min(max(host_memory / 16, 64 * MIB), 2 * GIB)), 0.5, 4.0, False,
               "1/16 of the host's memory (64MB for the guide's 1 GB), at most 2GB"),
        Advice("work_mem", _mb(work_mem), 0.5, 4.0, False,
               "4MB per GB of memory, bounded by 25% of memory over max_connections"),
        Advice("wal_buffers", _mb(min(16 * MIB, shared / 32)), 1.0, float("inf"), True,
               "1/32 of shared_buffers, at most 16MB"),
    ]


def _mb(value: float) -> float:
    """Rounded down to whole MB, as the ALTER SYSTEM value is written (at least 1MB)."""
    return float(max(MIB, value // MIB * MIB))


def setting_findings(rules: Rules, settings: Mapping[str, float], host_memory: int | None) -> list[Finding]:
    out = []
    for a in setting_advice(host_memory, settings.get("max_connections", 100.0)):
        current = settings.get(a.name)
        if current is None or current < 0 or a.value * a.low <= current <= a.value * a.high:
            continue
        out.append(_setting_finding(rules, a, current, host_memory))
    return out


def _setting_finding(rules: Rules, a: Advice, current: float, host_memory: int | None) -> Finding:
    def show(v: float) -> str:
        return human_bytes(v) if a.memory else f"{v:g}"

    value = f"'{pg_memory(a.value)}'" if a.memory else f"{a.value:g}"
    apply = "-- needs a restart" if a.restart else "SELECT pg_reload_conf();"
    return rules.finding(
        "setting", "info", None, a.name, f"{a.name} = {show(current)}; the guide's value here is {show(a.value)}",
        {"current": current, "recommended": a.value, "unit": "bytes" if a.memory else None,
         "host_memory_bytes": host_memory if a.memory else None, "needs_restart": a.restart},
        abs(a.value - current), f"ALTER SYSTEM SET {a.name} = {value};\n{apply}",
        f"{a.name} from {show(current)} to {show(a.value)}: {a.why}")
