-- PG 14 added the session counters.
SELECT s.datname, s.numbackends, s.xact_commit, s.xact_rollback, s.blks_read, s.blks_hit,
       s.tup_returned, s.tup_fetched, s.tup_inserted, s.tup_updated, s.tup_deleted,
       s.conflicts, s.temp_files, s.temp_bytes, s.deadlocks, s.blk_read_time, s.blk_write_time,
       s.sessions, s.sessions_abandoned, s.sessions_fatal, s.sessions_killed,
       s.session_time, s.active_time, s.idle_in_transaction_time,
       s.blks_hit::float8 / NULLIF(s.blks_hit + s.blks_read, 0) AS cache_hit_ratio,
       pg_catalog.age(d.datfrozenxid) AS frozen_xid_age,
       pg_catalog.mxid_age(d.datminmxid) AS min_mxid_age
FROM pg_catalog.pg_stat_database AS s
JOIN pg_catalog.pg_database AS d ON d.oid = s.datid
WHERE s.datname IS NOT NULL
