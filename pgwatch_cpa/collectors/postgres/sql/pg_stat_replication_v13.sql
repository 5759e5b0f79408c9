-- One row per connected replica (on a primary or a cascading standby).
SELECT coalesce(r.application_name, '') AS application_name,
       coalesce(pg_catalog.host(r.client_addr), 'local') AS client_addr,
       coalesce(r.state, '') AS state,
       extract(epoch FROM r.write_lag) AS write_lag,
       extract(epoch FROM r.flush_lag) AS flush_lag,
       extract(epoch FROM r.replay_lag) AS replay_lag,
       pg_catalog.pg_wal_lsn_diff(
           CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn()
                ELSE pg_catalog.pg_current_wal_lsn() END,
           r.replay_lsn) AS lag_bytes
FROM pg_catalog.pg_stat_replication AS r
