"""Statement findings: slow statements (mean over the threshold) and the top ones by total time."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

from pgwatch_cpa.report.model import Finding, Scalar
from pgwatch_cpa.report.postgres_rules.common import (
    _READS,
    CACHE_MISS_MIN_BLOCKS,
    TOP_MIN_SECONDS,
    TOP_STATEMENTS,
    Row,
    Rules,
    human_bytes,
    human_seconds,
    number,
    table_name,
)


def statement_findings(rules: Rules, statements: Sequence[Row], texts: Mapping[str, str],
                       total_exec_time: float) -> list[Finding]:
    """Statements whose mean execution time exceeds the threshold, and the top ones by total time.
    ``total_exec_time``: of every statement (ms), for each one's share."""
    grand_total = total_exec_time or sum(number(s["total_exec_time"]) for s in statements) or 1.0
    out = []
    for s in statements:
        calls = number(s["calls"])
        mean_s = number(s["total_exec_time"]) / calls / 1000 if calls else 0.0
        slow = mean_s > rules.slow_query_seconds
        top = int(s["rank"]) <= TOP_STATEMENTS and number(s["total_exec_time"]) >= TOP_MIN_SECONDS * 1000
        if slow or top:
            out.append(slow_statement(rules, s, mean_s, slow, texts.get(s["queryid"]), grand_total))
    return out


def _statement_evidence(s: Row, mean_s: float, share: float) -> dict[str, Scalar]:
    hit, read = number(s["shared_blks_hit"]), number(s["shared_blks_read"])
    return {"calls": number(s["calls"]), "mean_seconds": round(mean_s, 6),
            "total_seconds": round(number(s["total_exec_time"]) / 1000, 3),
            "max_seconds": round(number(s["max_exec_time"]) / 1000, 6), "rows": number(s["rows"]),
            "rank_by_total_time": int(s["rank"]), "share_of_total_time": round(share, 4),
            "shared_blks_hit": hit, "shared_blks_read": read,
            "cache_hit_ratio": round(hit / (hit + read), 4) if hit + read else None,
            "temp_blks_written": number(s["temp_blks_written"]),
            "blk_read_seconds": round(number(s["blk_read_time"]) / 1000, 3)}


def _drivers(s: Row) -> list[str]:
    hit, read, temp = number(s["shared_blks_hit"]), number(s["shared_blks_read"]), number(s["temp_blks_written"])
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
    total_s = number(s["total_exec_time"]) / 1000
    shown = text if rules.query_text and text else None
    sql = (f"-- in {database}, with real values for the $n parameters:\nEXPLAIN (ANALYZE, BUFFERS) {shown}"
           if shown else
           f"SELECT query FROM pg_stat_statements WHERE queryid = {queryid};  -- then EXPLAIN (ANALYZE, BUFFERS) it")
    drivers = _drivers(s)
    if drivers:
        sql += "\n-- " + "; ".join(drivers)
    evidence = _statement_evidence(s, mean_s, number(s["total_exec_time"]) / grand_total)
    if shown:
        evidence["query"] = shown
    title = (f"Statement {queryid} takes {human_seconds(mean_s)} on average (threshold "
             f"{human_seconds(rules.slow_query_seconds)})" if slow else
             f"Statement {queryid} is #{int(s['rank'])} by total execution time ({human_seconds(total_s)})")
    return rules.finding(
        "slow_statement", "warning" if slow else "info", database, queryid, title, evidence, total_s, sql,
        f"up to {human_seconds(total_s)} of execution time over {number(s['calls']):.0f} calls to win back; "
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
