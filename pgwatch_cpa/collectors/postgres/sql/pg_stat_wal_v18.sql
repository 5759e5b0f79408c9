-- PG 18 moved WAL write/sync counts and times from pg_stat_wal to pg_stat_io (object 'wal').
SELECT w.wal_records, w.wal_fpi, w.wal_bytes, w.wal_buffers_full,
       io.writes AS wal_write, io.fsyncs AS wal_sync, io.write_time AS wal_write_time, io.fsync_time AS wal_sync_time
FROM pg_catalog.pg_stat_wal AS w,
     (SELECT sum(i.writes)::bigint AS writes, sum(i.fsyncs)::bigint AS fsyncs,
             sum(i.write_time) AS write_time, sum(i.fsync_time) AS fsync_time
      FROM pg_catalog.pg_stat_io AS i WHERE i.object = 'wal') AS io
