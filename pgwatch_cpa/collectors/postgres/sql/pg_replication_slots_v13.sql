-- WAL a slot keeps from being removed: the disk-full risk of an abandoned slot.
SELECT s.slot_name, s.slot_type, s.active,
       pg_catalog.pg_wal_lsn_diff(
           CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn()
                ELSE pg_catalog.pg_current_wal_lsn() END,
           s.restart_lsn) AS retained_bytes
FROM pg_catalog.pg_replication_slots AS s
