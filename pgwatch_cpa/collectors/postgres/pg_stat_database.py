"""Per-database counters from pg_stat_database and transaction-id ages from pg_database."""

from __future__ import annotations

from typing import Any

from pgwatch_cpa.collectors.base import PgContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.postgres.common import PgCollector, exportable, fetch, ms, num

_COUNTERS: tuple[tuple[str, str, str, Any], ...] = (
    ("xact_commit_total", "Transactions committed.", "xact_commit", num),
    ("xact_rollback_total", "Transactions rolled back.", "xact_rollback", num),
    ("blks_read_total", "Blocks read from disk (or the OS cache).", "blks_read", num),
    ("blks_hit_total", "Blocks found in shared buffers.", "blks_hit", num),
    ("tup_returned_total", "Rows returned by sequential scans and index entries read.", "tup_returned", num),
    ("tup_fetched_total", "Rows fetched by index scans.", "tup_fetched", num),
    ("tup_inserted_total", "Rows inserted.", "tup_inserted", num),
    ("tup_updated_total", "Rows updated.", "tup_updated", num),
    ("tup_deleted_total", "Rows deleted.", "tup_deleted", num),
    ("conflicts_total", "Queries cancelled by recovery conflicts (standby).", "conflicts", num),
    ("temp_files_total", "Temporary files created.", "temp_files", num),
    ("temp_bytes_total", "Bytes written to temporary files.", "temp_bytes", num),
    ("deadlocks_total", "Deadlocks detected.", "deadlocks", num),
    ("blk_read_time_seconds_total", "Time reading blocks (needs track_io_timing).", "blk_read_time", ms),
    ("blk_write_time_seconds_total", "Time writing blocks (needs track_io_timing).", "blk_write_time", ms),
    ("sessions_total", "Sessions established (PG 14+).", "sessions", num),
    ("sessions_abandoned_total", "Sessions ended by the client disconnecting (PG 14+).", "sessions_abandoned",
     num),
    ("sessions_fatal_total", "Sessions ended by a fatal error (PG 14+).", "sessions_fatal", num),
    ("sessions_killed_total", "Sessions terminated by an operator (PG 14+).", "sessions_killed", num),
    ("session_time_seconds_total", "Time spent by sessions (PG 14+).", "session_time", ms),
    ("active_time_seconds_total", "Time spent executing statements (PG 14+).", "active_time", ms),
    ("idle_in_transaction_time_seconds_total", "Time spent idle in a transaction (PG 14+).",
     "idle_in_transaction_time", ms),
)


class DatabaseCollector(PgCollector):
    name = "database"

    async def collect(self, ctx: PgContext, out: MetricSet) -> None:
        for r in await fetch(ctx, "pg_stat_database"):
            if not exportable(ctx, "database name", r["datname"]):
                continue
            labels = {"datname": r["datname"]}
            out.gauge("pg_stat_database_numbackends", "Backends connected to the database.", r["numbackends"],
                      labels)
            for suffix, doc, column, convert in _COUNTERS:
                value = convert(r[column])
                if value is not None:
                    out.counter("pg_stat_database_" + suffix, doc, value, labels)
            if r["cache_hit_ratio"] is not None:  # NULL for a database never read: no division by zero
                out.gauge("pg_stat_database_cache_hit_ratio", "blks_hit / (blks_hit + blks_read).",
                          r["cache_hit_ratio"], labels)
            out.gauge("pg_database_frozen_xid_age",
                      "age(datfrozenxid): transactions until wraparound protection at 2^31 minus this.",
                      r["frozen_xid_age"], labels)
            out.gauge("pg_database_min_mxid_age", "mxid_age(datminmxid): multixact age of the database.",
                      r["min_mxid_age"], labels)
