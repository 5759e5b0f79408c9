-- Role of this server and, on a standby, how far replay is behind (0 when everything received is replayed).
SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,
       CASE WHEN NOT pg_catalog.pg_is_in_recovery() THEN NULL
            WHEN pg_catalog.pg_last_wal_receive_lsn() = pg_catalog.pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_catalog.pg_last_xact_replay_timestamp())
       END AS replay_lag_seconds
