-- pg_stat_wal exists from PG 14.
SELECT w.wal_records, w.wal_fpi, w.wal_bytes, w.wal_buffers_full,
       w.wal_write, w.wal_sync, w.wal_write_time, w.wal_sync_time
FROM pg_catalog.pg_stat_wal AS w
