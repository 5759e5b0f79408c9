"""Table statistics of each polled database: top-N tables + totals per database (pg_stat_user_tables and
pg_statio_user_tables). Bounded: a catalog of thousands of tables exports at most 2 x top_n tables."""

from __future__ import annotations

from typing import Any

from pgwatch_cpa.collectors.base import PgContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.postgres.common import PgCollector, exportable, fetch, num

_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("seq_scan_total", "Sequential scans.", "seq_scan"),
    ("seq_tup_read_total", "Rows read by sequential scans.", "seq_tup_read"),
    ("idx_scan_total", "Index scans (0 for a table without indexes).", "idx_scan"),
    ("idx_tup_fetch_total", "Rows fetched by index scans.", "idx_tup_fetch"),
    ("n_tup_ins_total", "Rows inserted.", "n_tup_ins"),
    ("n_tup_upd_total", "Rows updated.", "n_tup_upd"),
    ("n_tup_del_total", "Rows deleted.", "n_tup_del"),
    ("n_tup_hot_upd_total", "Rows HOT-updated.", "n_tup_hot_upd"),
    ("vacuum_count_total", "Manual vacuums.", "vacuum_count"),
    ("autovacuum_count_total", "Autovacuums.", "autovacuum_count"),
    ("analyze_count_total", "Manual analyzes.", "analyze_count"),
    ("autoanalyze_count_total", "Autoanalyzes.", "autoanalyze_count"),
    ("heap_blks_read_total", "Heap blocks read from disk.", "heap_blks_read"),
    ("heap_blks_hit_total", "Heap blocks found in shared buffers.", "heap_blks_hit"),
    ("idx_blks_read_total", "Index blocks read from disk.", "idx_blks_read"),
    ("idx_blks_hit_total", "Index blocks found in shared buffers.", "idx_blks_hit"),
)
_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("n_live_tup", "Estimated live rows.", "n_live_tup"),
    ("n_dead_tup", "Estimated dead rows.", "n_dead_tup"),
)
_AGES: tuple[tuple[str, str], ...] = (
    ("last_vacuum", "Seconds since the last manual vacuum (absent: never)."),
    ("last_autovacuum", "Seconds since the last autovacuum (absent: never)."),
    ("last_analyze", "Seconds since the last manual analyze (absent: never)."),
    ("last_autoanalyze", "Seconds since the last autoanalyze (absent: never)."),
)


def ratio(hit: Any, read: Any) -> float | None:
    h, r = num(hit) or 0.0, num(read) or 0.0
    return None if h + r == 0 else h / (h + r)


class TablesCollector(PgCollector):
    name = "tables"
    per_database = True
    default_interval = 120.0  # cumulative counters that drive 30-minute alerts; ~2,000 rows on a large catalog

    async def collect(self, ctx: PgContext, out: MetricSet) -> None:
        s = ctx.settings
        rows = await fetch(ctx, "pg_stat_user_tables",
                           {"top_n": s.top_n, "min_live_rows": s.seq_scan_min_live_rows})
        db = {"datname": ctx.database}
        for r in rows:
            if r["kind"] == "total":
                self._totals(out, r, db)
                continue
            if not exportable(ctx, "table name", r["schemaname"], r["relname"]):
                continue  # still in the database's totals
            labels = {**db, "schemaname": r["schemaname"], "relname": r["relname"]}
            if r["kind"] == "heavy":
                out.gauge("pg_stat_user_tables_seq_scan_heavy",
                          "Tables read more by sequential than index scans, of more than seq_scan_min_live_rows "
                          "live rows (value: seq_scan).", r["seq_scan"], labels)
                continue
            for suffix, doc, column in _COUNTERS:
                out.counter("pg_stat_user_tables_" + suffix, doc, num(r[column]) or 0.0, labels)
            for suffix, doc, column in _GAUGES:
                out.gauge("pg_stat_user_tables_" + suffix, doc, num(r[column]) or 0.0, labels)
            for column, doc in _AGES:
                age = num(r[column + "_age"])
                if age is not None:
                    out.gauge(f"pg_stat_user_tables_{column}_age_seconds", doc, age, labels)
            heap = ratio(r["heap_blks_hit"], r["heap_blks_read"])
            if heap is not None:
                out.gauge("pg_statio_user_tables_heap_cache_hit_ratio", "Heap blocks hit / (hit + read).", heap,
                          labels)
            idx = ratio(r["idx_blks_hit"], r["idx_blks_read"])
            if idx is not None:
                out.gauge("pg_statio_user_tables_idx_cache_hit_ratio", "Index blocks hit / (hit + read).", idx,
                          labels)

    @staticmethod
    def _totals(out: MetricSet, r: dict[str, Any], db: dict[str, str]) -> None:
        out.gauge("pg_tables", "User tables in the database.", r["tables"], db)
        out.gauge("pg_tables_seq_scan_heavy",
                  "Tables with seq_scan > coalesce(idx_scan, 0) and n_live_tup > seq_scan_min_live_rows.",
                  r["seq_scan_heavy"], db)
        for suffix, doc, column in _COUNTERS:
            out.counter("pg_tables_" + suffix, doc + " All user tables of the database.", num(r[column]) or 0.0,
                        db)
        for suffix, doc, column in _GAUGES:
            out.gauge("pg_tables_" + suffix, doc + " All user tables of the database.", num(r[column]) or 0.0, db)
        heap = ratio(r["heap_blks_hit"], r["heap_blks_read"])
        if heap is not None:
            out.gauge("pg_tables_heap_cache_hit_ratio", "Heap blocks hit / (hit + read), all user tables.", heap, db)
        idx = ratio(r["idx_blks_hit"], r["idx_blks_read"])
        if idx is not None:
            out.gauge("pg_tables_idx_cache_hit_ratio", "Index blocks hit / (hit + read), all user tables.", idx, db)
