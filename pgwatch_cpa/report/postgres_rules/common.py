"""What every rule shares: the target's thresholds, identifier quoting and human units."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
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
    seq_scan_min_live_rows: int = MIN_TABLE_ROWS
    query_text: bool = False
    query_text_max_length: int = 200

    @classmethod
    def for_target(cls, target: Any) -> Rules:
        return cls(target.name, float(target.slow_query_threshold), int(target.seq_scan_threshold),
                   int(target.seq_scan_min_live_rows), bool(target.query_text), int(target.query_text_max_length))

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


def plural(n: float, word: str) -> str:
    return f"{n:.0f} {word}{'' if n == 1 else 's'}"


def number(value: Any) -> float:
    return 0.0 if value is None else float(value)


def age(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Worst first: severity, then score, then id (so equal reports list equal findings in the same order)."""
    rank = {"critical": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: (rank[f.severity], -f.score, f.id))

def index_name(row: Row) -> str:
    return qualified(row["schema"], row["index"])


def table_name(row: Row) -> str:
    return qualified(row["schema"], row["table"])
