-- PG 17 split pg_stat_checkpointer out of pg_stat_bgwriter; backend writes moved to pg_stat_io.
SELECT c.num_timed, c.num_requested, c.write_time, c.sync_time, c.buffers_written,
       b.buffers_clean, b.maxwritten_clean, b.buffers_alloc,
       NULL::bigint AS buffers_backend, NULL::bigint AS buffers_backend_fsync
FROM pg_catalog.pg_stat_checkpointer AS c, pg_catalog.pg_stat_bgwriter AS b
