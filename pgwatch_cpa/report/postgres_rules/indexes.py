"""Index findings: invalid, duplicate, redundant (prefix), unused and rarely used indexes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from pgwatch_cpa.report.model import Finding, Scalar
from pgwatch_cpa.report.postgres_rules.common import (
    _REINDEX_LEFTOVER,
    LARGE_INDEX_BYTES,
    LOW_USAGE_MIN_WRITES,
    LOW_USAGE_SCANS,
    LOW_USAGE_WRITES_PER_SCAN,
    MIN_TABLE_ROWS,
    Row,
    Rules,
    age,
    human_bytes,
    index_name,
    number,
    table_name,
)


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
    return (not row["backs_constraint"], not (row["is_unique"] or row["is_primary"]), -number(row["idx_scan"]),
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
        if index_name(r) not in flagged and not _enforces(r) and number(r["table_rows"]) >= MIN_TABLE_ROWS:
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
    return {"idx_scan": int(number(row["idx_scan"])), "size_bytes": number(row["size_bytes"]),
            "table_rows": number(row["table_rows"]), "table_writes": number(row["table_writes"]),
            "definition": row.get("definition"), **extra}


def invalid_index(rules: Rules, database: str, row: Row) -> Finding:
    name, size = index_name(row), number(row["size_bytes"])
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
            name, size = index_name(r), number(r["size_bytes"])
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
        name, size = index_name(r), number(r["size_bytes"])
        findings.append(rules.finding(
            "redundant_index", "info", database, name, f"{name} is a prefix of {index_name(cover)}",
            _index_evidence(r, covered_by=index_name(cover), covered_by_definition=cover.get("definition")), size,
            _drop(r), f"reclaims {human_bytes(size)}; searches on its columns use {index_name(cover)} instead"))
    return findings


def unused_index(rules: Rules, database: str, row: Row, stats_reset_age: float | None) -> Finding | None:
    if number(row["idx_scan"]) > 0:
        return None
    name, size = index_name(row), number(row["size_bytes"])
    return rules.finding(
        "unused_index", "warning" if size >= LARGE_INDEX_BYTES else "info", database, name,
        f"Unused index {name} ({human_bytes(size)}, never scanned since the statistics reset)",
        _index_evidence(row, stats_reset_age_seconds=age(stats_reset_age)), size,
        _drop(row) + _recreate(row),
        f"reclaims {human_bytes(size)}; one index less to maintain on every write to {table_name(row)}")


def low_usage_index(rules: Rules, database: str, row: Row, stats_reset_age: float | None) -> Finding | None:
    scans, writes = number(row["idx_scan"]), number(row["table_writes"])
    if not (0 < scans < LOW_USAGE_SCANS and writes >= LOW_USAGE_MIN_WRITES
            and writes >= LOW_USAGE_WRITES_PER_SCAN * scans):
        return None
    name, size = index_name(row), number(row["size_bytes"])
    return rules.finding(
        "low_usage_index", "info", database, name,
        f"Rarely used index {name}: {scans:.0f} scans against {writes:.0f} writes to its table",
        _index_evidence(row, stats_reset_age_seconds=age(stats_reset_age)), size,
        f"-- check the statements that use it (EXPLAIN) first; if none needs it:\n{_drop(row)}{_recreate(row)}",
        f"reclaims {human_bytes(size)} and the upkeep of {writes:.0f} writes, at the price of {scans:.0f} scans")
