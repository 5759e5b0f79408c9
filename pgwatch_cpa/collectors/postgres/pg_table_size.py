"""Table and index sizes of each polled database: exact for the top-N tables, estimated totals (slow interval)."""

from __future__ import annotations

from pgwatch_cpa.collectors.base import PgContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.postgres.common import PgCollector, exportable, fetch, num


class TableSizeCollector(PgCollector):
    """pg_table_size / pg_indexes_size stat every file and take an AccessShareLock: a table held in ACCESS
    EXCLUSIVE mode makes this collector fail after lock_timeout (and retry next cycle), never wait."""

    name = "table_size"
    per_database = True
    default_interval = 300.0

    async def collect(self, ctx: PgContext, out: MetricSet) -> None:
        db = {"datname": ctx.database}
        for r in await fetch(ctx, "pg_table_size", {"top_n": ctx.settings.top_n}):
            if r["kind"] == "total":
                out.gauge("pg_tables_size_bytes", "Disk space of all user tables (heap and TOAST), estimated from "
                          "pg_class.relpages as of the last VACUUM/ANALYZE.",
                          num(r["table_bytes"]) or 0.0, db)
                out.gauge("pg_tables_indexes_size_bytes", "Disk space of the indexes of all user tables, estimated "
                          "from pg_class.relpages as of the last VACUUM/ANALYZE.",
                          num(r["index_bytes"]) or 0.0, db)
                continue
            if not exportable(ctx, "table name", r["schemaname"], r["relname"]):
                continue  # still in the database's totals
            labels = {**db, "schemaname": r["schemaname"], "relname": r["relname"]}
            if r["table_bytes"] is not None:
                out.gauge("pg_table_size_bytes", "Disk space of the table (heap, TOAST, FSM, VM).",
                          num(r["table_bytes"]) or 0.0, labels)
            if r["index_bytes"] is not None:
                out.gauge("pg_table_indexes_size_bytes", "Disk space of the table's indexes.",
                          num(r["index_bytes"]) or 0.0, labels)
