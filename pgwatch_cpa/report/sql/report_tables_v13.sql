-- Every user table and materialised view of the current database: scans, rows, maintenance ages
-- (pg_stat_user_tables; idx_scan is NULL for a table without index), what autovacuum decides on (reltuples,
-- reloptions) and age(relfrozenxid) for the wraparound advice. Catalog and statistics only, so no lock: the
-- size is relpages x block_size, unknown (NULL) until the first VACUUM or ANALYZE.
SELECT c.oid::bigint AS table_oid, n.nspname AS schema, c.relname AS table,
       s.seq_scan, s.seq_tup_read, s.idx_scan, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
       extract(epoch FROM now() - s.last_vacuum)::float8      AS last_vacuum_age,
       extract(epoch FROM now() - s.last_autovacuum)::float8  AS last_autovacuum_age,
       extract(epoch FROM now() - s.last_analyze)::float8     AS last_analyze_age,
       extract(epoch FROM now() - s.last_autoanalyze)::float8 AS last_autoanalyze_age,
       c.reltuples::float8 AS reltuples,
       CASE WHEN c.relpages > 0
            THEN c.relpages::float8 * pg_catalog.current_setting('block_size')::float8 END AS table_bytes,
       c.reloptions, pg_catalog.age(c.relfrozenxid) AS frozen_xid_age
FROM pg_catalog.pg_stat_user_tables AS s
JOIN pg_catalog.pg_class AS c ON c.oid = s.relid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't'
ORDER BY c.oid
