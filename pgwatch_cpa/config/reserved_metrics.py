"""Metric names a custom query may not take: those of the built-in PostgreSQL collectors and the daemon's own.

Two families of one name would be merged into one at /metrics, with one HELP, one TYPE and mixed label sets:
a custom query that reuses a name is refused when the config loads. A built-in collector's names conflict only
on targets where that collector is enabled, so a postgres_exporter file that overlaps one (``pg_stat_user_tables``)
loads once that collector is disabled (``collectors: {tables: {enabled: false}}``).

The names are family names (a counter's without ``_total``). tests/integration/test_custom_queries.py checks
that every family the built-in collectors export is listed here, so a new built-in metric cannot slip past.
"""

from __future__ import annotations

# Names under these prefixes belong to the daemon (pgwatch_), the Redis collectors and the application's
# published statistics, on every target.
RESERVED_PREFIXES = ("pgwatch_", "redis_", "cpa_cache_", "cpa_redis_pool_", "cpa_pg_pool_", "cpa_request_",
                     "cpa_db_query_")
ALWAYS = frozenset({"pg_up"})
# Collector name -> a prefix under which it may export any name (one per server setting).
PREFIXES = {"settings": "pg_settings_"}


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


BUILTIN_FAMILIES: dict[str, frozenset[str]] = {
    "activity": _names("""
        pg_connections_utilization_ratio pg_settings_max_connections pg_settings_reserved_connections
        pg_settings_superuser_reserved_connections pg_stat_activity_active_wait_event_type_connections
        pg_stat_activity_application_connections pg_stat_activity_blocked_backends pg_stat_activity_connections
        pg_stat_activity_idle_in_transaction_seconds pg_stat_activity_idle_in_transaction_threshold_seconds
        pg_stat_activity_long_running_queries pg_stat_activity_long_running_threshold_seconds
        pg_stat_activity_oldest_query_age_seconds pg_stat_activity_oldest_xact_age_seconds"""),
    "bgwriter": _names("""
        pg_stat_bgwriter_buffers_alloc pg_stat_bgwriter_buffers_backend pg_stat_bgwriter_buffers_backend_fsync
        pg_stat_bgwriter_buffers_clean pg_stat_bgwriter_maxwritten_clean pg_stat_checkpointer_buffers_written
        pg_stat_checkpointer_num_requested pg_stat_checkpointer_num_timed pg_stat_checkpointer_sync_time_seconds
        pg_stat_checkpointer_write_time_seconds"""),
    "database": _names("""
        pg_database_frozen_xid_age pg_database_min_mxid_age pg_stat_database_active_time_seconds
        pg_stat_database_blk_read_time_seconds pg_stat_database_blk_write_time_seconds pg_stat_database_blks_hit
        pg_stat_database_blks_read pg_stat_database_cache_hit_ratio pg_stat_database_conflicts
        pg_stat_database_deadlocks pg_stat_database_idle_in_transaction_time_seconds pg_stat_database_numbackends
        pg_stat_database_session_time_seconds pg_stat_database_sessions pg_stat_database_sessions_abandoned
        pg_stat_database_sessions_fatal pg_stat_database_sessions_killed pg_stat_database_temp_bytes
        pg_stat_database_temp_files pg_stat_database_tup_deleted pg_stat_database_tup_fetched
        pg_stat_database_tup_inserted pg_stat_database_tup_returned pg_stat_database_tup_updated
        pg_stat_database_xact_commit pg_stat_database_xact_rollback"""),
    "database_size": _names("pg_database_size_bytes"),
    "indexes": _names("""
        pg_indexes pg_indexes_idx_scan pg_indexes_invalid pg_indexes_unused pg_indexes_unused_bytes
        pg_stat_user_indexes_idx_scan pg_stat_user_indexes_idx_tup_fetch pg_stat_user_indexes_idx_tup_read
        pg_stat_user_indexes_invalid pg_stat_user_indexes_size_bytes pg_stat_user_indexes_unused_bytes"""),
    "locks": _names("pg_locks pg_locks_waiting"),
    "replication": _names("""
        pg_replication_is_replica pg_replication_lag_seconds pg_stat_replication_info
        pg_stat_replication_lag_seconds pg_stat_replication_lag_bytes pg_replication_slots_active
        pg_replication_slots_retained_wal_bytes"""),
    "settings": frozenset(),
    "statements": _names("""
        pg_stat_statements_block_read_seconds pg_stat_statements_block_write_seconds pg_stat_statements_calls
        pg_stat_statements_dealloc pg_stat_statements_info pg_stat_statements_max_seconds
        pg_stat_statements_mean_seconds pg_stat_statements_query_info pg_stat_statements_rows
        pg_stat_statements_seconds pg_stat_statements_shared_blks_hit pg_stat_statements_shared_blks_read
        pg_stat_statements_slow_statements pg_stat_statements_slow_threshold_seconds
        pg_stat_statements_statements pg_stat_statements_temp_blks_written pg_stat_statements_wal_bytes"""),
    "table_size": _names("pg_table_indexes_size_bytes pg_table_size_bytes pg_tables_indexes_size_bytes "
                         "pg_tables_size_bytes"),
    "tables": _names("""
        pg_stat_user_tables_analyze_count pg_stat_user_tables_autoanalyze_count
        pg_stat_user_tables_autovacuum_count pg_stat_user_tables_heap_blks_hit pg_stat_user_tables_heap_blks_read
        pg_stat_user_tables_idx_blks_hit pg_stat_user_tables_idx_blks_read pg_stat_user_tables_idx_scan
        pg_stat_user_tables_idx_tup_fetch pg_stat_user_tables_last_analyze_age_seconds
        pg_stat_user_tables_last_autoanalyze_age_seconds pg_stat_user_tables_last_autovacuum_age_seconds
        pg_stat_user_tables_last_vacuum_age_seconds pg_stat_user_tables_n_dead_tup pg_stat_user_tables_n_live_tup
        pg_stat_user_tables_n_tup_del pg_stat_user_tables_n_tup_hot_upd pg_stat_user_tables_n_tup_ins
        pg_stat_user_tables_n_tup_upd pg_stat_user_tables_seq_scan pg_stat_user_tables_seq_scan_heavy
        pg_stat_user_tables_seq_tup_read pg_stat_user_tables_vacuum_count pg_statio_user_tables_heap_cache_hit_ratio
        pg_statio_user_tables_idx_cache_hit_ratio pg_tables pg_tables_analyze_count pg_tables_autoanalyze_count
        pg_tables_autovacuum_count pg_tables_heap_blks_hit pg_tables_heap_blks_read pg_tables_heap_cache_hit_ratio
        pg_tables_idx_blks_hit pg_tables_idx_blks_read pg_tables_idx_cache_hit_ratio pg_tables_idx_scan
        pg_tables_idx_tup_fetch pg_tables_n_dead_tup pg_tables_n_live_tup pg_tables_n_tup_del
        pg_tables_n_tup_hot_upd pg_tables_n_tup_ins pg_tables_n_tup_upd pg_tables_seq_scan pg_tables_seq_scan_heavy
        pg_tables_seq_tup_read pg_tables_vacuum_count"""),
    "wal": _names("""
        pg_stat_wal_buffers_full pg_stat_wal_bytes pg_stat_wal_fpi pg_stat_wal_records pg_stat_wal_sync
        pg_stat_wal_sync_time_seconds pg_stat_wal_write pg_stat_wal_write_time_seconds"""),
}


def owner(name: str, disabled: frozenset[str] | set[str] = frozenset()) -> str | None:
    """Who already exports the metric family ``name`` on a target whose ``disabled`` built-in collectors are
    off: ``"collector NAME"``, ``"the daemon"``, or None if the name is free."""
    if name in ALWAYS or name.startswith(RESERVED_PREFIXES):
        return "the daemon"
    for collector, names in BUILTIN_FAMILIES.items():
        if collector in disabled:
            continue
        prefix = PREFIXES.get(collector)
        if name in names or (prefix is not None and name.startswith(prefix)):
            return f"collector {collector}"
    return None
