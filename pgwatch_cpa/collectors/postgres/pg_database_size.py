"""Database sizes (pg_database_size stats every file: slow interval)."""

from __future__ import annotations

from pgwatch_cpa.collectors.base import PgContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.postgres.common import PgCollector, exportable, fetch


class DatabaseSizeCollector(PgCollector):
    name = "database_size"
    default_interval = 300.0

    async def collect(self, ctx: PgContext, out: MetricSet) -> None:
        for r in await fetch(ctx, "pg_database_size"):
            if r["size_bytes"] is None:  # dropped while we measured
                continue
            if exportable(ctx, "database name", r["datname"]):
                out.gauge("pg_database_size_bytes", "Disk space used by the database.", r["size_bytes"],
                          {"datname": r["datname"]})
