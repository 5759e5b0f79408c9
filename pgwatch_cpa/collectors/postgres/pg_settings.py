"""The server settings the performance guide tunes, as pg_settings_* gauges in base units."""

from __future__ import annotations

from pgwatch_cpa.collectors.base import PgContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.postgres.common import PgCollector, fetch, setting_metric

# max_connections and the reserved slots are exported by the activity collector (it needs them for the
# utilisation ratio); listing them here too would duplicate those series. statement_timeout and lock_timeout
# are left out: pg_settings shows our own session's values (set by the poller), not the server's.
SETTINGS = (
    "shared_buffers", "work_mem", "maintenance_work_mem", "effective_cache_size", "random_page_cost",
    "seq_page_cost", "effective_io_concurrency", "wal_buffers", "max_wal_size", "min_wal_size",
    "checkpoint_timeout", "checkpoint_completion_target", "default_statistics_target", "max_worker_processes",
    "max_parallel_workers", "max_parallel_workers_per_gather", "max_parallel_maintenance_workers",
    "autovacuum", "autovacuum_max_workers", "autovacuum_naptime", "autovacuum_vacuum_scale_factor",
    "autovacuum_analyze_scale_factor", "autovacuum_vacuum_cost_limit",
    "idle_in_transaction_session_timeout", "track_io_timing", "log_min_duration_statement", "temp_file_limit",
    "jit", "pg_stat_statements.max",
)


class SettingsCollector(PgCollector):
    name = "settings"
    default_interval = 60.0

    async def collect(self, ctx: PgContext, out: MetricSet) -> None:
        for r in await fetch(ctx, "pg_settings", {"names": list(SETTINGS)}):
            converted = setting_metric(r["name"], r["setting"], r["unit"], r["vartype"])
            if converted is not None:
                metric, value = converted
                out.gauge(metric, f"Server setting {r['name']} (base units).", value)
