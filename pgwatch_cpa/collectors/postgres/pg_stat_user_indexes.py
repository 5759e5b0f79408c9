"""Index usage of each polled database: top-N indexes by scans, unused and invalid indexes, totals."""

from __future__ import annotations

from pgwatch_cpa.collectors.base import PgContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.postgres.common import PgCollector, exportable, fetch, num


class IndexesCollector(PgCollector):
    """Unused = never scanned, valid, and not enforcing a constraint (primary key, unique, exclusion)."""

    name = "indexes"
    per_database = True
    default_interval = 120.0  # a catalog may hold thousands of indexes; usage changes slowly

    async def collect(self, ctx: PgContext, out: MetricSet) -> None:
        db = {"datname": ctx.database}
        for r in await fetch(ctx, "pg_stat_user_indexes", {"top_n": ctx.settings.top_n}):
            if r["kind"] == "total":
                out.gauge("pg_indexes", "Indexes on user tables.", r["indexes"], db)
                out.gauge("pg_indexes_unused", "Valid, never-scanned indexes that enforce no constraint.",
                          r["unused"], db)
                out.gauge("pg_indexes_unused_bytes", "Disk space of the unused indexes (relpages x block size).",
                          num(r["size_bytes"]) or 0.0, db)
                out.gauge("pg_indexes_invalid", "Invalid indexes (indisvalid = false, e.g. a failed "
                          "CREATE INDEX CONCURRENTLY).", r["invalid"], db)
                out.counter("pg_indexes_idx_scan_total", "Index scans, all indexes of the database.",
                            num(r["idx_scan"]) or 0.0, db)
                continue
            if not exportable(ctx, "index name", r["schemaname"], r["relname"], r["indexrelname"]):
                continue  # still in the database's totals
            labels = {**db, "schemaname": r["schemaname"], "relname": r["relname"],
                      "indexrelname": r["indexrelname"]}
            size = num(r["size_bytes"]) or 0.0
            if r["kind"] == "unused":
                out.gauge("pg_stat_user_indexes_unused_bytes",
                          "An unused index (the top_n largest) and its size.", size, labels)
            elif r["kind"] == "invalid":
                out.gauge("pg_stat_user_indexes_invalid", "An invalid index (top_n at most).", 1.0, labels)
            else:
                out.counter("pg_stat_user_indexes_idx_scan_total", "Scans of the index.", num(r["idx_scan"]) or 0.0,
                            labels)
                out.counter("pg_stat_user_indexes_idx_tup_read_total", "Index entries returned by scans.",
                            num(r["idx_tup_read"]) or 0.0, labels)
                out.counter("pg_stat_user_indexes_idx_tup_fetch_total", "Live rows fetched by simple index scans.",
                            num(r["idx_tup_fetch"]) or 0.0, labels)
                out.gauge("pg_stat_user_indexes_size_bytes",
                          "Size of the index (relpages x block size, as of the last VACUUM/ANALYZE/CREATE INDEX).",
                          size, labels)
