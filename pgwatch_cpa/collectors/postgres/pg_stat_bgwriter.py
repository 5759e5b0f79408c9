"""Checkpointer and background writer (PG 17 split pg_stat_checkpointer out of pg_stat_bgwriter)."""

from __future__ import annotations

from pgwatch_cpa.collectors.base import PgContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.postgres.common import PgCollector, fetch, ms, num

_COUNTERS = (
    ("pg_stat_checkpointer_num_timed_total", "Checkpoints started by checkpoint_timeout.", "num_timed", num),
    ("pg_stat_checkpointer_num_requested_total", "Checkpoints requested (WAL volume, CHECKPOINT).",
     "num_requested", num),
    ("pg_stat_checkpointer_write_time_seconds_total", "Time writing checkpoint files.", "write_time", ms),
    ("pg_stat_checkpointer_sync_time_seconds_total", "Time syncing checkpoint files.", "sync_time", ms),
    ("pg_stat_checkpointer_buffers_written_total", "Buffers written by checkpoints.", "buffers_written", num),
    ("pg_stat_bgwriter_buffers_clean_total", "Buffers written by the background writer.", "buffers_clean", num),
    ("pg_stat_bgwriter_maxwritten_clean_total", "Background writer stops for writing too many buffers.",
     "maxwritten_clean", num),
    ("pg_stat_bgwriter_buffers_alloc_total", "Buffers allocated.", "buffers_alloc", num),
    ("pg_stat_bgwriter_buffers_backend_total", "Buffers written by backends themselves (before PG 17).",
     "buffers_backend", num),
    ("pg_stat_bgwriter_buffers_backend_fsync_total", "Backends that had to fsync themselves (before PG 17).",
     "buffers_backend_fsync", num),
)


class BgwriterCollector(PgCollector):
    name = "bgwriter"

    async def collect(self, ctx: PgContext, out: MetricSet) -> None:
        row = (await fetch(ctx, "pg_stat_bgwriter"))[0]
        for metric, doc, column, convert in _COUNTERS:
            value = convert(row[column])
            if value is not None:
                out.counter(metric, doc, value)
