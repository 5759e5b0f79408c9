-- Before PG 17 the checkpointer's counters live in pg_stat_bgwriter; column names follow pg_stat_checkpointer.
SELECT b.checkpoints_timed AS num_timed, b.checkpoints_req AS num_requested,
       b.checkpoint_write_time AS write_time, b.checkpoint_sync_time AS sync_time,
       b.buffers_checkpoint AS buffers_written,
       b.buffers_clean, b.maxwritten_clean, b.buffers_alloc, b.buffers_backend, b.buffers_backend_fsync
FROM pg_catalog.pg_stat_bgwriter AS b
