"""WAL generation (pg_stat_wal, PG 14+; PG 18 moved write/sync counts to pg_stat_io)."""

from __future__ import annotations

from pgwatch_cpa.collectors.base import PgContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.postgres.common import PgCollector, fetch, ms, num

_COUNTERS = (
    ("pg_stat_wal_records_total", "WAL records generated.", "wal_records", num),
    ("pg_stat_wal_fpi_total", "WAL full-page images generated.", "wal_fpi", num),
    ("pg_stat_wal_bytes_total", "WAL bytes generated.", "wal_bytes", num),
    ("pg_stat_wal_buffers_full_total", "Times WAL was written because the WAL buffers were full.",
     "wal_buffers_full", num),
    ("pg_stat_wal_write_total", "WAL writes to disk.", "wal_write", num),
    ("pg_stat_wal_sync_total", "WAL syncs to disk.", "wal_sync", num),
    ("pg_stat_wal_write_time_seconds_total", "Time writing WAL (needs track_wal_io_timing).", "wal_write_time",
     ms),
    ("pg_stat_wal_sync_time_seconds_total", "Time syncing WAL (needs track_wal_io_timing).", "wal_sync_time", ms),
)


class WalCollector(PgCollector):
    name = "wal"

    async def collect(self, ctx: PgContext, out: MetricSet) -> None:
        row = (await fetch(ctx, "pg_stat_wal"))[0]
        for metric, doc, column, convert in _COUNTERS:
            value = convert(row[column])
            if value is not None:
                out.counter(metric, doc, value)
